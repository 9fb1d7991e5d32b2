/**
 * Architecture 1: POST the start request to the Function URL and read the SSE body as it
 * arrives; resume with `GET ?streamId=` and `Last-Event-ID`; cancel through the REST API
 * (closing the connection does not stop a Lambda).
 */

import { parseFrame } from '../stream/frames';
import { SseParser } from '../stream/sse';
import { errorFromBody, type RestApi, type TokenSource } from './rest';
import type { Connection, StartRequest, Transport, TransportEvents } from './types';

/** A valid stream id no client picks (random v4 ids never are all zeros). */
const PROBE_STREAM_ID = '00000000-0000-4000-8000-000000000000';

export class FunctionUrlTransport implements Transport {
  readonly name = 'functionUrl' as const;

  constructor(
    private readonly url: string,
    private readonly token: TokenSource,
    private readonly rest: RestApi,
  ) {}

  start(request: StartRequest, events: TransportEvents): Connection {
    return this.open(events, async () => ({
      input: this.url,
      init: {
        method: 'POST',
        headers: {
          Authorization: `Bearer ${await this.token()}`,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify(request),
      },
    }), false);
  }

  resume(streamId: string, afterSeq: number, events: TransportEvents): Connection {
    return this.open(events, async () => {
      const url = new URL(this.url);
      url.searchParams.set('streamId', streamId);
      return {
        input: url.toString(),
        init: {
          method: 'GET',
          headers: {
            Authorization: `Bearer ${await this.token()}`,
            'Last-Event-ID': String(afterSeq),
          },
        },
      };
    }, true);
  }

  cancel(streamId: string): Promise<void> {
    return this.rest.cancel(streamId);
  }

  /**
   * Asks to resume a stream that cannot exist: the function checks the token first (401)
   * and only then looks the stream up (404). Its answers carry CORS headers, unlike an API
   * Gateway authorizer's 401, so the page can read them from another origin.
   */
  async acceptsToken(): Promise<boolean | undefined> {
    let token: string;
    try {
      token = await this.token();
    } catch {
      return false; // no token at all: the session is gone
    }
    const url = new URL(this.url);
    url.searchParams.set('streamId', PROBE_STREAM_ID);
    try {
      const resp = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
      await resp.body?.cancel();
      return resp.status !== 401;
    } catch {
      return undefined;
    }
  }

  private open(
    events: TransportEvents,
    request: () => Promise<{ input: string; init: RequestInit }>,
    resuming: boolean,
  ): Connection {
    const abort = new AbortController();
    let closed = false;
    const run = async () => {
      const { input, init } = await request();
      let resp: Response;
      try {
        resp = await fetch(input, { ...init, signal: abort.signal, cache: 'no-store' });
      } catch (err) {
        if (closed) return;
        // No answer at all: the network. A first start may be retried by the runner too.
        events.onDrop(`the request failed: ${(err as Error).message}`);
        return;
      }
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        const err = errorFromBody(resp.status, body);
        if (closed) return;
        // 5xx before streaming may be transient for a resume; a start's answer is final.
        const retryable = resuming && resp.status >= 500;
        if (retryable) events.onDrop(`${err.code}: ${err.message}`);
        else events.onFailure({ code: err.code, message: err.message, retryable: false });
        return;
      }
      if (!resp.body) {
        events.onDrop('the response has no body');
        return;
      }
      events.onReady();
      const parser = new SseParser();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const item of parser.push(value)) {
            if (closed) return;
            if (item.kind === 'comment') {
              events.onFrame({ v: 1, type: 'heartbeat' });
            } else {
              events.onFrame(parseFrame(item.event.data));
            }
          }
        }
      } catch (err) {
        if (!closed) events.onDrop(`the stream broke off: ${(err as Error).message}`);
        return;
      }
      // The body ended: fine after the terminal frame; otherwise the runner resumes.
      if (!closed) events.onDrop('the response ended');
    };
    run().catch((err: unknown) => {
      if (!closed) events.onDrop(`the stream broke off: ${(err as Error).message}`);
    });
    return {
      close: () => {
        closed = true;
        abort.abort();
      },
    };
  }
}
