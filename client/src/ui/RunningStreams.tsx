import { useCallback, useEffect, useState } from 'react';

import type { RestApi, RunningStream } from '../transports/rest';

const TRANSPORT_TITLES: Record<string, string> = {
  functionUrl: 'Function URL',
  websocket: 'WebSocket',
  appsync: 'AppSync + SQS',
};

/** The user's running streams (after TOO_MANY_STREAMS), each with a one-click cancel. */
export function RunningStreams({ rest, onDone }: { rest: RestApi; onDone: () => void }) {
  const [streams, setStreams] = useState<RunningStream[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<Set<string>>(new Set());

  const load = useCallback(async () => {
    try {
      setStreams(await rest.running());
      setError(null);
    } catch (err) {
      setError(`Could not list your running streams: ${(err as Error).message}`);
    }
  }, [rest]);

  useEffect(() => {
    void load();
  }, [load]);

  async function cancel(ids: string[]) {
    setBusy((b) => new Set([...b, ...ids]));
    const results = await Promise.allSettled(ids.map((id) => rest.cancel(id)));
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    if (failed.length) setError(`Cancel failed: ${(failed[0]!.reason as Error).message}`);
    setBusy((b) => new Set([...b].filter((id) => !ids.includes(id))));
    // Cancelling asks the producer to stop; its slot frees once the stream has ended
    // (within a flush interval or two; up to 15 s here before leaving it to Refresh).
    for (let i = 0; i < 60; i++) {
      const left = await rest.running().catch(() => null);
      if (left) setStreams(left);
      if (!left || !left.some((s) => ids.includes(s.streamId))) break;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  return (
    <section className="running" aria-labelledby="running-title" data-testid="running-streams">
      <h2 id="running-title">Your running streams</h2>
      <p>Each user may run a limited number of streams at once. Cancel some to start new ones.</p>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {streams === null && !error && <p role="status">Loading…</p>}
      {streams && streams.length === 0 && <p role="status">None are running now: you can start again.</p>}
      {streams && streams.length > 0 && (
        <ul>
          {streams.map((s) => (
            <li key={s.streamId} data-stream-id={s.streamId}>
              <span>
                {TRANSPORT_TITLES[s.transport] ?? s.transport}, started{' '}
                {s.createdAt ? new Date(s.createdAt * 1000).toLocaleTimeString() : '?'}{' '}
                <code>{s.streamId.slice(0, 8)}</code>
              </span>
              <button type="button" className="stop" disabled={busy.has(s.streamId)} onClick={() => void cancel([s.streamId])}>
                Cancel
              </button>
            </li>
          ))}
        </ul>
      )}
      <div className="actions">
        {streams && streams.length > 1 && (
          <button type="button" className="stop" onClick={() => void cancel(streams.map((s) => s.streamId))}>
            Cancel all
          </button>
        )}
        <button type="button" onClick={() => void load()}>
          Refresh
        </button>
        <button type="button" onClick={onDone}>
          Close
        </button>
      </div>
    </section>
  );
}
