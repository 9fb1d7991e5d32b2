// ID-token verification with aws-jwt-verify against a JWKS served over http in the test.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { bearerToken, IdTokenVerifier, JwksFetcher, TokenError } from '../src/jwt.mjs';
import { accessClaims, idClaims, SigningKey, signJwt, startJwksServer } from '../testing/tokens.mjs';

const CLIENT = 'client-abc';

describe('IdTokenVerifier', () => {
  const key = new SigningKey();
  let jwks;
  /** @type {IdTokenVerifier} */
  let verifier;

  before(async () => {
    jwks = await startJwksServer([key]);
    verifier = new IdTokenVerifier({ issuer: jwks.issuer, clientId: CLIENT, jwksUrl: jwks.jwksUrl, leewayS: 60 });
  });
  after(() => jwks.close());

  const rejects = async (token, reason) => {
    await assert.rejects(verifier.verify(token), (err) => err instanceof TokenError && err.reason === reason);
  };

  test('a valid ID token gives its claims', async () => {
    const claims = await verifier.verify(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, sub: 'alice' }), key));
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.token_use, 'id');
  });

  test('expired beyond the leeway', () =>
    rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, ttl: -61 - 5 }), key), 'token expired'));

  test('expired within the 60 s leeway is still accepted', async () => {
    const claims = await verifier.verify(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, ttl: -30 }), key));
    assert.equal(claims.sub, 'user-1');
  });

  test('not yet valid', () =>
    rejects(
      signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, nbf: Math.floor(Date.now() / 1000) + 600 }), key),
      'token not yet valid',
    ));

  test('another app client (audience)', () =>
    rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: 'other-client' }), key), 'wrong audience'));

  test('another issuer', () =>
    rejects(signJwt(idClaims({ issuer: 'https://cognito-idp.us-east-1.amazonaws.com/x', aud: CLIENT }), key), 'wrong issuer'));

  test('an access token is not an ID token', () =>
    rejects(signJwt(accessClaims({ issuer: jwks.issuer, clientId: CLIENT }), key), 'not an ID token'));

  test('a token without token_use', () => {
    const claims = idClaims({ issuer: jwks.issuer, aud: CLIENT });
    delete claims.token_use;
    return rejects(signJwt(claims, key), 'missing required claim');
  });

  test('a forged signature (another key, same kid)', () => {
    const forger = new SigningKey(key.kid);
    return rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), forger), 'invalid signature');
  });

  test('a tampered payload', () => {
    const token = signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, sub: 'alice' }), key);
    const [h, , s] = token.split('.');
    const evil = Buffer.from(JSON.stringify(idClaims({ issuer: jwks.issuer, aud: CLIENT, sub: 'root' }))).toString('base64url');
    return rejects(`${h}.${evil}.${s}`, 'invalid signature');
  });

  test('alg none', () =>
    rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), key, { alg: 'none' }), 'unsupported algorithm none'));

  test('HS256 keyed with the public key (key confusion)', () =>
    rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), key, { alg: 'HS256' }), 'unsupported algorithm HS256'));

  test('no key id', () =>
    rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), key, { kid: null }), 'token has no key id'));

  test('garbage and missing tokens', async () => {
    await rejects('garbage', 'malformed token');
    await rejects('a.b.c', 'malformed token');
    await rejects(null, 'missing token');
    await rejects('', 'missing token');
  });

  test('an unknown kid refetches the JWKS at most once per interval', async () => {
    const stranger = new SigningKey();
    const before = jwks.state.fetches;
    await rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), stranger), 'unknown signing key');
    const afterFirst = jwks.state.fetches;
    assert.equal(afterFirst, before + 1, 'one refetch for the unknown kid');
    for (let i = 0; i < 5; i += 1) {
      await rejects(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), new SigningKey()), 'unknown signing key');
    }
    assert.equal(jwks.state.fetches, afterFirst, 'no refetch within the interval');
  });
});

test('a rotated key is picked up by refetching on its kid', async () => {
  const oldKey = new SigningKey();
  const newKey = new SigningKey();
  const jwks = await startJwksServer([oldKey]);
  try {
    const verifier = new IdTokenVerifier({ issuer: jwks.issuer, clientId: CLIENT, jwksUrl: jwks.jwksUrl });
    await verifier.verify(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), oldKey));
    jwks.state.keys = [oldKey, newKey];
    const claims = await verifier.verify(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, sub: 'bob' }), newKey));
    assert.equal(claims.sub, 'bob');
    assert.equal(jwks.state.fetches, 2);
  } finally {
    await jwks.close();
  }
});

