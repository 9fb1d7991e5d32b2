/** The REST API's stream routes (docs/protocol.md, docs/architecture.md): the store, for every transport. */

import { joinUrl } from '../config';
import { parseFrame, type Frame } from '../stream/frames';
import { StreamRequestError } from './types';

export interface StreamSnapshot {
  status: string;
  lastSeq: number | null;
  frames: Frame[];
  hasMore: boolean;
}

export interface RunningStream {
  streamId: string;
  status: string;
  transport: string;
  /** Epoch seconds. */
  createdAt: number;
}

/** The caller's ID token; `forceRefresh` asks for a new one even if the cached one looks valid. */
export type TokenSource = (options?: { forceRefresh?: boolean }) => Promise<string>;

export class RestApi {
  constructor(
    private readonly baseUrl: string,
    private readonly token: TokenSource,
    private readonly fetchImpl: typeof fetch = (...args) => fetch(...args),
  ) {}

  /** Status and stored frames with seq > afterSeq (one page). */
  async frames(streamId: string, afterSeq: number): Promise<StreamSnapshot> {
    const url = joinUrl(this.baseUrl, `streams/${encodeURIComponent(streamId)}?afterSeq=${afterSeq}`);
    const body = await this.call(url, 'GET');
    return {
      status: String(body.status),
      lastSeq: typeof body.lastSeq === 'number' ? body.lastSeq : null,
      frames: Array.isArray(body.frames) ? body.frames.map((f: unknown) => parseFrame(f)) : [],
      hasMore: body.hasMore === true,
    };
  }

  /** The signed-in user's running streams (`GET /streams?status=running`), oldest first. */
  async running(): Promise<RunningStream[]> {
    const body = await this.call(joinUrl(this.baseUrl, 'streams?status=running'), 'GET');
    const list: unknown[] = Array.isArray(body.streams) ? body.streams : [];
    return list
      .filter((s): s is Record<string, unknown> => typeof (s as { streamId?: unknown })?.streamId === 'string')
      .map((s) => ({
        streamId: String(s.streamId),
        status: String(s.status ?? 'running'),
        transport: String(s.transport ?? ''),
        createdAt: typeof s.createdAt === 'number' ? s.createdAt : 0,
      }));
  }

  async cancel(streamId: string): Promise<void> {
    await this.call(joinUrl(this.baseUrl, `streams/${encodeURIComponent(streamId)}/cancel`), 'POST');
  }

  private async call(url: string, method: string): Promise<Record<string, any>> {
    const resp = await this.fetchImpl(url, {
      method,
      headers: { Authorization: `Bearer ${await this.token()}` },
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw errorFromBody(resp.status, body);
    return body;
  }
}

/** `{"error":{"code","message"}}` (or API Gateway's `{"message"}`) as an error. */
export function errorFromBody(status: number, body: any): StreamRequestError {
  const code = body?.error?.code ?? (status === 401 ? 'UNAUTHORIZED' : `HTTP_${status}`);
  const message = body?.error?.message ?? body?.message ?? `The request failed with HTTP ${status}.`;
  return new StreamRequestError(String(code), String(message), status);
}
