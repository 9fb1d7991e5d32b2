/**
 * Every finished run, kept in `localStorage` across reloads (until Clear runs), and its
 * export as CSV and JSON.
 */

import type { Metrics } from '../stream/metrics';
import type { RunState } from '../stream/runner';
import type { TransportName } from '../transports/types';
import { METRICS, type MetricKey } from './definitions';

export interface RunRecord extends Partial<Record<MetricKey, number>> {
  streamId: string;
  transport: TransportName;
  /** The "Run N times" batch, round and position within the round; null for a single run. */
  batchId: string | null;
  round: number | null;
  position: number | null;
  /** When the request was sent (ISO 8601, UTC). */
  startedAt: string;
  status: 'done' | 'cancelled' | 'error';
  stopReason?: string;
  errorCode?: string;
  model?: string;
  promptChars: number;
  maxTokens?: number;
  chars: number;
  outputTokens?: number;
  frames: number;
  resumes: number;
  gapsRepaired: number;
  duplicates: number;
}

export interface BatchPlace {
  batchId: string;
  round: number;
  position: number;
}

export const RUN_LOG_KEY = 'llm-stream.run-log.v1';
/** The oldest runs go first beyond this (about 2 MB of storage). */
export const MAX_RUNS = 3000;

function inputChars(state: RunState): number {
  const r = state.request;
  const parts = [r.system ?? '', r.prompt ?? '', ...(r.messages ?? []).map((m) => m.content)];
  return parts.reduce((n, p) => n + Array.from(p).length, 0);
}

/** The record of a finished run. */
export function recordOf(state: RunState, m: Metrics, place: BatchPlace | null): RunRecord {
  const status = state.status === 'done' || state.status === 'cancelled' ? state.status : 'error';
  const rec: RunRecord = {
    streamId: state.streamId,
    transport: state.transport,
    batchId: place?.batchId ?? null,
    round: place?.round ?? null,
    position: place?.position ?? null,
    startedAt: new Date(state.trace.requestedAt).toISOString(),
    status,
    promptChars: inputChars(state),
    chars: m.chars,
    frames: m.frames,
    resumes: m.resumes,
    gapsRepaired: m.gapsRepaired,
    duplicates: m.duplicates,
  };
  if (state.stopReason) rec.stopReason = state.stopReason;
  if (state.error) rec.errorCode = state.error.code;
  if (state.model) rec.model = state.model;
  if (state.request.maxTokens !== undefined) rec.maxTokens = state.request.maxTokens;
  if (m.outputTokens !== undefined) rec.outputTokens = m.outputTokens;
  for (const def of METRICS) {
    const v = m[def.key];
    if (typeof v === 'number' && Number.isFinite(v)) rec[def.key] = v;
  }
  return rec;
}

/** Runs that count for the statistics: completed answers (not cancelled, not failed). */
export function counts(rec: RunRecord): boolean {
  return rec.status === 'done' && rec.stopReason !== 'cancelled';
}

export class RunLog {
  constructor(private readonly storage: Storage = localStorage) {}

  all(): RunRecord[] {
    try {
      const value: unknown = JSON.parse(this.storage.getItem(RUN_LOG_KEY) ?? '[]');
      return Array.isArray(value)
        ? value.filter((r): r is RunRecord => typeof r?.streamId === 'string' && typeof r.transport === 'string')
        : [];
    } catch {
      return [];
    }
  }

  /** Adds a run (once per streamId); returns every run. */
  add(record: RunRecord): RunRecord[] {
    const runs = this.all().filter((r) => r.streamId !== record.streamId);
    runs.push(record);
    const kept = runs.slice(-MAX_RUNS);
    try {
      this.storage.setItem(RUN_LOG_KEY, JSON.stringify(kept));
    } catch {
      // Storage full or disabled: the run still shows until the page goes.
    }
    return kept;
  }

  clear(): void {
    this.storage.removeItem(RUN_LOG_KEY);
  }
}

/** The CSV columns, in order: identity, outcome, every metric of METRICS, then counts. */
export const CSV_COLUMNS: ReadonlyArray<keyof RunRecord> = [
  'startedAt',
  'streamId',
  'transport',
  'batchId',
  'round',
  'position',
  'status',
  'stopReason',
  'errorCode',
  'model',
  'promptChars',
  'maxTokens',
  ...METRICS.map((m) => m.key),
  'chars',
  'outputTokens',
  'frames',
  'resumes',
  'gapsRepaired',
  'duplicates',
];

function cell(value: unknown): string {
  if (value === undefined || value === null) return '';
  const text = typeof value === 'number' ? String(Math.round(value * 1000) / 1000) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** RFC 4180 CSV (CRLF line ends), one row per run; empty cells for unknown values. */
export function toCsv(runs: readonly RunRecord[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of runs) lines.push(CSV_COLUMNS.map((c) => cell(r[c])).join(','));
  return lines.join('\r\n') + '\r\n';
}

export function toJson(runs: readonly RunRecord[], exportedAt = new Date()): string {
  return JSON.stringify({ version: 1, exportedAt: exportedAt.toISOString(), runs }, null, 2);
}
