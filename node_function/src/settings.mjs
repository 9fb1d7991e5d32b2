/**
 * One typed settings object read from the environment, with the same names,
 * defaults and bounds as chalicelib/settings.py (the subset this function uses).
 * Nothing else reads process.env, so tests build exactly the settings they need.
 */

export class SettingsError extends Error {}

/**
 * How frames leave the producer: "coalesce" (the default) is the ordered background
 * sender of docs/protocol.md; "per_token" is the baseline bench/ measures it against (one
 * delta frame per model token, delivered before the model is read on).
 */
export const SENDER_MODES = Object.freeze(['coalesce', 'per_token']);

/** @param {Record<string, string|undefined>} env */
function reader(env) {
  const raw = (/** @type {string} */ name) => {
    const v = env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  return {
    str(/** @type {string} */ name, /** @type {string} */ def) {
      return raw(name) ?? def;
    },
    int(/** @type {string} */ name, /** @type {number} */ def, /** @type {number} */ lo, /** @type {number} */ hi) {
      const v = raw(name);
      if (v === undefined) return def;
      if (!/^\s*[+-]?\d+\s*$/.test(v)) throw new SettingsError(`${name} must be an integer, got ${JSON.stringify(v)}`);
      const n = Number.parseInt(v, 10);
      if (n < lo || n > hi) throw new SettingsError(`${name} must be between ${lo} and ${hi}, got ${n}`);
      return n;
    },
    choice(/** @type {string} */ name, /** @type {string} */ def, /** @type {readonly string[]} */ allowed) {
      const v = raw(name) ?? def;
      if (!allowed.includes(v)) {
        throw new SettingsError(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
      }
      return v;
    },
    num(/** @type {string} */ name, /** @type {number} */ def, /** @type {number} */ lo, /** @type {number} */ hi) {
      const v = raw(name);
      if (v === undefined) return def;
      const n = Number(v);
      if (v.trim() === '' || Number.isNaN(n)) throw new SettingsError(`${name} must be a number, got ${JSON.stringify(v)}`);
      if (n < lo || n > hi) throw new SettingsError(`${name} must be between ${lo} and ${hi}, got ${n}`);
      return n;
    },
  };
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

export const DEFAULT_LIMITS = Object.freeze({
  maxInputChars: 32_000,
  maxTokensLimit: 4096,
  defaultMaxTokens: 1024,
  maxStreamsPerUser: 3,
  maxMessages: 100,
  // Readers holding a follower slot: at once per stream, and at once per user over all.
  maxFollowersPerStream: 4,
  maxFollowersPerUser: 8,
});

/**
 * @param {Record<string, string|undefined>} [env]
 * @returns {Settings}
 */
export function loadSettings(env = process.env) {
  const r = reader(env);
  const limits = {
    maxInputChars: r.int('MAX_INPUT_CHARS', DEFAULT_LIMITS.maxInputChars, 1, 1_000_000),
    maxTokensLimit: r.int('MAX_TOKENS_LIMIT', DEFAULT_LIMITS.maxTokensLimit, 1, 200_000),
    defaultMaxTokens: r.int('DEFAULT_MAX_TOKENS', DEFAULT_LIMITS.defaultMaxTokens, 1, 200_000),
    maxStreamsPerUser: r.int('MAX_STREAMS_PER_USER', DEFAULT_LIMITS.maxStreamsPerUser, 1, 1000),
    maxMessages: r.int('MAX_MESSAGES', DEFAULT_LIMITS.maxMessages, 1, 10_000),
    maxFollowersPerStream: r.int('MAX_FOLLOWERS_PER_STREAM', DEFAULT_LIMITS.maxFollowersPerStream, 1, 1000),
    maxFollowersPerUser: r.int('MAX_FOLLOWERS_PER_USER', DEFAULT_LIMITS.maxFollowersPerUser, 1, 10_000),
  };
  if (limits.defaultMaxTokens > limits.maxTokensLimit) {
    throw new SettingsError('DEFAULT_MAX_TOKENS must not exceed MAX_TOKENS_LIMIT');
  }
  const region = r.str('AWS_REGION', r.str('AWS_DEFAULT_REGION', 'us-east-1'));
  const userPoolId = r.str('USER_POOL_ID', 'us-east-1_local');
  // Cognito's issuer and JWKS URL follow from the pool unless the environment
  // names them (the local cloud does).
  const jwtIssuer = r.str('JWT_ISSUER', `https://cognito-idp.${region}.amazonaws.com/${userPoolId}`);
  const jwksUrl = r.str('JWKS_URL', `${jwtIssuer.replace(/\/+$/, '')}/.well-known/jwks.json`);
  return {
    region,
    streamsTable: r.str('STREAMS_TABLE', 'llm-stream-streams'),
    framesTable: r.str('FRAMES_TABLE', 'llm-stream-frames'),
    modelId: r.str('MODEL_ID', 'us.anthropic.claude-sonnet-4-5-20250929-v1:0'),
    userPoolId,
    clientId: r.str('USER_POOL_CLIENT_ID', 'local-client'),
    jwtIssuer,
    jwksUrl,
    jwtLeewayS: r.int('JWT_LEEWAY_S', 60, 0, 60),
    jwksRefetchIntervalS: r.int('JWKS_REFETCH_INTERVAL_S', 60, 0, 86_400),
    flushIntervalMs: r.int('FLUSH_INTERVAL_MS', 50, 1, 10_000),
    flushMaxChars: r.int('FLUSH_MAX_CHARS', 2048, 1, 100_000),
    senderMode: r.choice('SENDER_MODE', 'coalesce', SENDER_MODES),
    heartbeatIntervalS: r.num('HEARTBEAT_INTERVAL_S', 15, 0.01, 600),
    streamTtlS: r.int('STREAM_TTL_S', 24 * 3600, 60, 30 * 86_400),
    modelFirstEventTimeoutS: r.num('MODEL_FIRST_EVENT_TIMEOUT_S', 60, 0.01, 900),
    modelIdleTimeoutS: r.num('MODEL_IDLE_TIMEOUT_S', 30, 0.01, 900),
    modelThrottleRetries: r.int('MODEL_THROTTLE_RETRIES', 3, 0, 10),
    modelRetryBaseMs: r.int('MODEL_RETRY_BASE_MS', 250, 0, 60_000),
    modelRetryMaxMs: r.int('MODEL_RETRY_MAX_MS', 4000, 0, 600_000),
    // The producer renews its claim every third of this; a claim not renewed for this
    // long belongs to a producer that died. Follower slots use the same lease.
    claimLeaseS: r.num('CLAIM_LEASE_S', 30, 0.05, 900),
    limits,
  };
}
