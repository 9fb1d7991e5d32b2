/**
 * The frame protocol of docs/protocol.md (mirrors chalicelib/frames.py): builders,
 * validation, encoding, size caps, and validation of the start request.
 * Pure functions and a small sequencer, held to the shared vectors in tests/vectors/.
 */

import { randomUUID } from 'node:crypto';

import { ErrorCode, StreamError } from './errors.mjs';
import { LIMITS, PROTOCOL } from './protocol.mjs';
import { codePointLength, isBlank, pyList, pyRepr, pySorted, withCommas } from './text.mjs';

export const VERSION = PROTOCOL.version;
export const FRAME_TYPES = new Set(PROTOCOL.frameTypes);
export const TERMINAL_TYPES = new Set(PROTOCOL.terminalTypes);
export const STOP_REASONS = new Set(PROTOCOL.stopReasons);
/** The highest seq a read or resume may name. */
export const MAX_SEQ = LIMITS.maxSeq;

// Bytes of a delta frame other than its text ({"v":1,"streamId":"<36>","seq":<n>,
// "type":"delta","text":""} is under 100); 256 leaves room for a wrapper.
const DELTA_OVERHEAD = 256;

/** A frame does not follow the protocol; the message names the rule. */
export class FrameError extends Error {}

/**
 * Characters (code points) of delta text that always fit in ``limitBytes`` when
 * each one may take ``bytesPerChar`` bytes once encoded.
 */
export function maxTextChars(limitBytes, bytesPerChar = 6) {
  return Math.max(1, Math.floor((limitBytes - DELTA_OVERHEAD) / bytesPerChar));
}

/**
 * Compact JSON of a frame; FrameError if it exceeds ``limitBytes``.
 * @param {object} frame
 * @param {number} [limitBytes]
 */
export function encode(frame, limitBytes) {
  const text = JSON.stringify(frame);
  if (limitBytes !== undefined) {
    const size = Buffer.byteLength(text, 'utf8');
    if (size > limitBytes) throw new FrameError(`frame is ${size} bytes; the transport limit is ${limitBytes}`);
  }
  return text;
}

/** @typedef {{v: number, streamId?: string, seq?: number, type: string, [k: string]: unknown}} Frame */

/** Builds the frames of one stream with seq rising by exactly one. */
export class FrameBuilder {
  /** @param {string} streamId @param {number} [nextSeq] */
  constructor(streamId, nextSeq = 0) {
    this.streamId = streamId;
    this._nextSeq = nextSeq;
  }

  /** Seq of the last transcript frame built (-1 before the start frame). */
  get lastSeq() {
    return this._nextSeq - 1;
  }

  /** @returns {Frame} */
  _frame(type, fields) {
    const frame = { v: VERSION, streamId: this.streamId, seq: this._nextSeq, type, ...fields };
    this._nextSeq += 1;
    return frame;
  }

  start(/** @type {string} */ model) {
    if (this._nextSeq !== 0) throw new FrameError('start must be the first frame (seq 0)');
    return this._frame('start', { model });
  }

  delta(/** @type {string} */ text) {
    if (!text) throw new FrameError('delta text must not be empty');
    return this._frame('delta', { text });
  }

  /**
   * @param {string} stopReason
   * @param {Record<string, number>|null} [usage]
   * @param {Record<string, number>|null} [metrics]
   */
  done(stopReason, usage, metrics) {
    if (!STOP_REASONS.has(stopReason)) throw new FrameError(`unknown stopReason ${pyRepr(String(stopReason))}`);
    /** @type {Record<string, unknown>} */
    const fields = { stopReason };
    if (usage != null) fields.usage = { ...usage };
    if (metrics != null) fields.metrics = { ...metrics };
    return this._frame('done', fields);
  }

  error(/** @type {StreamError} */ err) {
    return this._frame('error', { error: err.toJSON() });
  }

  heartbeat() {
    return { v: VERSION, streamId: this.streamId, type: 'heartbeat' };
  }
}

/**
 * An error frame refusing a request outside a stream's transcript: no seq, not stored.
 * @param {StreamError} err
 * @param {string|null} [streamId]
 */
export function rejection(err, streamId) {
  /** @type {Frame} */
  const frame = { v: VERSION, type: 'error', error: err.toJSON() };
  if (streamId) frame.streamId = streamId;
  return frame;
}

// -- validation ------------------------------------------------------------------------

