/**
 * Architecture 2: API Gateway WebSocket. The ID token travels as a subprotocol
 * (`auth.<token>`), never in the URL; one socket per stream here, so each panel's
 * numbers are its own. Actions: stream, cancel, resume.
 *
 * A connection outlives the token it was opened with; once that token has expired the
 * server refuses new requests on it with a seq-less UNAUTHORIZED error that is retryable
 * ("reconnect with a fresh token"). The transport then opens a new connection with a
 * freshly issued token and sends the request again, once.
 */

import { type Frame, parseFrame } from '../stream/frames';
import type { RestApi, TokenSource } from './rest';
import type { Connection, StartRequest, Transport, TransportEvents } from './types';

export const PROTOCOL = 'llm-stream.v1';

/** The server's answer to a request on a connection whose token has expired. */
export function isExpiredTokenRefusal(frame: Frame): boolean {
  return frame.type === 'error' && frame.seq === undefined && frame.error?.code === 'UNAUTHORIZED' && frame.error.retryable === true;
}

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
    let renewed = false;
    const connect = async (forceRefresh: boolean) => {
      const token = await this.token(forceRefresh ? { forceRefresh: true } : undefined);
      if (closed) return;
      const socket = new WebSocket(this.url, [PROTOCOL, `auth.${token}`]);
      ws = socket;
      this.sockets.set(streamId, socket);
      socket.onopen = () => {
        if (!opened) events.onReady();
        opened = true;
        socket.send(JSON.stringify(firstMessage));
      };
      socket.onmessage = (msg: MessageEvent) => {
        if (closed || ws !== socket || typeof msg.data !== 'string') return;
        let frame: Frame;
        try {
          frame = parseFrame(msg.data);
        } catch {
          return; // Not a frame of the protocol: ignore it rather than end the stream.
        }
        if (isExpiredTokenRefusal(frame) && !renewed) {
          // The socket's token expired: a new socket with a fresh token, the same request.
          renewed = true;
          ws = undefined;
          socket.close(1000);
          connect(true).catch((err: unknown) => {
            if (!closed) events.onDrop(`could not reconnect: ${(err as Error).message}`);
          });
          return;
        }
        if (frame.seq !== undefined) renewed = false; // accepted: a later expiry may renew again
        events.onFrame(frame);
      };
      socket.onclose = (ev: CloseEvent) => {
        if (this.sockets.get(streamId) === socket) this.sockets.delete(streamId);
        if (closed || ws !== socket) return;
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
    connect(false).catch((err: unknown) => {
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
