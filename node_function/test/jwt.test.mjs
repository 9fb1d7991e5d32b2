// ID-token verification with aws-jwt-verify against a JWKS served over http in the test.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { bearerToken, IdTokenVerifier, TokenError } from '../src/jwt.mjs';
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
