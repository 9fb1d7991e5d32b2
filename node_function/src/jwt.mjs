/**
 * Cognito ID-token verification (docs/security.md), the Node twin of chalicelib/jwt_verify.py,
 * built on aws-jwt-verify.
 *
 * Checks, in the same order as the Python side: RS256 only (so "none" and HS256
 * signed with the public key are refused before any key is used), a key id, the
 * signing key from the pool's JWKS, the signature, exp/nbf with at most 60 s of
 * leeway, iss = the pool issuer, the claims every Cognito ID token has,
 * token_use = "id", and aud = the app client. Every rejection is a TokenError with
 * a short reason that is safe to log and to show.
 *
 * Why not CognitoJwtVerifier: it derives the issuer from the pool id
 * (https://cognito-idp.<region>.amazonaws.com/<pool>) and cannot take another
 * one, while the local cloud's issuer is http://127.0.0.1:PORT/<pool>. So the
 * generic JwtVerifier is used with an explicit issuer and JWKS URL, and the
 * Cognito-specific claims are checked in customJwtCheck.
 *
 * JWKS caching: aws-jwt-verify's SimpleJwksCache keeps the JWKS in memory and
 * refetches it when a token names an unknown kid; after a refetch that still does
 * not find the kid, its penalty box refuses further refetches for ``waitSeconds``
 * (set to JWKS_REFETCH_INTERVAL_S, 60 s), so forged kids cannot make us hammer the
 * JWKS endpoint. Its own fetcher speaks https only (node:https), which is right on
 * AWS; for the local cloud's plain-http JWKS URL a small node:http fetcher is
 * plugged into the same cache (same caching and penalty rules).
 */

import http from 'node:http';

import { JwtVerifier } from 'aws-jwt-verify';
import {
  FetchError,
  JwkInvalidKtyError,
  JwkInvalidUseError,
  JwksNotAvailableInCacheError,
  JwksValidationError,
  JwkValidationError,
  JwtExpiredError,
  JwtInvalidIssuerError,
  JwtInvalidSignatureAlgorithmError,
  JwtInvalidSignatureError,
  JwtNotBeforeError,
  JwtParseError,
  JwtWithoutValidKidError,
  KidNotFoundInJwksError,
  NonRetryableFetchError,
  WaitPeriodNotYetEndedJwkError,
} from 'aws-jwt-verify/error';
import { SimpleFetcher } from 'aws-jwt-verify/https';
import { SimpleJwksCache, SimplePenaltyBox } from 'aws-jwt-verify/jwk';

export const ALGORITHM = 'RS256';
const REQUIRED_CLAIMS = ['exp', 'iat', 'iss', 'sub', 'token_use'];
const MAX_JWKS_BYTES = 1024 * 1024;

/** The token is not acceptable; ``reason`` says why in a few words. */
export class TokenError extends Error {
  constructor(/** @type {string} */ reason) {
    super(reason);
    this.name = 'TokenError';
    this.reason = reason;
  }
}

/**
 * GET a JWKS over plain http (the local cloud); https goes to aws-jwt-verify's fetcher.
 * @param {string} uri @param {number} timeoutMs @returns {Promise<ArrayBuffer>}
 */
