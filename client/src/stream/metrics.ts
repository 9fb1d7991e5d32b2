/**
 * Live metrics of one stream: pure functions over a trace of timestamped events.
 *
 * Every timestamp is in milliseconds on one clock (`now()` below: the page's
 * high-resolution clock anchored to the epoch, so times stored before a reload stay
 * comparable after it). What each metric measures:
 *
 * - setupMs: request sent → the transport is ready to deliver (Function URL: response
 *   headers received; WebSocket: socket open; AppSync: subscription acknowledged).
 * - ttftMs (time to first token): request sent → the first delta with text arrived.
 * - charsPerSecond: characters (code points) of every delta after the first, divided by
 *   the rate window: from the first delta to the terminal frame (to `at` while streaming;
 *   the first delta's text arrived at the start of the window, so it is left out). Hidden
 *   (undefined) while the window is shorter than MIN_RATE_WINDOW_MS.
 * - tokensPerSecond: the model's output tokens (the `done` frame's usage) over the same
 *   window; known only after a `done` whose window is long enough.
 * - modelFirstTokenMs / modelLatencyMs: the producer's own figures from the terminal frame.
 * - overheadMs: ttftMs − modelFirstTokenMs (what the architecture adds to the first token).
 * - streamingMs: first text → last text arrival; streamingLagMs: streamingMs minus the
 *   model's first-to-last-token time (modelLatencyMs − modelFirstTokenMs).
 * - completionDelayMs: last text → terminal frame arrival.
 * - totalMs: request sent → the terminal frame arrived.
 * - longestPauseMs: the longest time between two consecutive frames from the first delta
 *   to the terminal frame: how smooth the stream was.
 * - frames: transcript frames released in seq order (start, deltas, terminal);
 *   heartbeats, duplicates dropped, gaps detected/repaired and frames fetched from the
 *   store to repair them are counted separately.
 */

import { MIN_RATE_WINDOW_MS } from '../stats/definitions';
import type { FrameType } from './frames';

export const now = (): number => performance.timeOrigin + performance.now();

export interface Arrival {
  at: number;
  type: FrameType;
  /** Characters of text (code points); 0 for frames without text. */
  chars: number;
}

export interface RunTrace {
  requestedAt: number;
  connectedAt?: number;
  /** Released frames, in seq order, with their arrival times. */
  arrivals: Arrival[];
  heartbeats: number;
  duplicates: number;
  gapsDetected: number;
  gapsRepaired: number;
  framesRepaired: number;
  /** Times the stream was resumed on a new connection (drop, reload). */
  resumes: number;
  outputTokens?: number;
  /** The terminal frame's `metrics` (modelFirstTokenMs, modelLatencyMs), as the producer measured them. */
  modelMetrics?: Record<string, number>;
}

export interface Metrics {
  setupMs?: number;
  ttftMs?: number;
  charsPerSecond?: number;
  tokensPerSecond?: number;
  totalMs?: number;
  modelFirstTokenMs?: number;
  modelLatencyMs?: number;
  overheadMs?: number;
  streamingMs?: number;
  streamingLagMs?: number;
  completionDelayMs?: number;
  outputTokens?: number;
  /** Time since the request, or the total once finished. */
  elapsedMs: number;
  longestPauseMs?: number;
  chars: number;
  frames: number;
  heartbeats: number;
  duplicates: number;
  gapsDetected: number;
  gapsRepaired: number;
  framesRepaired: number;
  resumes: number;
}

export function emptyTrace(requestedAt: number): RunTrace {
  return {
    requestedAt,
    arrivals: [],
    heartbeats: 0,
    duplicates: 0,
    gapsDetected: 0,
    gapsRepaired: 0,
    framesRepaired: 0,
    resumes: 0,
  };
}

function isTerminalType(type: FrameType): boolean {
  return type === 'done' || type === 'error';
}

