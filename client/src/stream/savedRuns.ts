/**
 * Running streams survive a page reload: each panel's run is kept in `sessionStorage`
 * (this tab only; cleared when the tab closes) until its terminal frame, and resumed
 * from its last released seq when the page comes back.
 */

import type { StartRequest, TransportName } from '../transports/types';
import type { RunTrace } from './metrics';

export interface SavedRun {
  transport: TransportName;
  streamId: string;
  request: StartRequest;
  text: string;
  reasoning?: string;
  model?: string;
  lastSeq: number;
  trace: RunTrace;
}

const KEY = 'llm-stream.runs.v1';

type Stored = Partial<Record<TransportName, SavedRun>>;

function read(storage: Storage): Stored {
  try {
    const value = JSON.parse(storage.getItem(KEY) ?? '{}');
    return typeof value === 'object' && value !== null ? (value as Stored) : {};
  } catch {
    return {};
  }
}

export class SavedRuns {
  constructor(private readonly storage: Storage = sessionStorage) {}

  all(): SavedRun[] {
    return Object.values(read(this.storage)).filter(
      (r): r is SavedRun => typeof r?.streamId === 'string' && typeof r.lastSeq === 'number',
    );
  }

  save(run: SavedRun): void {
    const runs = read(this.storage);
    runs[run.transport] = run;
    this.write(runs);
  }

  remove(transport: TransportName, streamId: string): void {
    const runs = read(this.storage);
    if (runs[transport]?.streamId === streamId) {
      delete runs[transport];
      this.write(runs);
    }
  }

  clear(): void {
    this.storage.removeItem(KEY);
  }

  private write(runs: Stored): void {
    try {
      this.storage.setItem(KEY, JSON.stringify(runs));
    } catch {
      // Storage full or disabled: the stream still runs, it just cannot survive a reload.
    }
  }
}