function httpGet(uri, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(uri, { timeout: timeoutMs, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new NonRetryableFetchError(uri, `Status code is ${res.statusCode}, expected 200`));
        return;
      }
      /** @type {Buffer[]} */
      const chunks = [];
      let size = 0;
      res.on('data', (/** @type {Buffer} */ chunk) => {
        size += chunk.length;
        if (size > MAX_JWKS_BYTES) {
          req.destroy(new FetchError(uri, 'JWKS response too large'));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        resolve(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      });
      res.on('error', (err) => reject(new FetchError(uri, err.message)));
    });
    req.on('timeout', () => req.destroy(new FetchError(uri, `timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => reject(err instanceof FetchError ? err : new FetchError(uri, err.message)));
  });
}

/** aws-jwt-verify Fetcher for https (its own) and http (ours) JWKS URLs. */
export class JwksFetcher {
  constructor(timeoutMs = 5000) {
    this._timeoutMs = timeoutMs;
    this._https = new SimpleFetcher();
  }

  /** @param {string} uri */
  async fetch(uri) {
    if (new URL(uri).protocol === 'http:') return httpGet(uri, this._timeoutMs);
    return this._https.fetch(uri);
  }
}

/** @param {string} token */
function unverifiedHeader(token) {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[0]) throw new TokenError('malformed token');
  let header;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  } catch {
    throw new TokenError('malformed token');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new TokenError('malformed token');
  return header;
}

/** @type {Array<[Function, string]>} */
const LIBRARY_REASONS = [
  [JwtExpiredError, 'token expired'],
  [JwtNotBeforeError, 'token not yet valid'],
  [JwtInvalidIssuerError, 'wrong issuer'],
  [JwtInvalidSignatureError, 'invalid signature'],
  [JwtInvalidSignatureAlgorithmError, 'unsupported algorithm'],
  [JwtWithoutValidKidError, 'token has no key id'],
  [KidNotFoundInJwksError, 'unknown signing key'],
  [WaitPeriodNotYetEndedJwkError, 'unknown signing key'],
  [JwkInvalidUseError, 'unusable signing key'],
  [JwkInvalidKtyError, 'unusable signing key'],
  [FetchError, 'signing keys unavailable'],
  [JwksValidationError, 'signing keys unavailable'],
  [JwkValidationError, 'signing keys unavailable'],
  [JwksNotAvailableInCacheError, 'signing keys unavailable'],
  [JwtParseError, 'malformed token'],
];

/**
 * @typedef {object} VerifierOptions
 * @property {string} issuer
 * @property {string} clientId
 * @property {string} jwksUrl
 * @property {number} [leewayS] 0..60
 * @property {number} [refetchIntervalS] least seconds between JWKS refetches for unknown kids
 * @property {{fetch(uri: string): Promise<ArrayBuffer>}} [fetcher]
 */

export class IdTokenVerifier {
  /** @param {VerifierOptions} options */
  constructor({ issuer, clientId, jwksUrl, leewayS = 60, refetchIntervalS = 60, fetcher }) {
    if (!(leewayS >= 0 && leewayS <= 60)) throw new RangeError('leeway must be between 0 and 60 seconds');
    this._clientId = clientId;
    const jwksCache = new SimpleJwksCache({
      fetcher: fetcher ?? new JwksFetcher(),
      penaltyBox: new SimplePenaltyBox({ waitSeconds: refetchIntervalS }),
    });
    this._verifier = JwtVerifier.create(
      {
        issuer,
        jwksUri: jwksUrl,
        // Checked in customJwtCheck after token_use, so an access token (which has
        // client_id, not aud) is named for what it is.
        audience: null,
        graceSeconds: leewayS,
        customJwtCheck: ({ payload }) => this._checkCognitoClaims(payload),
      },
      { jwksCache },
    );
  }

  /**
   * The token's claims if it is a valid ID token of our pool and client.
   * @param {string|null|undefined} token
   * @returns {Promise<Record<string, any>>}
   */
  async verify(token) {
    if (!token || typeof token !== 'string') throw new TokenError('missing token');
    const header = unverifiedHeader(token);
    const alg = header.alg;
    if (alg !== ALGORITHM) {
      // Covers "none" and HS256 signed with the public key (key confusion).
      throw new TokenError(`unsupported algorithm ${String(alg).slice(0, 16)}`);
    }
    if (typeof header.kid !== 'string' || !header.kid) throw new TokenError('token has no key id');
    try {
      return /** @type {Record<string, any>} */ (await this._verifier.verify(token));
    } catch (err) {
      if (err instanceof TokenError) throw err;
      for (const [type, reason] of LIBRARY_REASONS) {
        if (err instanceof type) throw new TokenError(reason);
      }
      throw new TokenError('invalid token');
    }
  }

  /** @param {Record<string, any>} payload */
  _checkCognitoClaims(payload) {
    for (const claim of REQUIRED_CLAIMS) {
      if (payload[claim] === undefined || payload[claim] === null) throw new TokenError('missing required claim');
    }
    if (payload.token_use !== 'id') throw new TokenError('not an ID token');
    if (payload.aud !== this._clientId) throw new TokenError('wrong audience');
  }
}

/**
 * The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).
 * @param {string|undefined|null} headerValue
 */
export function bearerToken(headerValue) {
  if (!headerValue) return null;
  const trimmed = headerValue.trim();
  const space = trimmed.indexOf(' ');
  const scheme = space < 0 ? trimmed : trimmed.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') return null;
  const token = space < 0 ? '' : trimmed.slice(space + 1).trim();
  return token || null;
}

/** @param {import('./settings.mjs').Settings} settings */
export function verifierFromSettings(settings) {
  return new IdTokenVerifier({
    issuer: settings.jwtIssuer,
    clientId: settings.clientId,
    jwksUrl: settings.jwksUrl,
    leewayS: settings.jwtLeewayS,
    refetchIntervalS: settings.jwksRefetchIntervalS,
  });
}
