/**
 * Frame reassembly, the same for every transport (docs/protocol.md): frames are released in
 * seq order, duplicates are dropped, a hole in the sequence is reported as a gap (the
 * caller repairs it from the stream store), and exactly one terminal frame is released.
 *
 * Pure state machine: no I/O, no clocks. Feed it frames with `accept`; it answers what
 * to show now and whether frames are missing.
 */

import { hasSeq, isTerminal, type Frame, type SeqFrame } from './frames';

export type Source = 'live' | 'repair';

export interface Accepted {
  /** Frames to show now, in seq order (the terminal frame last, if it came). */
  released: Frame[];
  /** Set when frames are missing: the caller should fetch frames after `afterSeq`. */
  gap?: { afterSeq: number; missingFrom: number; missingTo: number };
}

export interface ReassemblyCounts {
  /** Frames released (start, deltas, the terminal one). */
  released: number;
  /** Frames dropped because their seq was already seen (or came after the end). */
  duplicates: number;
  /** Holes in the sequence noticed. */
  gapsDetected: number;
  /** Holes closed again (by frames from the store or late live frames). */
  gapsRepaired: number;
  /** Released frames that came from a store read rather than the live connection. */
  framesRepaired: number;
}

export class Reassembler {
  private next = 0;
  private readonly pending = new Map<number, { frame: SeqFrame; source: Source }>();
  private gapOpen = false;
  private terminalFrame: Frame | undefined;
  readonly counts: ReassemblyCounts = {
    released: 0,
    duplicates: 0,
    gapsDetected: 0,
    gapsRepaired: 0,
    framesRepaired: 0,
  };

  /** Resume after `lastSeq` (frames up to it were released before, e.g. before a reload). */
  constructor(
    readonly streamId: string,
    lastSeq = -1,
  ) {
    this.next = lastSeq + 1;
  }

  /** The highest seq released so far (-1 before the start frame). */
  get lastSeq(): number {
    return this.next - 1;
  }

  get terminal(): Frame | undefined {
    return this.terminalFrame;
  }

  get finished(): boolean {
    return this.terminalFrame !== undefined;
  }

  /** True while frames after `lastSeq` arrived but the ones between are missing. */
  get hasGap(): boolean {
    return this.gapOpen;
  }

  accept(frame: Frame, source: Source = 'live'): Accepted {
    if (frame.streamId !== undefined && frame.streamId !== this.streamId) {
      return { released: [] }; // another stream's frame: not ours to count
    }
    if (frame.type === 'heartbeat') return { released: [] };
    if (!hasSeq(frame)) {
      // A rejection (error frame without seq): the request failed before any transcript.
      if (isTerminal(frame) && !this.finished) {
        this.terminalFrame = frame;
        this.pending.clear();
        this.gapOpen = false;
        this.counts.released++;
        return { released: [frame] };
      }
      return { released: [] };
    }
    if (this.finished || frame.seq < this.next || this.pending.has(frame.seq)) {
      this.counts.duplicates++;
      return { released: [] };
    }
    this.pending.set(frame.seq, { frame, source });
    const released = this.drain();
    if (this.pending.size > 0 && !this.finished) {
      if (!this.gapOpen) {
        this.gapOpen = true;
        this.counts.gapsDetected++;
      }
      const first = Math.min(...this.pending.keys());
      return {
        released,
        gap: { afterSeq: this.lastSeq, missingFrom: this.next, missingTo: first - 1 },
      };
    }
    if (this.gapOpen) {
      this.gapOpen = false;
      this.counts.gapsRepaired++;
    }
    return { released };
  }

  private drain(): Frame[] {
    const out: Frame[] = [];
    for (let entry = this.pending.get(this.next); entry; entry = this.pending.get(this.next)) {
      this.pending.delete(this.next);
      this.next++;
      out.push(entry.frame);
      this.counts.released++;
      if (entry.source === 'repair') this.counts.framesRepaired++;
      if (isTerminal(entry.frame)) {
        this.terminalFrame = entry.frame;
        // Anything buffered beyond the terminal frame cannot be part of this stream.
        this.counts.duplicates += this.pending.size;
        this.pending.clear();
        break;
      }
    }
    return out;
  }
}
