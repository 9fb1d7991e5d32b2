import { describe, expect, it } from 'vitest';

import { computeMetrics, emptyTrace } from '../stream/metrics';
import type { RunState } from '../stream/runner';
import { CSV_COLUMNS, MAX_RUNS, RUN_LOG_KEY, RunLog, counts, recordOf, toCsv, toJson, type RunRecord } from './runLog';

class MemoryStorage implements Storage {
  private data = new Map<string, string>();
  get length() {
    return this.data.size;
  }
  clear() {
    this.data.clear();
  }
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  key(i: number) {
    return [...this.data.keys()][i] ?? null;
  }
  removeItem(k: string) {
    this.data.delete(k);
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
}

function finishedState(streamId = 's-1'): RunState {
  const trace = {
    ...emptyTrace(Date.UTC(2026, 0, 2, 3, 4, 5)),
    arrivals: [
      { at: 0, type: 'start' as const, chars: 0 },
      { at: 0, type: 'delta' as const, chars: 5 },
      { at: 0, type: 'done' as const, chars: 0 },
    ],
    outputTokens: 2,
    modelMetrics: { modelFirstTokenMs: 100, modelLatencyMs: 900 },
  };
  const t0 = trace.requestedAt;
  trace.arrivals = [
    { at: t0 + 50, type: 'start', chars: 0 },
    { at: t0 + 300, type: 'delta', chars: 5 },
    { at: t0 + 1300, type: 'delta', chars: 7 },
    { at: t0 + 1310, type: 'done', chars: 0 },
  ];
  return {
    transport: 'websocket',
    streamId,
    request: { streamId, prompt: 'Hé, "quoted", prompt', system: 'Be brief', maxTokens: 64 },
    status: 'done',
    stopReason: 'end_turn',
    model: 'local-sim',
    text: 'Hello world!',
    trace: { ...trace, connectedAt: t0 + 40 },
  };
}

describe('recordOf', () => {
  it('records identity, outcome and every metric of a finished run', () => {
    const s = finishedState();
    const rec = recordOf(s, computeMetrics(s.trace, 0), { batchId: 'b1', round: 2, position: 0 });
    expect(rec).toMatchObject({
      streamId: 's-1',
      transport: 'websocket',
      batchId: 'b1',
      round: 2,
      position: 0,
      startedAt: '2026-01-02T03:04:05.000Z',
      status: 'done',
      stopReason: 'end_turn',
      model: 'local-sim',
      promptChars: 'Hé, "quoted", prompt'.length + 'Be brief'.length,
      maxTokens: 64,
      setupMs: 40,
      ttftMs: 300,
      modelFirstTokenMs: 100,
      overheadMs: 200,
      streamingMs: 1000,
      streamingLagMs: 200,
      completionDelayMs: 10,
      totalMs: 1310,
      chars: 12,
      outputTokens: 2,
    });
    expect(counts(rec)).toBe(true);
    expect(counts({ ...rec, status: 'cancelled' })).toBe(false);
    expect(counts({ ...rec, status: 'error', errorCode: 'MODEL_ERROR' })).toBe(false);
  });
});

describe('RunLog', () => {
  it('keeps runs across instances (reloads), once per stream, until cleared', () => {
    const storage = new MemoryStorage();
    const s = finishedState();
    const rec = recordOf(s, computeMetrics(s.trace, 0), null);
    new RunLog(storage).add(rec);
    new RunLog(storage).add({ ...rec, totalMs: 1 });
    expect(new RunLog(storage).all()).toEqual([{ ...rec, totalMs: 1 }]);
    new RunLog(storage).clear();
    expect(new RunLog(storage).all()).toEqual([]);
  });

  it('drops the oldest runs beyond the cap and survives garbage in storage', () => {
    const storage = new MemoryStorage();
    const log = new RunLog(storage);
    const base = recordOf(finishedState(), computeMetrics(finishedState().trace, 0), null);
    const full = Array.from({ length: MAX_RUNS }, (_, i) => ({ ...base, streamId: `s-${i}` }));
    storage.setItem(RUN_LOG_KEY, JSON.stringify(full));
    log.add({ ...base, streamId: `s-${MAX_RUNS}` });
    const runs: RunRecord[] = log.add({ ...base, streamId: `s-${MAX_RUNS + 1}` });
    expect(runs).toHaveLength(MAX_RUNS);
    expect(runs[0]!.streamId).toBe('s-2');
    storage.setItem(RUN_LOG_KEY, '{not json');
    expect(log.all()).toEqual([]);
  });
});

describe('export', () => {
  const s = finishedState();
  const rec = recordOf(s, computeMetrics(s.trace, 0), { batchId: 'b,1', round: 0, position: 1 });

  it('writes RFC 4180 CSV: a header of every column, quoted cells, empty unknowns', () => {
    const csv = toCsv([rec, { ...rec, streamId: 's-2', status: 'error', errorCode: 'MODEL_ERROR', ttftMs: undefined }]);
    const lines = csv.split('\r\n');
    expect(lines[0]).toBe(CSV_COLUMNS.join(','));
    expect(lines).toHaveLength(4); // header, two runs, the final empty line
    const row = lines[1]!.split(',');
    const col = (name: string) => CSV_COLUMNS.indexOf(name as never);
    expect(lines[1]).toContain('"b,1"');
    expect(row[col('transport')]).toBe('websocket');
    expect(row[col('ttftMs') + 1]).toBe('300'); // +1: the quoted batch id holds a comma
    const second = lines[2]!.replace('"b,1"', 'b1').split(',');
    expect(second[col('ttftMs')]).toBe('');
    expect(second[col('errorCode')]).toBe('MODEL_ERROR');
  });

  it('writes JSON with every run and its fields', () => {
    const parsed = JSON.parse(toJson([rec], new Date(Date.UTC(2026, 5, 1))));
    expect(parsed).toEqual({ version: 1, exportedAt: '2026-06-01T00:00:00.000Z', runs: [rec] });
  });
});
