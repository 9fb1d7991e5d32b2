import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { Frame } from '../stream/frames';
import { AppSyncTransport, CANCEL, FRAMES, START, SUBSCRIBE, type GraphqlApi, type GraphqlResult } from './appsync';
import type { TransportEvents, TransportFailure } from './types';

const ID = '0b5f8a5e-3c1d-4e2f-8a9b-1c2d3e4f5a6b';
const frame = (seq: number, type: Frame['type'] = 'delta', text = `t${seq}`) =>
  JSON.stringify({
    v: 1,
    streamId: ID,
    seq,
    type,
    ...({ delta: { text }, start: { model: 'm' }, done: { stopReason: 'end_turn' } } as Record<string, object>)[type],
  });

/** A GraphQL API that records every call; the test acknowledges and publishes. */
class FakeApi implements GraphqlApi {
  calls: Array<{ kind: string; query: string; variables: Record<string, unknown>; token: string }> = [];
  next?: (data: Record<string, any>) => void;
  error?: (reason: string) => void;
  unsubscribed = 0;
  private ackListeners: Array<{ streamId: string; listener: () => void }> = [];
  answers: GraphqlResult[] = [];

  subscribe(query: string, variables: Record<string, unknown>, token: string, handlers: { next(data: Record<string, any>): void; error(reason: string): void }) {
    this.calls.push({ kind: 'subscribe', query, variables, token });
    this.next = handlers.next;
    this.error = handlers.error;
    return { unsubscribe: () => void this.unsubscribed++ };
  }

  onAck(streamId: string, listener: () => void) {
    const entry = { streamId, listener };
    this.ackListeners.push(entry);
    return () => {
      this.ackListeners = this.ackListeners.filter((e) => e !== entry);
    };
  }

  async request(query: string, variables: Record<string, unknown>, token: string): Promise<GraphqlResult> {
    this.calls.push({ kind: 'request', query, variables, token });
    return this.answers.shift() ?? { data: {} };
  }

  ack(streamId = ID) {
    for (const e of this.ackListeners.filter((l) => l.streamId === streamId)) e.listener();
  }

  publish(...frames: string[]) {
    this.next?.({ onStreamFrame: { streamId: ID, owner: 'o', frames } });
  }
}

function recorder(lastSeq = -1) {
  const seen: Frame[] = [];
  const failures: TransportFailure[] = [];
  const drops: string[] = [];
  let ready = 0;
  const events: TransportEvents = {
    onReady: () => void ready++,
    onFrame: (f) => seen.push(f),
    onDrop: (r) => drops.push(r),
    onFailure: (f) => failures.push(f),
    lastSeq: () => lastSeq,
  };
  return { events, seen, failures, drops, ready: () => ready };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe('AppSyncTransport', () => {
  let api: FakeApi;
  let transport: AppSyncTransport;
  beforeEach(() => {
    api = new FakeApi();
    transport = new AppSyncTransport(api, async () => 'id-token', 1000);
  });
  afterEach(() => vi.useRealTimers());

  it('subscribes first and starts the stream only after the acknowledgement', async () => {
    const r = recorder();
    transport.start({ streamId: ID, prompt: 'Hi', maxTokens: 50 }, r.events);
    await flush();
    expect(api.calls.map((c) => c.kind)).toEqual(['subscribe']);
    expect(api.calls[0]).toMatchObject({ query: SUBSCRIBE, variables: { streamId: ID }, token: 'id-token' });
    expect(r.ready()).toBe(0);

    api.ack();
    await flush();
    expect(r.ready()).toBe(1);
    expect(api.calls[1]).toMatchObject({
      kind: 'request',
      query: START,
      variables: { input: { streamId: ID, prompt: 'Hi', maxTokens: 50 } },
      token: 'id-token',
    });
  });

  it('hands each frame of a published batch to the runner, skipping other streams', async () => {
    const r = recorder();
    transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await flush();
    api.ack();
    api.publish(frame(0, 'start'), frame(1));
    api.next?.({ onStreamFrame: { streamId: 'other', owner: 'o', frames: [frame(2)] } });
    expect(r.seen.map((f) => f.seq)).toEqual([0, 1]);
  });

  it('reports a refused start with its error type and message', async () => {
    const r = recorder();
    api.answers.push({
      data: { startStream: null },
      errors: [{ errorType: 'TOO_MANY_STREAMS', message: 'at most 3 running streams per user' }],
    });
    transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await flush();
    api.ack();
    await flush();
    expect(r.failures).toEqual([
      { code: 'TOO_MANY_STREAMS', message: 'at most 3 running streams per user', retryable: false },
    ]);
    expect(api.unsubscribed).toBe(1);
  });

  it('catches up from the last released seq after Amplify resubscribes', async () => {
    const r = recorder(7);
    transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await flush();
    api.ack();
    await flush();
    api.answers.push({ data: { streamFrames: { frames: [frame(8), frame(9, 'done')], hasMore: false } } });
    api.ack(); // reconnected
    await flush();
    expect(api.calls[2]).toMatchObject({ query: FRAMES, variables: { streamId: ID, afterSeq: 7 } });
    expect(r.seen.map((f) => f.seq)).toEqual([8, 9]);
  });

  it('resumes: subscribes, then reads stored frames page by page from afterSeq', async () => {
    const r = recorder();
    api.answers.push(
      { data: { streamFrames: { frames: [frame(3), frame(4)], hasMore: true } } },
      { data: { streamFrames: { frames: [frame(5, 'done')], hasMore: false } } },
    );
    transport.resume(ID, 2, r.events);
    await flush();
    expect(api.calls.map((c) => c.kind)).toEqual(['subscribe']);
    api.ack();
    await flush();
    await flush();
    expect(api.calls.slice(1).map((c) => c.variables)).toEqual([
      { streamId: ID, afterSeq: 2 },
      { streamId: ID, afterSeq: 4 },
    ]);
    expect(r.seen.map((f) => f.seq)).toEqual([3, 4, 5]);
  });

  it('reports a drop when the subscription fails, so the runner resumes', async () => {
    const r = recorder();
    transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await flush();
    api.ack();
    api.error?.('Connection failed');
    expect(r.drops).toEqual(['AppSync: Connection failed']);
  });

  it('reports a drop when no acknowledgement comes in time', async () => {
    vi.useFakeTimers();
    const r = recorder();
    transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await vi.advanceTimersByTimeAsync(1001);
    expect(r.drops).toEqual(['AppSync: no subscription acknowledgement within 1000 ms']);
    expect(api.calls.map((c) => c.kind)).toEqual(['subscribe']);
  });

  it('cancels with cancelStream and surfaces its error', async () => {
    await transport.cancel(ID);
    expect(api.calls[0]).toMatchObject({ query: CANCEL, variables: { streamId: ID }, token: 'id-token' });
    api.answers.push({ errors: [{ errorType: 'NOT_FOUND', message: 'no such stream of yours' }] });
    await expect(transport.cancel(ID)).rejects.toThrow('no such stream of yours');
  });

  it('delivers nothing after close', async () => {
    const r = recorder();
    const conn = transport.start({ streamId: ID, prompt: 'Hi' }, r.events);
    await flush();
    api.ack();
    conn.close();
    api.publish(frame(0, 'start'));
    expect(r.seen).toEqual([]);
    expect(api.unsubscribed).toBe(1);
  });
});
