/**
 * Cognito ID-token verification (docs/security.md), the Node twin of chalicelib/jwt_verify.py,
 * built on aws-jwt-verify. Both give the same verdict and reason for every case of
 * tests/vectors/jwt.json.
 *
 * Checks, in the same order as the Python side: the token's size, its header's shape
 * (an object with alg RS256, so "none" and HS256 signed with the public key are refused
 * before any key is used, a string kid, no crit), the signing key from the pool's JWKS
 * (a key marked for encryption never verifies), the signature, exp/nbf as numbers within
 * at most 60 s of leeway, iss = the pool issuer, the claims every Cognito ID token has
 * (sub non-empty), iat not in the future, token_use = "id", and aud = the app client.
 * Every rejection is a TokenError with a short reason for the log; callers answer every
 * rejection the same way.
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
 * JWKS endpoint. The fetcher is ours (JwksFetcher): one path, the runtime's fetch, for
 * any URL; a failed fetch is retried with backoff within the request's fetch budget, and
 * is not remembered beyond a short cooldown, so an outage of the JWKS endpoint does not
 * lock users out once it is over.
 */

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
  WaitPeriodNotYetEndedJwkError,
} from 'aws-jwt-verify/error';
import { SimpleJwksCache, SimplePenaltyBox } from 'aws-jwt-verify/jwk';

import { LIMITS } from './protocol.mjs';

export const ALGORITHM = 'RS256';
/** Tokens longer than this are refused before any parsing (API Gateway caps a header at 10 KB). */
export const MAX_TOKEN_CHARS = LIMITS.maxTokenChars;
const REQUIRED_CLAIMS = ['exp', 'iat', 'iss', 'sub', 'token_use'];
const MAX_JWKS_BYTES = 1024 * 1024;

/** The token is not acceptable; ``reason`` says why in a few words (for logs only). */
export class TokenError extends Error {
  constructor(/** @type {string} */ reason) {
    super(reason);
    this.name = 'TokenError';
    this.reason = reason;
  }
}

/**
 * aws-jwt-verify Fetcher for the JWKS: the runtime's fetch, for http and https alike, with
 * retries and exponential backoff while the fetch budget lasts, and a short cooldown after
 * a fetch that failed (requests meanwhile fail fast instead of each waiting the budget).
 */
export class JwksFetcher {
  /**
   * @param {{timeoutMs?: number, budgetMs?: number, retryBaseMs?: number, failureCooldownMs?: number,
   *   fetch?: typeof globalThis.fetch, now?: () => number, sleep?: (ms: number) => Promise<void>}} [options]
   */
  constructor({ timeoutMs = 2000, budgetMs = 5000, retryBaseMs = 100, failureCooldownMs = 1000, fetch, now, sleep } = {}) {
    this._timeoutMs = timeoutMs;
    this._budgetMs = budgetMs;
    this._retryBaseMs = retryBaseMs;
    this._cooldownMs = failureCooldownMs;
    this._fetch = fetch ?? globalThis.fetch;
    this._now = now ?? (() => Date.now());
    this._sleep = sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    /** @type {number|null} */
    this._failedAt = null;
    this.fetches = 0;
  }

  /** @param {string} uri @returns {Promise<ArrayBuffer>} */
  async fetch(uri) {
    if (this._failedAt !== null && this._now() - this._failedAt < this._cooldownMs) {
      throw new FetchError(uri, 'JWKS fetch failed moments ago');
    }
    const deadline = this._now() + this._budgetMs;
    let delay = this._retryBaseMs;
    for (;;) {
      try {
        const body = await this._once(uri, Math.max(50, Math.min(this._timeoutMs, deadline - this._now())));
        this._failedAt = null;
        return body;
      } catch (err) {
        if (deadline - this._now() <= delay) {
          this._failedAt = this._now();
          throw err instanceof FetchError ? err : new FetchError(uri, String(err?.message ?? err));
        }
        await this._sleep(delay);
        delay *= 2;
      }
    }
  }

  /** @param {string} uri @param {number} timeoutMs */
  async _once(uri, timeoutMs) {
    this.fetches += 1;
    const res = await this._fetch(uri, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new FetchError(uri, `Status code is ${res.status}, expected 200`);
    }
    const declared = Number(res.headers.get('content-length') ?? 0);
    if (declared > MAX_JWKS_BYTES) {
      await res.body?.cancel();
      throw new FetchError(uri, 'JWKS response too large');
    }
    const body = await res.arrayBuffer();
    if (body.byteLength > MAX_JWKS_BYTES) throw new FetchError(uri, 'JWKS response too large');
    return body;
  }
}

/** @param {string} token */
export function unverifiedHeader(token) {
  if (token.length > MAX_TOKEN_CHARS) throw new TokenError('token too large');
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
 * @property {() => number} [nowS] seconds since the epoch (tests)
 */

export class IdTokenVerifier {
  /** @param {VerifierOptions} options */
  constructor({ issuer, clientId, jwksUrl, leewayS = 60, refetchIntervalS = 60, fetcher, nowS }) {
    if (!(leewayS >= 0 && leewayS <= 60)) throw new RangeError('leeway must be between 0 and 60 seconds');
    this._clientId = clientId;
    this._leewayS = leewayS;
    this._nowS = nowS ?? (() => Date.now() / 1000);
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
    try {
      return await this._verify(token);
    } catch (err) {
      if (err instanceof TokenError) throw err;
      for (const [type, reason] of LIBRARY_REASONS) {
        if (err instanceof type) throw new TokenError(reason);
      }
      // Whatever a library throws on input we did not foresee is a rejection too.
      throw new TokenError('invalid token');
    }
  }

  /** @param {string|null|undefined} token */
  async _verify(token) {
    if (!token || typeof token !== 'string') throw new TokenError('missing token');
    const header = unverifiedHeader(token);
    const alg = header.alg;
    if (alg !== ALGORITHM) {
      // Covers "none" and HS256 signed with the public key (key confusion).
      throw new TokenError(typeof alg === 'string' ? `unsupported algorithm ${alg.slice(0, 16)}` : 'unsupported algorithm');
    }
    if (typeof header.kid !== 'string' || !header.kid) throw new TokenError('token has no key id');
    // RFC 7515 4.1.11: a recipient must refuse extensions it does not understand, and we
    // understand none.
    if ('crit' in header) throw new TokenError('unsupported critical header');
    return /** @type {Record<string, any>} */ (await this._verifier.verify(token));
  }

  /** @param {Record<string, any>} payload */
  _checkCognitoClaims(payload) {
    for (const claim of REQUIRED_CLAIMS) {
      if (payload[claim] === undefined || payload[claim] === null) throw new TokenError('missing required claim');
    }
    // Cognito never issues a token dated in the future.
    if (payload.iat - this._leewayS > this._nowS()) throw new TokenError('token issued in the future');
    if (typeof payload.sub !== 'string' || !payload.sub) throw new TokenError('missing required claim');
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
