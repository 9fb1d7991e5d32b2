import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { RestApi, StreamSnapshot } from '../transports/rest';
import type { Connection, StartRequest, Transport, TransportEvents } from '../transports/types';
import type { Frame } from './frames';
import { StreamRunner, type RunState } from './runner';
import { SavedRuns } from './savedRuns';

const ID = '6f1c2b8e-7d0a-4c1e-9b1a-2f3e4d5c6b7a';
const f = (seq: number, type: Frame['type'] = 'delta', extra: Partial<Frame> = {}): Frame => ({
  v: 1,
  streamId: ID,
  seq,
  type,
  ...(type === 'delta' ? { text: `t${seq} ` } : {}),
  ...extra,
});

class MemoryStorage implements Storage {
  private items = new Map<string, string>();
  get length() {
    return this.items.size;
  }
  clear() {
    this.items.clear();
  }
  getItem(k: string) {
    return this.items.get(k) ?? null;
  }
  key(i: number) {
    return [...this.items.keys()][i] ?? null;
  }
  removeItem(k: string) {
    this.items.delete(k);
  }
  setItem(k: string, v: string) {
    this.items.set(k, v);
  }
}

class FakeTransport implements Transport {
  readonly name = 'websocket' as const;
  opened: Array<{ kind: 'start' | 'resume'; afterSeq?: number; events: TransportEvents; closed: boolean }> = [];
  cancels: string[] = [];
  start(_r: StartRequest, events: TransportEvents): Connection {
    return this.open({ kind: 'start', events, closed: false });
  }
  resume(_id: string, afterSeq: number, events: TransportEvents): Connection {
    return this.open({ kind: 'resume', afterSeq, events, closed: false });
  }
  async cancel(id: string) {
    this.cancels.push(id);
  }
  get last() {
    return this.opened[this.opened.length - 1]!.events;
  }
  private open(entry: FakeTransport['opened'][number]): Connection {
    this.opened.push(entry);
    return { close: () => void (entry.closed = true) };
  }
}

function fakeRest(pages: StreamSnapshot[]) {
  const reads: number[] = [];
  const rest = {
    frames: async (_id: string, afterSeq: number) => {
      reads.push(afterSeq);
      return pages.shift() ?? { status: 'running', lastSeq: null, frames: [], hasMore: false };
    },
    cancel: async () => undefined,
  } as unknown as RestApi;
  return { rest, reads };
}

