/**
 * Architecture 2: API Gateway WebSocket. The ID token travels as a subprotocol
 * (`auth.<token>`), never in the URL; one socket per stream here, so each panel's
 * numbers are its own. Actions: stream, cancel, resume.
 */

import { parseFrame } from '../stream/frames';
import type { RestApi, TokenSource } from './rest';
import type { Connection, StartRequest, Transport, TransportEvents } from './types';

export const PROTOCOL = 'llm-stream.v1';

export class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const;
  private readonly sockets = new Map<string, WebSocket>();

  constructor(
    private readonly url: string,
    private readonly token: TokenSource,
    private readonly rest: RestApi,
  ) {}

  start(request: StartRequest, events: TransportEvents): Connection {
    return this.open(request.streamId, events, { action: 'stream', ...request }, false);
  }

  resume(streamId: string, afterSeq: number, events: TransportEvents): Connection {
    return this.open(streamId, events, { action: 'resume', streamId, afterSeq }, true);
  }

  async cancel(streamId: string): Promise<void> {
    const ws = this.sockets.get(streamId);
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ action: 'cancel', streamId }));
      return;
    }
    await this.rest.cancel(streamId); // no open socket: the store takes the signal too
  }

  private open(
    streamId: string,
    events: TransportEvents,
    firstMessage: Record<string, unknown>,
    resuming: boolean,
  ): Connection {
    let ws: WebSocket | undefined;
    let closed = false;
    let opened = false;
    const connect = async () => {
      const token = await this.token();
      if (closed) return;
      ws = new WebSocket(this.url, [PROTOCOL, `auth.${token}`]);
      this.sockets.set(streamId, ws);
      ws.onopen = () => {
        opened = true;
        events.onReady();
        ws?.send(JSON.stringify(firstMessage));
      };
      ws.onmessage = (msg: MessageEvent) => {
        if (closed || typeof msg.data !== 'string') return;
        try {
          events.onFrame(parseFrame(msg.data));
        } catch {
          // Not a frame of the protocol: ignore it rather than end the stream.
        }
      };
      ws.onclose = (ev: CloseEvent) => {
        if (this.sockets.get(streamId) === ws) this.sockets.delete(streamId);
        if (closed) return;
        if (!opened && !resuming) {
          // A refused handshake (bad token: HTTP 401) looks like any failed connection.
          events.onFailure({
            code: 'CONNECTION_FAILED',
            message: `The WebSocket connection was refused or failed (close code ${ev.code}).`,
            retryable: true,
          });
        } else {
          events.onDrop(`the socket closed (code ${ev.code})`);
        }
      };
    };
    connect().catch((err: unknown) => {
      if (!closed) events.onDrop(`could not connect: ${(err as Error).message}`);
    });
    return {
      close: () => {
        closed = true;
        if (ws && this.sockets.get(streamId) === ws) this.sockets.delete(streamId);
        ws?.close(1000);
      },
    };
  }
}
