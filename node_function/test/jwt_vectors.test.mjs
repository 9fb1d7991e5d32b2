// The shared JWT vectors (tests/vectors/jwt.json), which the Python suite runs too: both
// verifiers give the same verdict and reason for every header and claim case.
import assert from 'node:assert/strict';
import { sign as rsaSign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { IdTokenVerifier, TokenError } from '../src/jwt.mjs';
import { SigningKey } from '../testing/tokens.mjs';

const VECTORS = JSON.parse(readFileSync(new URL('../../tests/vectors/jwt.json', import.meta.url), 'utf8'));
const KEY = new SigningKey();
const STRANGER = new SigningKey(KEY.kid);
const b64url = (/** @type {string|Buffer} */ v) => Buffer.from(v).toString('base64url');

/** @param {Record<string, any>} base @param {Record<string, any>} [changes] @param {string[]} [omit] */
function merge(base, changes = {}, omit = []) {
  const out = { ...base, ...changes };
  for (const name of omit) delete out[name];
  return out;
}

/** @param {any} c @param {number} now */
function buildToken(c, now) {
  if ('token' in c) return c.token;
  const header = merge({ alg: 'RS256', typ: 'JWT', kid: KEY.kid }, c.header, c.headerOmit);
  let claims = {
    sub: 'user-1',
    aud: VECTORS.clientId,
    iss: VECTORS.issuer,
    token_use: 'id',
    'cognito:username': 'user-1',
    iat: now,
    auth_time: now,
    exp: now + 3600,
  };
  for (const [name, offset] of Object.entries(c.times ?? {})) claims[name] = now + offset;
  claims = merge(claims, c.claims, c.claimsOmit);
  if (c.padClaimChars) claims.pad = 'x'.repeat(c.padClaimChars);
  const head = c.headerSegment ?? b64url(c.headerJson ?? JSON.stringify(header));
  const body = b64url(c.payloadJson ?? JSON.stringify(claims));
  const signer = c.signWith === 'stranger' ? STRANGER : KEY;
  return `${head}.${body}.${b64url(rsaSign('sha256', Buffer.from(`${head}.${body}`), signer.privateKey))}`;
}

/** @param {any} c */
function verifierFor(c) {
  const jwk = merge(KEY.jwk, c.key, c.keyOmit);
  const fetcher = { fetch: async () => new TextEncoder().encode(JSON.stringify({ keys: [jwk] })).buffer };
  return new IdTokenVerifier({
    issuer: VECTORS.issuer,
    clientId: VECTORS.clientId,
    jwksUrl: 'https://jwks.invalid/.well-known/jwks.json',
    leewayS: VECTORS.leewayS,
    fetcher,
  });
}

describe('jwt.json', () => {
  for (const c of VECTORS.cases) {
    test(c.name, async () => {
      const token = buildToken(c, Math.floor(Date.now() / 1000));
      const verifier = verifierFor(c);
      if (c.ok) {
        assert.equal((await verifier.verify(token)).sub, 'user-1');
      } else {
        await assert.rejects(verifier.verify(token), (err) => {
          assert.ok(err instanceof TokenError, `not a TokenError: ${err}`);
          assert.equal(err.reason, c.reason);
          return true;
        });
      }
    });
  }
});
