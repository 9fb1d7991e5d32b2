/**
 * Architecture 3: AppSync + SQS. The protocol: pick the streamId, subscribe to
 * `onStreamFrame(streamId)`, wait for the subscription's acknowledgement (`start_ack`),
 * only then call `startStream` (the worker publishes nothing before that); cancel with
 * `cancelStream`; after a resume or a reconnect, catch up with `streamFrames` from the
 * last seq released.
 *
 * The GraphQL client is behind `GraphqlApi` (Amplify's `generateClient()` in the app,
 * see `amplifyGraphqlApi`), so the protocol is tested without a network.
 */

import { parseFrame } from '../stream/frames';
import type { TokenSource } from './rest';
import type { Connection, StartRequest, Transport, TransportEvents } from './types';
import { StreamRequestError } from './types';

export const SUBSCRIBE = /* GraphQL */ `subscription OnStreamFrame($streamId: ID!) {
  onStreamFrame(streamId: $streamId) { streamId owner frames }
}`;
export const START = /* GraphQL */ `mutation StartStream($input: StartStreamInput!) {
  startStream(input: $input) { streamId status created }
}`;
export const CANCEL = /* GraphQL */ `mutation CancelStream($streamId: ID!) {
  cancelStream(streamId: $streamId) { streamId status cancelRequested }
}`;
export const FRAMES = /* GraphQL */ `query StreamFrames($streamId: ID!, $afterSeq: Int) {
  streamFrames(streamId: $streamId, afterSeq: $afterSeq) { stream { status lastSeq } frames hasMore }
}`;

/** How long to wait for the subscription's acknowledgement (Amplify's own start_ack wait). */
export const ACK_TIMEOUT_MS = 15_000;

export interface GraphqlError {
  errorType?: string;
  message?: string;
}

export interface GraphqlResult {
  data?: Record<string, any> | null;
  errors?: GraphqlError[];
}

export interface Subscription {
  unsubscribe(): void;
}

/** The GraphQL operations the protocol needs, each authorized with the given ID token. */
export interface GraphqlApi {
  subscribe(
    query: string,
    variables: Record<string, unknown>,
    token: string,
    handlers: { next(data: Record<string, any>): void; error(reason: string): void },
  ): Subscription;
  /** Calls `listener` on every acknowledgement of a subscription to `streamId` (reconnects too). */
  onAck(streamId: string, listener: () => void): () => void;
  request(query: string, variables: Record<string, unknown>, token: string): Promise<GraphqlResult>;
}

function firstError(result: GraphqlResult): StreamRequestError | undefined {
  const e = result.errors?.[0];
  if (!e) return undefined;
  return new StreamRequestError(e.errorType || 'GRAPHQL_ERROR', e.message || 'The GraphQL request failed.');
}

export class AppSyncTransport implements Transport {
  readonly name = 'appsync' as const;

  constructor(
    private readonly api: GraphqlApi,
    private readonly token: TokenSource,
    private readonly ackTimeoutMs = ACK_TIMEOUT_MS,
  ) {}

  start(request: StartRequest, events: TransportEvents): Connection {
    return this.follow(request.streamId, events, async (token) => {
      const result = await this.api.request(START, { input: request }, token);
      const err = firstError(result);
      if (err) throw err;
    });
  }

  resume(streamId: string, afterSeq: number, events: TransportEvents): Connection {
    return this.follow(streamId, events, (token) => this.catchUp(streamId, afterSeq, token, events));
  }

  async cancel(streamId: string): Promise<void> {
    const result = await this.api.request(CANCEL, { streamId }, await this.token());
    const err = firstError(result);
    if (err) throw err;
  }

  /** Every stored frame after `afterSeq`, page by page, handed to `events.onFrame`. */
  private async catchUp(
    streamId: string,
    afterSeq: number,
    token: string,
    events: TransportEvents,
  ): Promise<void> {
    let after = afterSeq;
    for (;;) {
      const result = await this.api.request(FRAMES, { streamId, afterSeq: after }, token);
      const err = firstError(result);
      if (err) throw err;
      const snapshot = result.data?.streamFrames;
      const frames = ((snapshot?.frames ?? []) as unknown[]).map((raw) => parseFrame(raw));
      for (const frame of frames) events.onFrame(frame);
      const last = frames[frames.length - 1];
      if (!snapshot?.hasMore || last?.seq === undefined) return;
      after = last.seq;
    }
  }

  /** Subscribe, wait for the acknowledgement, then `afterAck`; catch up after every reconnect. */
  private follow(
    streamId: string,
    events: TransportEvents,
    afterAck: (token: string) => Promise<void>,
  ): Connection {
    let closed = false;
    let acks = 0;
    let sub: Subscription | undefined;
    let stopAcks: (() => void) | undefined;
    let ackTimer: ReturnType<typeof setTimeout> | undefined;
    const close = () => {
      closed = true;
      if (ackTimer) clearTimeout(ackTimer);
      stopAcks?.();
      sub?.unsubscribe();
    };
    const fail = (err: unknown) => {
      if (closed) return;
      if (err instanceof StreamRequestError) {
        close();
        events.onFailure({ code: err.code, message: err.message, retryable: false });
      } else {
        close();
        events.onDrop(`AppSync: ${(err as Error)?.message ?? String(err)}`);
      }
    };
    const run = async () => {
      const token = await this.token();
      if (closed) return;
      stopAcks = this.api.onAck(streamId, () => {
        if (closed) return;
        acks++;
        if (acks === 1) {
          if (ackTimer) clearTimeout(ackTimer);
          events.onReady();
          afterAck(token).catch(fail);
        } else {
          // Amplify resubscribed after a reconnect: frames published meanwhile are in the store.
          this.token()
            .then((fresh) => this.catchUp(streamId, events.lastSeq(), fresh, events))
            .catch(fail);
        }
      });
      ackTimer = setTimeout(
        () => fail(new Error(`no subscription acknowledgement within ${this.ackTimeoutMs} ms`)),
        this.ackTimeoutMs,
      );
      sub = this.api.subscribe(SUBSCRIBE, { streamId }, token, {
        next: (data) => {
          if (closed) return;
          const batch = data.onStreamFrame;
          if (!batch || batch.streamId !== streamId) return;
          for (const raw of (batch.frames ?? []) as unknown[]) {
            try {
              events.onFrame(parseFrame(raw));
            } catch {
              // Not a frame of the protocol: skip it; a gap, if any, is repaired.
            }
          }
        },
        error: (reason) => fail(new Error(reason)),
      });
    };
    run().catch(fail);
    return { close };
  }
}