const ALLOWED_FIELDS = {
  start: new Set(['v', 'streamId', 'seq', 'type', 'model']),
  delta: new Set(['v', 'streamId', 'seq', 'type', 'text']),
  done: new Set(['v', 'streamId', 'seq', 'type', 'stopReason', 'usage', 'metrics']),
  error: new Set(['v', 'streamId', 'seq', 'type', 'error']),
  heartbeat: new Set(['v', 'streamId', 'type']),
};

const ERROR_CODES = new Set(Object.values(ErrorCode));

/** @param {unknown} v */
export function isPlainObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** @param {unknown} v */
function isInt(v) {
  return typeof v === 'number' && Number.isInteger(v);
}

const has = (/** @type {object} */ o, /** @type {string} */ k) => Object.prototype.hasOwnProperty.call(o, k);

function checkCounts(frame, name) {
  if (!has(frame, name) || frame[name] === null) return;
  const counts = frame[name];
  if (!isPlainObject(counts)) throw new FrameError(`${name} must be an object`);
  for (const [key, value] of Object.entries(counts)) {
    if (!isInt(value) || value < 0) throw new FrameError(`${name}.${key} must be a non-negative integer`);
  }
}

/**
 * The frame if it follows docs/protocol.md; FrameError naming the rule broken.
 * @param {unknown} frame
 * @returns {Frame}
 */
export function validateFrame(frame) {
  if (!isPlainObject(frame)) throw new FrameError('frame must be a JSON object');
  const f = /** @type {Record<string, any>} */ (frame);
  if (f.v !== VERSION) throw new FrameError(`v must be ${VERSION}`);
  const type = f.type;
  if (!FRAME_TYPES.has(type)) throw new FrameError(`type must be one of ${pyList(pySorted(FRAME_TYPES))}`);
  // A rejection (an error frame without seq) may come before any stream exists.
  const isRejection = type === 'error' && !has(f, 'seq');
  const streamId = f.streamId;
  if (!(isRejection && streamId == null) && (typeof streamId !== 'string' || !streamId)) {
    throw new FrameError('streamId must be a non-empty string');
  }
  const unknown = Object.keys(f).filter((k) => !ALLOWED_FIELDS[type].has(k));
  if (unknown.length) throw new FrameError(`unknown field ${pyRepr(pySorted(unknown)[0])} in a ${type} frame`);
  if (type === 'heartbeat') return { ...f };
  let seq = f.seq;
  if (isRejection) seq = null;
  else if (!isInt(seq) || seq < 0) throw new FrameError('seq must be a non-negative integer');
  if (type === 'start') {
    if (seq !== 0) throw new FrameError('a start frame has seq 0');
    if (typeof f.model !== 'string' || !f.model) throw new FrameError('start.model must be a non-empty string');
  } else if (seq === 0) {
    throw new FrameError('seq 0 is the start frame');
  }
  if (type === 'delta' && (typeof f.text !== 'string' || !f.text)) {
    throw new FrameError('delta.text must be a non-empty string');
  }
  if (type === 'done') {
    if (!STOP_REASONS.has(f.stopReason)) throw new FrameError(`stopReason must be one of ${pyList(pySorted(STOP_REASONS))}`);
    checkCounts(f, 'usage');
    checkCounts(f, 'metrics');
  }
  if (type === 'error') {
    const err = f.error;
    if (!isPlainObject(err)) throw new FrameError('error must be an object');
    if (!ERROR_CODES.has(err.code)) throw new FrameError('error.code must be one of the protocol error codes (docs/protocol.md)');
    if (typeof err.message !== 'string' || !err.message) throw new FrameError('error.message must be a non-empty string');
    if (typeof err.retryable !== 'boolean') throw new FrameError('error.retryable must be a boolean');
    if (Object.keys(err).some((k) => !['code', 'message', 'retryable'].includes(k))) {
      throw new FrameError('error has unknown fields');
    }
  }
  return { ...f };
}

// -- the start request ------------------------------------------------------------------

export const START_FIELDS = new Set(['prompt', 'messages', 'system', 'maxTokens', 'temperature', 'streamId']);
const ROLES = ['user', 'assistant'];

/**
 * @typedef {object} StartRequest
 * @property {string} streamId
 * @property {number} maxTokens
 * @property {string} [prompt]
 * @property {{role: string, content: string}[]} [messages]
 * @property {string} [system]
 * @property {number} [temperature]
 */

const bad = (/** @type {string} */ message) => new StreamError(ErrorCode.BAD_REQUEST, message);