test('an unreachable JWKS is "signing keys unavailable"', async () => {
  const key = new SigningKey();
  const jwks = await startJwksServer([key]);
  await jwks.close();
  const verifier = new IdTokenVerifier({ issuer: jwks.issuer, clientId: CLIENT, jwksUrl: jwks.jwksUrl });
  await assert.rejects(
    verifier.verify(signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), key)),
    (err) => err instanceof TokenError && err.reason === 'signing keys unavailable',
  );
});

test('leeway is capped at 60 s', () => {
  assert.throws(() => new IdTokenVerifier({ issuer: 'https://x', clientId: 'c', jwksUrl: 'https://x/j', leewayS: 61 }), RangeError);
});

test('bearerToken reads the Authorization header', () => {
  assert.equal(bearerToken('Bearer abc'), 'abc');
  assert.equal(bearerToken('bearer   abc  '), 'abc');
  assert.equal(bearerToken('Basic abc'), null);
  assert.equal(bearerToken('Bearer'), null);
  assert.equal(bearerToken(undefined), null);
});

describe('JwksFetcher: one fetch path, retries with backoff, no lockout after a failure', () => {
  const body = JSON.stringify({ keys: [] });
  /** A fetch that fails its first ``failures`` calls, then answers 200. */
  const flaky = (failures) => {
    const calls = [];
    const fetch = async (uri, init) => {
      calls.push({ uri, init });
      if (calls.length <= failures) throw new TypeError('fetch failed');
      return new Response(body, { status: 200 });
    };
    return { fetch, calls };
  };
  const fakeTime = () => {
    const t = { now: 0, slept: [] };
    return { ...t, clock: () => t.now, sleep: async (ms) => { t.slept.push(ms); t.now += ms; }, t };
  };

  test('a failed fetch is retried with exponential backoff within the budget', async () => {
    const { fetch, calls } = flaky(2);
    const time = fakeTime();
    const fetcher = new JwksFetcher({ fetch, now: time.clock, sleep: time.sleep, budgetMs: 5000 });
    const got = await fetcher.fetch('http://127.0.0.1:9/jwks.json');
    assert.equal(new TextDecoder().decode(got), body);
    assert.equal(calls.length, 3);
    assert.deepEqual(time.t.slept, [100, 200]);
  });

  test('retries stop at the budget', async () => {
    const { fetch, calls } = flaky(1000);
    const time = fakeTime();
    const fetcher = new JwksFetcher({ fetch, now: time.clock, sleep: time.sleep, budgetMs: 1000 });
    await assert.rejects(fetcher.fetch('https://example.invalid/jwks.json'));
    assert.ok(time.t.slept.reduce((a, b) => a + b, 0) <= 1000);
    assert.ok(calls.length >= 3);
  });

  test('a failed first fetch does not lock users out once the endpoint is back', async () => {
    let down = true;
    const key = new SigningKey();
    const calls = [];
    const fetch = async (uri) => {
      calls.push(uri);
      if (down) throw new TypeError('fetch failed');
      return new Response(JSON.stringify({ keys: [key.jwk] }), { status: 200 });
    };
    const time = fakeTime();
    const fetcher = new JwksFetcher({ fetch, now: time.clock, sleep: time.sleep, budgetMs: 300, failureCooldownMs: 1000 });
    const issuer = 'https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Lockout';
    const verifier = new IdTokenVerifier({ issuer, clientId: CLIENT, jwksUrl: `${issuer}/.well-known/jwks.json`, fetcher });
    const token = signJwt(idClaims({ issuer, aud: CLIENT, sub: 'carol' }), key);
    await assert.rejects(verifier.verify(token), (err) => err.reason === 'signing keys unavailable');
    const failedCalls = calls.length;
    // Within the cooldown: refused at once, the endpoint is not hammered.
    await assert.rejects(verifier.verify(token), (err) => err.reason === 'signing keys unavailable');
    assert.equal(calls.length, failedCalls);
    down = false;
    time.t.now += 1000;
    assert.equal((await verifier.verify(token)).sub, 'carol'); // a second later, not 60 s
  });

  test('http and https URLs take the same path (the runtime fetch)', async () => {
    const { fetch, calls } = flaky(0);
    const fetcher = new JwksFetcher({ fetch });
    await fetcher.fetch('http://127.0.0.1:9/jwks.json');
    await fetcher.fetch('https://cognito-idp.us-east-1.amazonaws.com/p/.well-known/jwks.json');
    assert.deepEqual(calls.map((c) => c.uri.split(':')[0]), ['http', 'https']);
  });
});
