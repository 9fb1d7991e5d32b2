/** What every transport offers the stream runner, and what it reports back. */

import type { Frame } from '../stream/frames';

export type TransportName = 'functionUrl' | 'websocket' | 'appsync';

export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

/** The start request of docs/protocol.md (`streamId` is always chosen by the client here). */
export interface StartRequest {
  streamId: string;
  prompt?: string;
  messages?: ChatMessage[];
  system?: string;
  maxTokens?: number;
  temperature?: number;
}

/** A problem reported before any frame: an HTTP status, a GraphQL error, a refused handshake. */
export interface TransportFailure {
  code: string;
  message: string;
  /** True when a new connection may succeed (network trouble), false when it is final. */
  retryable: boolean;
}

export interface TransportEvents {
  /** The transport can deliver frames now (the setup time ends here). */
  onReady(): void;
  /** A frame as received: transcript frames, heartbeats and rejections alike. */
  onFrame(frame: Frame): void;
  /** The connection ended before the terminal frame; the runner resumes. */
  onDrop(reason: string): void;
  /** The request failed; nothing will follow on this connection. */
  onFailure(failure: TransportFailure): void;
  /** The highest seq released so far (AppSync catches up from it after reconnecting). */
  lastSeq(): number;
}

export interface Connection {
  /** Closes the connection; no events follow. The stream itself goes on (see cancel). */
  close(): void;
}

export interface Transport {
  readonly name: TransportName;
  start(request: StartRequest, events: TransportEvents): Connection;
  /** Follows an existing stream from after `afterSeq` on a new connection. */
  resume(streamId: string, afterSeq: number, events: TransportEvents): Connection;
  /** Asks the producer to stop; the stream then ends with done / stopReason "cancelled". */
  cancel(streamId: string): Promise<void>;
  /**
   * Whether the endpoint accepts the session's token: false when it refuses it (HTTP 401),
   * true on any other answer, undefined without an answer (network, CORS).
   */
  acceptsToken?(): Promise<boolean | undefined>;
}

export class StreamRequestError extends Error {
  override name = 'StreamRequestError';
  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status, when the answer was HTTP. */
    readonly status?: number,
  ) {
    super(message);
  }
}
