/**
 * The frame protocol shared by all three transports (docs/protocol.md): one JSON object per
 * message about a stream. Transcript frames carry a `seq` (0 = start, +1 each, one
 * terminal `done` or `error`); heartbeats and request rejections carry none.
 */

import protocol from '../protocol.json';

/**
 * `reasoning` carries a reasoning model's thinking text, in the transcript like `delta`; the
 * parser accepts it once the protocol data lists it (protocol.json `frameTypes`).
 */
export type FrameType = 'start' | 'delta' | 'reasoning' | 'done' | 'error' | 'heartbeat';

export interface FrameError {
  code: string;
  message: string;
  retryable?: boolean;
}

export interface Usage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
}

export interface Frame {
  v: number;
  type: FrameType;
  streamId?: string;
  seq?: number;
  model?: string;
  text?: string;
  stopReason?: string;
  usage?: Usage;
  metrics?: Record<string, number>;
  error?: FrameError;
}

/** A frame that belongs to the transcript: it has a seq. */
export type SeqFrame = Frame & { seq: number };

const TYPES: ReadonlySet<string> = new Set(protocol.frameTypes);
const STOP_REASONS: ReadonlySet<string> = new Set(protocol.stopReasons);
const ERROR_CODES: ReadonlySet<string> = new Set(Object.keys(protocol.errors));
const ALLOWED_FIELDS: Readonly<Record<string, ReadonlySet<string>>> = {
  start: new Set(['v', 'streamId', 'seq', 'type', 'model']),
  delta: new Set(['v', 'streamId', 'seq', 'type', 'text']),
  reasoning: new Set(['v', 'streamId', 'seq', 'type', 'text']),
  done: new Set(['v', 'streamId', 'seq', 'type', 'stopReason', 'usage', 'metrics']),
  error: new Set(['v', 'streamId', 'seq', 'type', 'error']),
  heartbeat: new Set(['v', 'streamId', 'type']),
};

export class FrameParseError extends Error {
  override name = 'FrameParseError';
}

export function isTerminal(frame: Frame): boolean {
  return frame.type === 'done' || frame.type === 'error';
}

export function hasSeq(frame: Frame): frame is SeqFrame {
  return typeof frame.seq === 'number';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(message: string): never {
  throw new FrameParseError(message);
}

function checkCounts(f: Record<string, unknown>, name: string): void {
  const counts = f[name];
  if (counts === undefined || counts === null) return;
  if (!isObject(counts)) fail(`${name} must be an object`);
  for (const [key, value] of Object.entries(counts)) {
    if (!Number.isInteger(value) || (value as number) < 0) fail(`${name}.${key} must be a non-negative integer`);
  }
}

/**
 * Parses and checks one frame against the protocol (the rules of the servers' validators,
 * held to the shared vectors in tests/vectors/frames.json); throws FrameParseError naming
 * the rule broken.
 */
export function parseFrame(raw: unknown): Frame {
  const value: unknown = typeof raw === 'string' ? parseJson(raw) : raw;
  if (!isObject(value)) fail('a frame must be a JSON object');
  const f = value;
  if (f.v !== protocol.version) fail(`v must be ${protocol.version}`);
  const type = f.type;
  if (typeof type !== 'string' || !TYPES.has(type)) {
    fail(`type must be one of ${[...TYPES].sort().join(', ')}, got ${JSON.stringify(type)}`);
  }
  const isRejection = type === 'error' && !('seq' in f);
  if (!(isRejection && (f.streamId === undefined || f.streamId === null))) {
    if (typeof f.streamId !== 'string' || !f.streamId) fail('streamId must be a non-empty string');
  }
  const unknown = Object.keys(f).filter((k) => !ALLOWED_FIELDS[type]?.has(k)).sort();
  if (unknown.length) fail(`unknown field '${unknown[0]}' in a ${type} frame`);
  if (type === 'heartbeat') return f as unknown as Frame;
  const seq = isRejection ? null : f.seq;
  if (!isRejection && (!Number.isInteger(seq) || (seq as number) < 0)) {
    fail(`seq must be a non-negative integer, got ${JSON.stringify(seq)}`);
  }
  if (type === 'start') {
    if (seq !== 0) fail('a start frame has seq 0');
    if (typeof f.model !== 'string' || !f.model) fail('start.model must be a non-empty string');
  } else if (seq === 0) {
    fail('seq 0 is the start frame');
  }
  if ((type === 'delta' || type === 'reasoning') && (typeof f.text !== 'string' || !f.text)) {
    fail(`${type}.text must be a non-empty string`);
  }
  if (type === 'done') {
    if (typeof f.stopReason !== 'string' || !STOP_REASONS.has(f.stopReason)) {
      fail(`stopReason must be one of ${[...STOP_REASONS].sort().join(', ')}`);
    }
    checkCounts(f, 'usage');
    checkCounts(f, 'metrics');
  }
  if (type === 'error') {
    const e = f.error;
    if (!isObject(e)) fail('an error frame needs error.code');
    if (typeof e.code !== 'string' || !ERROR_CODES.has(e.code)) fail('error.code must be one of the protocol error codes');
    if (typeof e.message !== 'string' || !e.message) fail('error.message must be a non-empty string');
    if (typeof e.retryable !== 'boolean') fail('error.retryable must be a boolean');
    if (Object.keys(e).some((k) => !['code', 'message', 'retryable'].includes(k))) fail('error has unknown fields');
  }
  return f as unknown as Frame;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new FrameParseError('a frame must be valid JSON');
  }
}

/** Characters as a reader counts them (code points, so an emoji is one). */
export function charCount(text: string | undefined): number {
  return text ? Array.from(text).length : 0;
}
