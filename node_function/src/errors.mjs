/**
 * The error codes of docs/protocol.md and the one error type that carries them
 * (mirrors chalicelib/errors.py; codes, statuses and retryability come from
 * protocol.json). Messages are written for users: no stack traces, ARNs, SDK
 * exception text or prompt text.
 */

import { ERRORS } from './protocol.mjs';

/** @type {Readonly<Record<string, string>>} */
export const ErrorCode = Object.freeze(Object.fromEntries(Object.keys(ERRORS).map((c) => [c, c])));

/** @type {Readonly<Record<string, number>>} */
export const HTTP_STATUS = Object.freeze(Object.fromEntries(Object.entries(ERRORS).map(([c, e]) => [c, e.status])));

/** Worth retrying the same request later, unchanged. */
export const RETRYABLE = new Set(Object.keys(ERRORS).filter((c) => ERRORS[c].retryable));

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
