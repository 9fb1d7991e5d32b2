/**
 * The coalescing policy of docs/protocol.md as a pure object (mirrors chalicelib/flush.py).
 *
 * The first text goes out at once; after that text is held until ``intervalMs``
 * has passed since the last flush or ``maxChars`` are pending. No chunk is ever
 * longer than ``maxChars`` code points, and a chunk never splits a code point.
 */

import { codePointLength } from './text.mjs';

export class FlushPolicy {
  /** @param {number} intervalMs @param {number} maxChars */
  constructor(intervalMs, maxChars) {
    if (!(intervalMs >= 0)) throw new RangeError('intervalMs must not be negative');
    if (!(maxChars >= 1)) throw new RangeError('maxChars must be at least 1');
    this.intervalMs = intervalMs;
    this.maxChars = maxChars;
    this._pending = '';
    this._pendingLen = 0; // in code points
    /** @type {number|null} */
    this._lastFlushMs = null;
  }

  get pending() {
    return this._pending;
  }

  /** When pending text becomes due (null when nothing is pending). */
  deadlineMs() {
    if (!this._pending) return null;
    if (this._lastFlushMs === null) return -Infinity;
    return this._lastFlushMs + this.intervalMs;
  }

  /**
   * Take text produced at ``nowMs``; return the chunks to send now.
   * @param {string} text @param {number} nowMs @returns {string[]}
   */
  add(text, nowMs) {
    if (text) {
      this._pending += text;
      this._pendingLen += codePointLength(text);
    }
    const out = this._fullChunks();
    if (this._pending && this._isDue(nowMs)) out.push(this._take());
    if (out.length) this._lastFlushMs = nowMs;
    return out;
  }

  /** Chunks that became due with the passing of time alone. */
  due(/** @type {number} */ nowMs) {
    if (!this._pending || !this._isDue(nowMs)) return [];
    return this.add('', nowMs);
  }

  /** Everything pending, in chunks (end of stream, or before a control frame). */
  drain() {
    const out = this._fullChunks();
    if (this._pending) out.push(this._take());
    return out;
  }

  _take() {
    const text = this._pending;
    this._pending = '';
    this._pendingLen = 0;
    return text;
  }

  _isDue(/** @type {number} */ nowMs) {
    return this._lastFlushMs === null || nowMs - this._lastFlushMs >= this.intervalMs;
  }

  _fullChunks() {
    /** @type {string[]} */
    const out = [];
    if (this._pendingLen < this.maxChars) return out;
    const points = Array.from(this._pending); // code points, so no surrogate pair is split
    let i = 0;
    while (points.length - i >= this.maxChars) {
      out.push(points.slice(i, i + this.maxChars).join(''));
      i += this.maxChars;
    }
    this._pending = points.slice(i).join('');
    this._pendingLen = points.length - i;
    return out;
  }
}
