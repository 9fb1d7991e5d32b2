/**
 * The frame protocol shared by all three transports (docs/protocol.md): one JSON object per
 * message about a stream. Transcript frames carry a `seq` (0 = start, +1 each, one
 * terminal `done` or `error`); heartbeats and request rejections carry none.
 */

/** `reasoning` carries a reasoning model's thinking text, in the transcript like `delta`. */
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

const TYPES: ReadonlySet<string> = new Set(['start', 'delta', 'reasoning', 'done', 'error', 'heartbeat']);

export class FrameParseError extends Error {
  override name = 'FrameParseError';
}

export function isTerminal(frame: Frame): boolean {
  return frame.type === 'done' || frame.type === 'error';
}

export function hasSeq(frame: Frame): frame is SeqFrame {
  return typeof frame.seq === 'number';
}

/** Parses and checks one frame; throws FrameParseError naming what is wrong. */
export function parseFrame(raw: unknown): Frame {
  const value: unknown = typeof raw === 'string' ? parseJson(raw) : raw;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FrameParseError('a frame must be a JSON object');
  }
  const f = value as Record<string, unknown>;
  if (typeof f.type !== 'string' || !TYPES.has(f.type)) {
    throw new FrameParseError(`unknown frame type ${JSON.stringify(f.type)}`);
  }
  if (f.seq !== undefined && (!Number.isInteger(f.seq) || (f.seq as number) < 0)) {
    throw new FrameParseError(`seq must be a non-negative integer, got ${JSON.stringify(f.seq)}`);
  }
  if ((f.type === 'delta' || f.type === 'reasoning') && typeof f.text !== 'string') {
    throw new FrameParseError(`a ${f.type} frame needs a text string`);
  }
  if (f.type === 'error') {
    const e = f.error as Record<string, unknown> | undefined;
    if (typeof e !== 'object' || e === null || typeof e.code !== 'string') {
      throw new FrameParseError('an error frame needs error.code');
    }
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
