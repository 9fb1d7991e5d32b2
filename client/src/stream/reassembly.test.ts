import { describe, expect, it } from 'vitest';

import type { Frame } from './frames';
import { Reassembler } from './reassembly';

const ID = '6f1c2b8e-7d0a-4c1e-9b1a-2f3e4d5c6b7a';
const start: Frame = { v: 1, streamId: ID, seq: 0, type: 'start', model: 'm' };
const delta = (seq: number, text = `t${seq}`): Frame => ({ v: 1, streamId: ID, seq, type: 'delta', text });
const done = (seq: number): Frame => ({ v: 1, streamId: ID, seq, type: 'done', stopReason: 'end_turn' });
const seqs = (frames: Frame[]) => frames.map((f) => f.seq);

describe('Reassembler', () => {
  it('releases frames that arrive in order at once', () => {
    const r = new Reassembler(ID);
    expect(seqs(r.accept(start).released)).toEqual([0]);
    expect(seqs(r.accept(delta(1)).released)).toEqual([1]);
    expect(seqs(r.accept(done(2)).released)).toEqual([2]);
    expect(r.finished).toBe(true);
    expect(r.counts).toMatchObject({ released: 3, duplicates: 0, gapsDetected: 0 });
  });

  it('orders frames by seq: a later frame waits for the missing one', () => {
    const r = new Reassembler(ID);
    r.accept(start);
    const early = r.accept(delta(2));
    expect(early.released).toEqual([]);
    expect(early.gap).toEqual({ afterSeq: 0, missingFrom: 1, missingTo: 1 });
    expect(seqs(r.accept(delta(1)).released)).toEqual([1, 2]);
    expect(r.hasGap).toBe(false);
    expect(r.counts.gapsDetected).toBe(1);
    expect(r.counts.gapsRepaired).toBe(1);
  });

  it('drops duplicates, whether already released or still buffered', () => {
    const r = new Reassembler(ID);
    r.accept(start);
    r.accept(delta(1));
    expect(r.accept(delta(1)).released).toEqual([]);
    r.accept(delta(3));
    expect(r.accept(delta(3)).released).toEqual([]);
    expect(r.counts.duplicates).toBe(2);
  });

  it('reports one gap for a run of missing frames and counts frames repaired from the store', () => {
    const r = new Reassembler(ID);
    r.accept(start);
    const first = r.accept(delta(4));
    expect(first.gap).toEqual({ afterSeq: 0, missingFrom: 1, missingTo: 3 });
    expect(r.accept(delta(5)).gap).toEqual({ afterSeq: 0, missingFrom: 1, missingTo: 3 });
    // The store answers every frame after 0, including ones already buffered.
    const repaired = [1, 2, 3, 4, 5].flatMap((s) => r.accept(delta(s), 'repair').released);
    expect(seqs(repaired)).toEqual([1, 2, 3, 4, 5]);
    expect(r.counts).toMatchObject({
      gapsDetected: 1,
      gapsRepaired: 1,
      framesRepaired: 3,
      duplicates: 2,
    });
  });

  it('releases exactly one terminal frame and nothing after it', () => {
    const r = new Reassembler(ID);
    r.accept(start);
    r.accept(done(1));
    expect(r.accept(done(1)).released).toEqual([]);
    expect(r.accept(delta(2)).released).toEqual([]);
    expect(r.accept({ v: 1, streamId: ID, type: 'error', error: { code: 'INTERNAL', message: 'x' } }).released).toEqual([]);
    expect(r.terminal?.type).toBe('done');
    expect(r.counts.released).toBe(2);
  });

  it('discards frames buffered beyond the terminal frame', () => {
    const r = new Reassembler(ID);
    r.accept(start);
    r.accept(delta(3));
    r.accept(done(2));
    expect(seqs(r.accept(delta(1)).released)).toEqual([1, 2]);
    expect(r.finished).toBe(true);
    expect(r.lastSeq).toBe(2);
  });

  it('treats a rejection (error frame without seq) as the terminal frame', () => {
    const r = new Reassembler(ID);
    const rejection: Frame = {
      v: 1,
      streamId: ID,
      type: 'error',
      error: { code: 'TOO_MANY_STREAMS', message: 'at most 3 running streams' },
    };
    expect(r.accept(rejection).released).toEqual([rejection]);
    expect(r.terminal).toBe(rejection);
  });

  it('ignores heartbeats and frames of other streams', () => {
    const r = new Reassembler(ID);
    expect(r.accept({ v: 1, streamId: ID, type: 'heartbeat' }).released).toEqual([]);
    expect(r.accept({ ...start, streamId: 'other' }).released).toEqual([]);
    expect(r.counts.released).toBe(0);
    expect(r.lastSeq).toBe(-1);
  });

  it('resumes after a seq already shown, treating earlier frames as duplicates', () => {
    const r = new Reassembler(ID, 2);
    expect(r.accept(delta(2)).released).toEqual([]);
    expect(seqs(r.accept(delta(3)).released)).toEqual([3]);
    expect(r.counts.duplicates).toBe(1);
  });
});
