import { describe, expect, it } from 'vitest';

import { alignSeries, charSeries, computeMetrics, emptyTrace, type Arrival, type RunTrace } from './metrics';

function trace(arrivals: Arrival[], extra: Partial<RunTrace> = {}): RunTrace {
  return { ...emptyTrace(1000), connectedAt: 1040, arrivals, ...extra };
}

const finished = trace(
  [
    { at: 1050, type: 'start', chars: 0 },
    { at: 1300, type: 'delta', chars: 10 },
    { at: 1400, type: 'delta', chars: 20 },
    { at: 1800, type: 'delta', chars: 20 },
    { at: 1810, type: 'done', chars: 0 },
  ],
  { outputTokens: 51, heartbeats: 2, duplicates: 1, gapsDetected: 1, gapsRepaired: 1, framesRepaired: 2 },
);

describe('computeMetrics', () => {
  it('measures setup, first token and total from the request time', () => {
    const m = computeMetrics(finished, 5000);
    expect(m.setupMs).toBe(40);
    expect(m.ttftMs).toBe(300);
    expect(m.totalMs).toBe(810);
    expect(m.elapsedMs).toBe(810); // frozen at the terminal frame, whatever the clock says
  });

  it('computes the character rate after the first token, leaving out the first delta', () => {
    // 40 characters after the first delta, over 500 ms from first to last delta.
    expect(computeMetrics(finished, 5000).charsPerSecond).toBeCloseTo(80);
  });

  it('computes tokens per second from the usage over first token to terminal frame', () => {
    // 51 tokens over 510 ms.
    expect(computeMetrics(finished, 5000).tokensPerSecond).toBeCloseTo(100);
  });

  it('finds the longest pause between frames after the first token', () => {
    expect(computeMetrics(finished, 5000).longestPauseMs).toBe(400);
  });

  it('counts characters, frames and the repair counters', () => {
    expect(computeMetrics(finished, 5000)).toMatchObject({
      chars: 50,
      frames: 5,
      heartbeats: 2,
      duplicates: 1,
      gapsDetected: 1,
      gapsRepaired: 1,
      framesRepaired: 2,
    });
  });

  it('leaves rates and totals unknown while they cannot be measured', () => {
    const m = computeMetrics(trace([{ at: 1050, type: 'start', chars: 0 }], { connectedAt: undefined }), 1500);
    expect(m.setupMs).toBeUndefined();
    expect(m.ttftMs).toBeUndefined();
    expect(m.charsPerSecond).toBeUndefined();
    expect(m.tokensPerSecond).toBeUndefined();
    expect(m.totalMs).toBeUndefined();
    expect(m.elapsedMs).toBe(500);
  });

  it('ignores empty deltas for the first token', () => {
    const m = computeMetrics(
      trace([
        { at: 1100, type: 'delta', chars: 0 },
        { at: 1200, type: 'delta', chars: 3 },
      ]),
      1300,
    );
    expect(m.ttftMs).toBe(200);
  });
});

describe('charSeries', () => {
  it('gives cumulative characters against time since the request, from the origin', () => {
    expect(charSeries(finished)).toEqual([
      [0, 0],
      [300, 10],
      [400, 30],
      [800, 50],
      [810, 50],
    ]);
  });
});

describe('alignSeries', () => {
  it('puts series on one x axis, carrying values forward and ending each at its last point', () => {
    const { x, ys } = alignSeries([
      [
        [0, 0],
        [10, 5],
      ],
      [
        [0, 0],
        [5, 2],
        [20, 9],
      ],
    ]);
    expect(x).toEqual([0, 5, 10, 20]);
    expect(ys).toEqual([
      [0, 0, 5, null],
      [0, 2, 2, 9],
    ]);
  });
});
