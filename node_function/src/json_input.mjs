/**
 * JSON from outside, parsed with a nesting limit (mirrors chalicelib/json_input.py,
 * held to tests/vectors/json_nesting.json): the depth is measured before parsing, and
 * input nested deeper than the limit is a BAD_REQUEST naming it.
 */

import { ErrorCode, StreamError } from './errors.mjs';
import { LIMITS } from './protocol.mjs';

export const MAX_JSON_DEPTH = LIMITS.maxJsonDepth;

/**
 * The deepest nesting of arrays and objects in ``text`` (0 for a scalar). Brackets inside
 * strings do not count; the text need not be valid JSON.
 * @param {string} text
 */
export function jsonDepth(text) {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i += 1; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) {
      inString = true;
    } else if (ch === 0x5b || ch === 0x7b) {
      depth += 1;
      if (depth > deepest) deepest = depth;
    } else if ((ch === 0x5d || ch === 0x7d) && depth > 0) {
      depth -= 1;
    }
  }
  return deepest;
}

export function nestingError(limit = MAX_JSON_DEPTH) {
  return new StreamError(ErrorCode.BAD_REQUEST, `the JSON is nested deeper than the limit of ${limit} levels`);
}

/**
 * Parse JSON from a client; BAD_REQUEST if it is not JSON or nested beyond ``limit``.
 * @param {string} text
 * @param {string} [what]
 * @param {number} [limit]
 */
export function parseJson(text, what = 'the message', limit = MAX_JSON_DEPTH) {
  if (jsonDepth(text) > limit) throw nestingError(limit);
  try {
    return JSON.parse(text);
  } catch {
    throw new StreamError(ErrorCode.BAD_REQUEST, `${what} must be JSON`);
  }
}