export function computeMetrics(trace: RunTrace, at: number): Metrics {
  const { arrivals, requestedAt } = trace;
  const textArrivals = arrivals.filter((a) => a.type === 'delta' && a.chars > 0);
  const first = textArrivals[0];
  const last = textArrivals[textArrivals.length - 1];
  const terminal = arrivals.find((a) => isTerminalType(a.type));
  const chars = textArrivals.reduce((sum, a) => sum + a.chars, 0);

  const m: Metrics = {
    elapsedMs: Math.max(0, (terminal ? terminal.at : at) - requestedAt),
    chars,
    frames: arrivals.length,
    heartbeats: trace.heartbeats,
    duplicates: trace.duplicates,
    gapsDetected: trace.gapsDetected,
    gapsRepaired: trace.gapsRepaired,
    framesRepaired: trace.framesRepaired,
    resumes: trace.resumes,
  };
  if (trace.connectedAt !== undefined) m.setupMs = trace.connectedAt - requestedAt;
  if (first) m.ttftMs = first.at - requestedAt;
  if (terminal) m.totalMs = terminal.at - requestedAt;
  const windowEnd = terminal ? terminal.at : at;
  const windowMs = first ? windowEnd - first.at : 0;
  if (first && windowMs >= MIN_RATE_WINDOW_MS) {
    m.charsPerSecond = ((chars - first.chars) * 1000) / windowMs;
    if (terminal && trace.outputTokens) m.tokensPerSecond = (trace.outputTokens * 1000) / windowMs;
  }
  if (trace.outputTokens !== undefined) m.outputTokens = trace.outputTokens;
  const model = trace.modelMetrics ?? {};
  const modelFirst = finite(model.modelFirstTokenMs);
  const modelLatency = finite(model.modelLatencyMs);
  if (modelFirst !== undefined) m.modelFirstTokenMs = modelFirst;
  if (modelLatency !== undefined) m.modelLatencyMs = modelLatency;
  if (m.ttftMs !== undefined && modelFirst !== undefined) m.overheadMs = m.ttftMs - modelFirst;
  if (first && last && terminal) {
    m.streamingMs = last.at - first.at;
    m.completionDelayMs = terminal.at - last.at;
    if (modelFirst !== undefined && modelLatency !== undefined && modelLatency >= modelFirst) {
      m.streamingLagMs = m.streamingMs - (modelLatency - modelFirst);
    }
  }
  if (first) {
    const from = arrivals.indexOf(first);
    let longest: number | undefined;
    for (let i = from + 1; i < arrivals.length; i++) {
      const pause = arrivals[i]!.at - arrivals[i - 1]!.at;
      longest = longest === undefined ? pause : Math.max(longest, pause);
    }
    if (longest !== undefined) m.longestPauseMs = longest;
  }
  return m;
}

function finite(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** [ms since the request, characters received so far] per text frame, from (0, 0). */
export function charSeries(trace: RunTrace): Array<[number, number]> {
  const points: Array<[number, number]> = [[0, 0]];
  let total = 0;
  for (const a of trace.arrivals) {
    if (a.chars > 0 || isTerminalType(a.type)) {
      total += a.chars;
      points.push([a.at - trace.requestedAt, total]);
    }
  }
  return points;
}

/**
 * Aligns several series on one x axis (the union of their x values), carrying each
 * series' last value forward; before a series' first point, and after its last while
 * others continue, it has no value (null), so its line ends where the stream ended.
 */
export function alignSeries(series: Array<Array<[number, number]>>): {
  x: number[];
  ys: Array<Array<number | null>>;
} {
  const x = [...new Set(series.flatMap((s) => s.map(([t]) => t)))].sort((a, b) => a - b);
  const ys = series.map((s) => {
    const out: Array<number | null> = [];
    let i = 0;
    let current: number | null = null;
    const end = s.length ? s[s.length - 1]![0] : -Infinity;
    for (const t of x) {
      while (i < s.length && s[i]![0] <= t) current = s[i++]![1];
      out.push(t > end ? null : current);
    }
    return out;
  });
  return { x, ys };
}