describe('StreamRunner', () => {
  let transport: FakeTransport;
  let saved: SavedRuns;
  let states: RunState[];
  const last = () => states[states.length - 1]!;
  beforeEach(() => {
    vi.useFakeTimers();
    transport = new FakeTransport();
    saved = new SavedRuns(new MemoryStorage());
    states = [];
  });
  afterEach(() => vi.useRealTimers());

  function start(rest: RestApi) {
    return StreamRunner.start(transport, rest, saved, { streamId: ID, prompt: 'Hi' }, (s) => states.push(s), {
      heartbeatIntervalS: 15,
      saveIntervalMs: 0,
    });
  }

  it('shows the text in seq order and ends on the terminal frame, forgetting the saved run', () => {
    start(fakeRest([]).rest);
    expect(saved.all().map((r) => r.streamId)).toEqual([ID]);
    const ev = transport.last;
    ev.onReady();
    ev.onFrame(f(0, 'start', { model: 'm' }));
    ev.onFrame(f(1));
    ev.onFrame(f(1));
    ev.onFrame(f(2, 'done', { stopReason: 'end_turn', usage: { outputTokens: 2 } }));
    expect(last()).toMatchObject({ status: 'done', text: 't1 ', model: 'm', stopReason: 'end_turn' });
    expect(last().trace.duplicates).toBe(1);
    expect(last().trace.outputTokens).toBe(2);
    expect(saved.all()).toEqual([]);
    expect(transport.opened[0]!.closed).toBe(true);
  });

  it('repairs a gap from the store through the REST API', async () => {
    const { rest, reads } = fakeRest([{ status: 'running', lastSeq: 3, frames: [f(1), f(2), f(3)], hasMore: false }]);
    start(rest);
    const ev = transport.last;
    ev.onFrame(f(0, 'start'));
    ev.onFrame(f(3));
    await vi.runOnlyPendingTimersAsync();
    expect(reads).toEqual([0]);
    expect(last().text).toBe('t1 t2 t3 ');
    expect(last().trace).toMatchObject({ gapsDetected: 1, gapsRepaired: 1, framesRepaired: 2, duplicates: 1 });
  });

  it('resumes a dropped connection from the last seq shown, with backoff', async () => {
    start(fakeRest([]).rest);
    const ev = transport.last;
    ev.onFrame(f(0, 'start'));
    ev.onFrame(f(1));
    ev.onDrop('the socket closed');
    expect(last().status).toBe('reconnecting');
    expect(transport.opened).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(250);
    expect(transport.opened[1]).toMatchObject({ kind: 'resume', afterSeq: 1 });
    transport.last.onFrame(f(2, 'done', { stopReason: 'end_turn' }));
    expect(last()).toMatchObject({ status: 'done', text: 't1 ' });
    expect(last().trace.resumes).toBe(1);
  });

  it("keeps the terminal frame's model metrics and tells the page of every drop", () => {
    const drops: string[] = [];
    StreamRunner.start(transport, fakeRest([]).rest, saved, { streamId: ID, prompt: 'Hi' }, (s) => states.push(s), {
      heartbeatIntervalS: 15,
      onDrop: (reason) => drops.push(reason),
    });
    const ev = transport.last;
    ev.onFrame(f(0, 'start'));
    ev.onDrop('the socket closed (code 1006)');
    expect(drops).toEqual(['the socket closed (code 1006)']);
    ev.onFrame(f(1));
    ev.onFrame(f(2, 'done', { stopReason: 'end_turn', metrics: { modelFirstTokenMs: 120, modelLatencyMs: 900 } }));
    expect(last().trace.modelMetrics).toEqual({ modelFirstTokenMs: 120, modelLatencyMs: 900 });
  });

  it('keeps reasoning text apart from the answer, and across a reload', () => {
    start(fakeRest([]).rest);
    const ev = transport.last;
    ev.onFrame(f(0, 'start'));
    ev.onFrame(f(1, 'reasoning', { text: 'Think. ' }));
    ev.onFrame(f(2, 'reasoning', { text: 'More.' }));
    ev.onFrame(f(3));
    expect(last()).toMatchObject({ reasoning: 'Think. More.', text: 't3 ' });
    expect(saved.all()[0]).toMatchObject({ reasoning: 'Think. More.', lastSeq: 3 });
  });

  it('gives up after the resume attempts fail, with an error naming the cause', async () => {
    const runner = StreamRunner.start(transport, fakeRest([]).rest, saved, { streamId: ID, prompt: 'Hi' }, (s) => states.push(s), {
      heartbeatIntervalS: 15,
      maxResumeAttempts: 2,
    });
    transport.last.onDrop('network down');
    await vi.advanceTimersByTimeAsync(250);
    transport.last.onDrop('network down');
    await vi.advanceTimersByTimeAsync(500);
    transport.last.onDrop('network down');
    expect(runner.finished).toBe(true);
    expect(last().error).toMatchObject({ code: 'CONNECTION_LOST' });
    expect(last().error?.message).toContain('network down');
  });

  it('reports a failure before any frame as an error with its code', () => {
    start(fakeRest([]).rest);
    transport.last.onFailure({ code: 'TOO_MANY_STREAMS', message: 'at most 3', retryable: false });
    expect(last()).toMatchObject({ status: 'error', error: { code: 'TOO_MANY_STREAMS', message: 'at most 3' } });
  });

  it('cancels through the transport; the stream ends as cancelled', async () => {
    const runner = start(fakeRest([]).rest);
    transport.last.onFrame(f(0, 'start'));
    await runner.cancel();
    expect(transport.cancels).toEqual([ID]);
    expect(last().status).toBe('cancelling');
    transport.last.onFrame(f(1, 'done', { stopReason: 'cancelled' }));
    expect(last().status).toBe('cancelled');
  });

  it('checks the store when the connection stays silent past two heartbeat intervals', async () => {
    const { rest, reads } = fakeRest([
      { status: 'done', lastSeq: 1, frames: [f(1, 'done', { stopReason: 'end_turn' })], hasMore: false },
    ]);
    start(rest);
    transport.last.onFrame(f(0, 'start'));
    await vi.advanceTimersByTimeAsync(20_000);
    expect(reads).toEqual([]);
    await vi.advanceTimersByTimeAsync(15_000);
    expect(reads).toEqual([0]);
    expect(last().status).toBe('done');
  });

  it('after a reload, resumes a saved run from its last seq with its text and timings', () => {
    const runner = start(fakeRest([]).rest);
    transport.last.onReady();
    transport.last.onFrame(f(0, 'start'));
    transport.last.onFrame(f(1));
    runner.persist();
    const [run] = saved.all();
    const resumed = StreamRunner.resume(transport, fakeRest([]).rest, saved, run!, (s) => states.push(s), {
      heartbeatIntervalS: 15,
    });
    expect(transport.last).toBeDefined();
    expect(transport.opened[1]).toMatchObject({ kind: 'resume', afterSeq: 1 });
    expect(resumed.current).toMatchObject({ text: 't1 ', status: 'reconnecting' });
    expect(resumed.current.trace.resumes).toBe(1);
    expect(resumed.current.trace.connectedAt).toBe(run!.trace.connectedAt);
  });
});
