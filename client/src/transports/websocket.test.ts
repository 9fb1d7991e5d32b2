import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { Frame } from '../stream/frames';
import type { RestApi } from './rest';
import type { TransportEvents, TransportFailure } from './types';
import { PROTOCOL, WebSocketTransport } from './websocket';

const ID = '0b5f8a5e-3c1d-4e2f-8a9b-1c2d3e4f5a6b';
const EXPIRED = JSON.stringify({
  v: 1,
  streamId: ID,
  type: 'error',
  error: { code: 'UNAUTHORIZED', message: "The connection's token has expired: reconnect with a fresh token.", retryable: true },
});
const START = JSON.stringify({ v: 1, streamId: ID, seq: 0, type: 'start', model: 'm' });

/** A browser WebSocket stand-in: records what is sent; the test opens it and delivers. */
class FakeSocket {
  static all: FakeSocket[] = [];
  sent: string[] = [];
  closedWith?: number;
  onopen?: () => void;
  onmessage?: (msg: { data: string }) => void;
  onclose?: (ev: { code: number }) => void;
  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeSocket.all.push(this);
  }
  static readonly OPEN = 1;
  readyState = 1;
  send(data: string) {
    this.sent.push(data);
  }
  close(code: number) {
    this.closedWith = code;
    this.onclose?.({ code });
  }
  deliver(data: string) {
    this.onmessage?.({ data });
  }
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

function recorder() {
  const frames: Frame[] = [];
  const failures: TransportFailure[] = [];
  const drops: string[] = [];
  const events: TransportEvents = {
    onReady: () => undefined,
    onFrame: (f) => frames.push(f),
    onDrop: (r) => drops.push(r),
    onFailure: (f) => failures.push(f),
    lastSeq: () => -1,
  };
  return { events, frames, failures, drops };
}

describe('WebSocketTransport and an expired token', () => {
  const original = globalThis.WebSocket;
  const tokens: Array<{ forceRefresh?: boolean } | undefined> = [];
  let issued = 0;
  const token = async (options?: { forceRefresh?: boolean }) => {
    tokens.push(options);
    issued += 1;
    return `token-${issued}`;
  };
  const transport = () => new WebSocketTransport('ws://gateway.invalid/', token, {} as RestApi);

  beforeEach(() => {
    FakeSocket.all = [];
    tokens.length = 0;
    issued = 0;
    globalThis.WebSocket = FakeSocket as unknown as typeof WebSocket;
  });
  afterEach(() => {
    globalThis.WebSocket = original;
  });

  it('reconnects with a freshly issued token and sends the request again', async () => {
    const r = recorder();
    transport().start({ streamId: ID, prompt: 'hi' }, r.events);
    await flush();
    const [first] = FakeSocket.all;
    expect(first?.protocols).toEqual([PROTOCOL, 'auth.token-1']);
    first?.onopen?.();
    first?.deliver(EXPIRED);
    await flush();
    expect(first?.closedWith).toBe(1000);
    expect(tokens).toEqual([undefined, { forceRefresh: true }]);
    const second = FakeSocket.all[1];
    expect(second?.protocols).toEqual([PROTOCOL, 'auth.token-2']);
    second?.onopen?.();
    expect(second?.sent.map((s) => JSON.parse(s))).toEqual([{ action: 'stream', streamId: ID, prompt: 'hi' }]);
    second?.deliver(START);
    // The refusal itself never reached the runner, nor did the first socket's close.
    expect(r.frames.map((f) => f.type)).toEqual(['start']);
    expect(r.drops).toEqual([]);
    expect(r.failures).toEqual([]);
  });

  it('hands a second refusal in a row to the runner instead of reconnecting forever', async () => {
    const r = recorder();
    transport().resume(ID, 4, r.events);
    await flush();
    FakeSocket.all[0]?.onopen?.();
    FakeSocket.all[0]?.deliver(EXPIRED);
    await flush();
    FakeSocket.all[1]?.onopen?.();
    expect(FakeSocket.all[1]?.sent.map((s) => JSON.parse(s))).toEqual([{ action: 'resume', streamId: ID, afterSeq: 4 }]);
    FakeSocket.all[1]?.deliver(EXPIRED);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    expect(r.frames).toHaveLength(1);
    expect(r.frames[0]?.error?.code).toBe('UNAUTHORIZED');
  });

  it('does not reconnect for other refusals', async () => {
    const r = recorder();
    transport().start({ streamId: ID, prompt: 'hi' }, r.events);
    await flush();
    FakeSocket.all[0]?.onopen?.();
    const tooMany = { v: 1, streamId: ID, type: 'error', error: { code: 'TOO_MANY_STREAMS', message: 'At most 3.', retryable: true } };
    FakeSocket.all[0]?.deliver(JSON.stringify(tooMany));
    await flush();
    expect(FakeSocket.all).toHaveLength(1);
    expect(r.frames[0]?.error?.code).toBe('TOO_MANY_STREAMS');
  });
});
