/** RSA keys, JWT signing and a JWKS served over plain http, all made in the test. */

import { createHmac, generateKeyPairSync, randomUUID, sign as rsaSign } from 'node:crypto';
import http from 'node:http';

const b64url = (/** @type {Buffer|string} */ v) => Buffer.from(v).toString('base64url');

export class SigningKey {
  constructor(kid = randomUUID()) {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.kid = kid;
    this.publicKey = publicKey;
    this.privateKey = privateKey;
  }

  get jwk() {
    return { ...this.publicKey.export({ format: 'jwk' }), kid: this.kid, alg: 'RS256', use: 'sig' };
  }
}

/** A signed JWT; ``alg`` 'none' and 'HS256' (keyed with the RSA public key) are for attacks. */
export function signJwt(claims, key, { alg = 'RS256', kid = key?.kid, header = {} } = {}) {
  const head = { alg, typ: 'JWT', ...(kid == null ? {} : { kid }), ...header };
  const input = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
  let sig = '';
  if (alg === 'RS256') sig = b64url(rsaSign('sha256', Buffer.from(input), key.privateKey));
  else if (alg === 'HS256') {
    const secret = key.publicKey.export({ format: 'pem', type: 'spki' });
    sig = createHmac('sha256', secret).update(input).digest('base64url');
  }
  return `${input}.${sig}`;
}

/** Claims of a Cognito ID token. */
export function idClaims({ issuer, aud, sub = 'user-1', ttl = 3600, ...extra }) {
  const now = Math.floor(Date.now() / 1000);
  return {
    sub,
    aud,
    iss: issuer,
    token_use: 'id',
    auth_time: now,
    iat: now,
    exp: now + ttl,
    'cognito:username': sub,
    ...extra,
  };
}

/** Claims of a Cognito access token (client_id, no aud). */
export function accessClaims({ issuer, clientId, sub = 'user-1' }) {
  const now = Math.floor(Date.now() / 1000);
  return { sub, client_id: clientId, iss: issuer, token_use: 'access', scope: 'aws.cognito.signin.user.admin', iat: now, exp: now + 3600 };
}

/** An http server for /<pool>/.well-known/jwks.json; counts fetches; keys can change. */
export async function startJwksServer(keys) {
  const state = { keys: [...keys], fetches: 0 };
  const server = http.createServer((req, res) => {
    if (req.url?.endsWith('/.well-known/jwks.json')) {
      state.fetches += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  const issuer = `http://127.0.0.1:${port}/us-east-1_TestPool`;
  return {
    state,
    issuer,
    jwksUrl: `${issuer}/.well-known/jwks.json`,
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}
