/**
 * One typed settings object read from the environment: the settings schema of
 * protocol.json (names, defaults, ranges), which chalicelib/settings.py reads too; this
 * function reads the entries that name a ``node`` field. The user pool and app client
 * have no default: a function started without them fails at once, naming the missing
 * setting. Nothing else reads process.env, so tests build exactly the settings they need.
 */

import { SETTINGS } from './protocol.mjs';

export class SettingsError extends Error {}

const SCHEMA = Object.fromEntries(SETTINGS.map((e) => [e.env, e]));

/**
 * How frames leave the producer: "coalesce" (the default) is the ordered background
 * sender of docs/protocol.md; "per_token" is the baseline bench/ measures it against (one
 * delta frame per model token, delivered before the model is read on).
 */
export const SENDER_MODES = Object.freeze([...SCHEMA.SENDER_MODE.choices]);

/** @param {any} entry @param {string} v */
function parse(entry, v) {
  const name = entry.env;
  if (entry.type === 'str') return v;
  if (entry.type === 'choice') {
    if (!entry.choices.includes(v)) {
      throw new SettingsError(`${name} must be one of ${entry.choices.join(', ')}, got ${JSON.stringify(v)}`);
    }
    return v;
  }
  let n;
  if (entry.type === 'int') {
    if (!/^\s*[+-]?\d+\s*$/.test(v)) throw new SettingsError(`${name} must be an integer, got ${JSON.stringify(v)}`);
    n = Number.parseInt(v, 10);
  } else {
    n = Number(v);
    if (v.trim() === '' || Number.isNaN(n)) throw new SettingsError(`${name} must be a number, got ${JSON.stringify(v)}`);
  }
  if (!Number.isFinite(n) || n < entry.min || n > entry.max) {
    throw new SettingsError(`${name} must be between ${entry.min} and ${entry.max}, got ${n}`);
  }
  return n;
}

/** @param {Record<string, string|undefined>} env @param {any} entry */
function read(env, entry) {
  const v = env[entry.env];
  if (v === undefined || v === '') {
    if (entry.required) throw new SettingsError(`${entry.env} is required and not set`);
    return entry.default;
  }
  return parse(entry, v);
}

/**
 * @typedef {object} Limits
 * @property {number} maxInputChars
 * @property {number} maxTokensLimit
 * @property {number} defaultMaxTokens
 * @property {number} maxStreamsPerUser
 * @property {number} maxMessages
 * @property {number} maxFollowersPerStream
 * @property {number} maxFollowersPerUser
 */

/**
 * @typedef {object} Settings
 * @property {string} region
 * @property {string} streamsTable
 * @property {string} framesTable
 * @property {string} modelId
 * @property {string} userPoolId
 * @property {string} clientId
 * @property {string} jwtIssuer
 * @property {string} jwksUrl
 * @property {number} jwtLeewayS
 * @property {number} jwksRefetchIntervalS
 * @property {number} flushIntervalMs
 * @property {number} flushMaxChars
 * @property {string} senderMode
 * @property {number} heartbeatIntervalS
 * @property {number} streamTtlS
 * @property {number} modelFirstEventTimeoutS
 * @property {number} modelIdleTimeoutS
 * @property {number} modelThrottleRetries
 * @property {number} modelRetryBaseMs
 * @property {number} modelRetryMaxMs
 * @property {number} claimLeaseS
 * @property {Limits} limits
 */

/** @type {Readonly<Limits>} */
export const DEFAULT_LIMITS = Object.freeze(
  Object.fromEntries(SETTINGS.filter((e) => e.group === 'limits').map((e) => [e.node, e.default])),
);

/**
 * @param {Record<string, string|undefined>} [env]
 * @returns {Settings}
 */
export function loadSettings(env = process.env) {
  /** @type {Record<string, any>} */
  const values = {};
  /** @type {Record<string, any>} */
  const limits = {};
  for (const entry of SETTINGS) {
    if (!entry.node) continue;
    (entry.group === 'limits' ? limits : values)[entry.node] = read(env, entry);
  }
  if (limits.defaultMaxTokens > limits.maxTokensLimit) {
    throw new SettingsError('DEFAULT_MAX_TOKENS must not exceed MAX_TOKENS_LIMIT');
  }
  if (!env.AWS_REGION && env.AWS_DEFAULT_REGION) values.region = env.AWS_DEFAULT_REGION;
  // Cognito's issuer and JWKS URL follow from the pool unless the environment
  // names them (the local cloud does).
  values.jwtIssuer ||= `https://cognito-idp.${values.region}.amazonaws.com/${values.userPoolId}`;
  values.jwksUrl ||= `${values.jwtIssuer.replace(/\/+$/, '')}/.well-known/jwks.json`;
  return /** @type {Settings} */ ({ ...values, limits });
}
