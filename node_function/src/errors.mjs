/**
 * The error codes of docs/protocol.md and the one error type that carries them
 * (mirrors chalicelib/errors.py). Messages are written for users: no stack
 * traces, ARNs, SDK exception text or prompt text.
 */

export const ErrorCode = Object.freeze({
  BAD_REQUEST: 'BAD_REQUEST',
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  NOT_FOUND: 'NOT_FOUND',
  TOO_MANY_STREAMS: 'TOO_MANY_STREAMS',
  TOO_MANY_FOLLOWERS: 'TOO_MANY_FOLLOWERS',
  THROTTLED: 'THROTTLED',
  MODEL_ERROR: 'MODEL_ERROR',
  MODEL_TIMEOUT: 'MODEL_TIMEOUT',
  INTERNAL: 'INTERNAL',
});

/** @type {Readonly<Record<string, number>>} */
export const HTTP_STATUS = Object.freeze({
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  TOO_MANY_STREAMS: 429,
  TOO_MANY_FOLLOWERS: 429,
  THROTTLED: 429,
  MODEL_ERROR: 502,
  MODEL_TIMEOUT: 504,
  INTERNAL: 500,
});

/** Worth retrying the same request later, unchanged. */
export const RETRYABLE = new Set([
  ErrorCode.TOO_MANY_STREAMS,
  ErrorCode.TOO_MANY_FOLLOWERS,
  ErrorCode.THROTTLED,
  ErrorCode.MODEL_TIMEOUT,
]);

/** A failure with a code from docs/protocol.md and a message safe to show a user. */
export class StreamError extends Error {
  /**
   * @param {string} code one of ErrorCode
   * @param {string} message safe for users
   * @param {{retryable?: boolean}} [options]
   */
  constructor(code, message, options = {}) {
    super(message);
    if (!(code in HTTP_STATUS)) throw new TypeError(`unknown error code ${code}`);
    this.name = 'StreamError';
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE.has(code);
  }

  get httpStatus() {
    return HTTP_STATUS[this.code];
  }

  /** @returns {{code: string, message: string, retryable: boolean}} */
  toJSON() {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}