const UUID_CANONICAL = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A stream id is a UUID in 8-4-4-4-12 form; returns it lower-cased.
 * @param {unknown} value
 */
export function parseStreamId(value) {
  if (typeof value !== 'string') throw bad('streamId must be a UUID string');
  if (UUID_CANONICAL.test(value)) return value.toLowerCase();
  // Forms Python's uuid.UUID() also parses (braces, urn:uuid:, no hyphens) are
  // refused with the same message as there.
  const hex = value.replace(/^urn:/, '').replace(/^uuid:/, '').replace(/^\{+|\}+$/g, '').replaceAll('-', '');
  if (/^[0-9a-f]{32}$/i.test(hex)) throw bad('streamId must be a UUID in 8-4-4-4-12 form');
  throw bad('streamId must be a UUID');
}

function parseMessages(raw, limits) {
  if (!Array.isArray(raw) || raw.length === 0) throw bad('messages must be a non-empty array');
  if (raw.length > limits.maxMessages) {
    throw bad(`messages has ${raw.length} entries; the limit is ${limits.maxMessages}`);
  }
  const out = raw.map((m, i) => {
    if (!isPlainObject(m)) throw bad(`messages[${i}] must be an object`);
    const extra = Object.keys(m).filter((k) => k !== 'role' && k !== 'content');
    if (extra.length) throw bad(`messages[${i}] has unknown field ${pyRepr(pySorted(extra)[0])}`);
    const { role, content } = m;
    if (!ROLES.includes(role)) throw bad(`messages[${i}].role must be 'user' or 'assistant'`);
    if (typeof content !== 'string' || isBlank(content)) throw bad(`messages[${i}].content must be a non-empty string`);
    const expected = ROLES[i % 2];
    if (role !== expected) {
      throw bad(`messages[${i}].role must be ${pyRepr(expected)}: roles alternate, starting with 'user'`);
    }
    return { role, content };
  });
  if (out[out.length - 1].role !== 'user') throw bad("the last message must have role 'user'");
  return out;
}

/** Input size in code points: system plus prompt or every message. */
export function inputChars(/** @type {StartRequest} */ req) {
  let total = codePointLength(req.system ?? '');
  if (req.prompt !== undefined) total += codePointLength(req.prompt);
  for (const m of req.messages ?? []) total += codePointLength(m.content);
  return total;
}

/**
 * Validate a start request (docs/protocol.md); BAD_REQUEST names the problem and the limit.
 * Returns the normalized request (the shape the vectors' ``normalized`` has).
 * @param {unknown} body
 * @param {import('./settings.mjs').Limits} limits
 * @returns {StartRequest}
 */
export function parseStartRequest(body, limits) {
  if (!isPlainObject(body)) throw bad('the request must be a JSON object');
  const b = /** @type {Record<string, any>} */ (body);
  const unknown = Object.keys(b).filter((k) => !START_FIELDS.has(k));
  if (unknown.length) throw bad(`unknown field ${pyRepr(pySorted(unknown)[0])}`);
  const hasPrompt = b.prompt != null;
  const hasMessages = b.messages != null;
  if (hasPrompt === hasMessages) throw bad("exactly one of 'prompt' or 'messages' is required");

  /** @type {StartRequest} */
  const req = { streamId: '', maxTokens: 0 };
  if (hasPrompt) {
    if (typeof b.prompt !== 'string' || isBlank(b.prompt)) throw bad('prompt must be a non-empty string');
    req.prompt = b.prompt;
  } else {
    req.messages = parseMessages(b.messages, limits);
  }

  const system = b.system;
  if (system != null && typeof system !== 'string') throw bad('system must be a string');
  if (system) req.system = system;

  const maxTokens = b.maxTokens === undefined ? limits.defaultMaxTokens : b.maxTokens;
  if (!isInt(maxTokens) || maxTokens < 1 || maxTokens > limits.maxTokensLimit) {
    throw bad(`maxTokens must be an integer from 1 to ${limits.maxTokensLimit}`);
  }
  req.maxTokens = maxTokens;

  const temperature = b.temperature;
  if (temperature != null) {
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0 || temperature > 1) {
      throw bad('temperature must be a number from 0 to 1');
    }
    req.temperature = temperature;
  }

  req.streamId = b.streamId == null ? randomUUID() : parseStreamId(b.streamId);

  const chars = inputChars(req);
  if (chars > limits.maxInputChars) {
    throw bad(`input is ${withCommas(chars)} characters; the limit is ${withCommas(limits.maxInputChars)}`);
  }
  return req;
}
