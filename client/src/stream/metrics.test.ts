import { describe, expect, it } from 'vitest';

import { MIN_RATE_WINDOW_MS } from '../stats/definitions';
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

  // A stream long enough for rates: first text at 1300, terminal at 2800 (a 1.5 s window).
  const long = trace(
    [
      { at: 1050, type: 'start', chars: 0 },
      { at: 1300, type: 'delta', chars: 10 },
      { at: 1400, type: 'delta', chars: 20 },
      { at: 2700, type: 'delta', chars: 40 },
      { at: 2800, type: 'done', chars: 0 },
    ],
    { outputTokens: 30, modelMetrics: { modelFirstTokenMs: 120, modelLatencyMs: 1420 } },
  );

  it('computes the character rate over first text to terminal frame, leaving out the first delta', () => {
    // 60 characters after the first delta over the 1500 ms window.
    expect(computeMetrics(long, 9000).charsPerSecond).toBeCloseTo(40);
  });

  it('computes tokens per second from the usage over the same window', () => {
    expect(computeMetrics(long, 9000).tokensPerSecond).toBeCloseTo(20);
  });

  it('hides rates while the window is shorter than the minimum', () => {
    // 510 ms from the first text to the terminal frame: too short for an honest rate.
    const m = computeMetrics(finished, 5000);
    expect(m.charsPerSecond).toBeUndefined();
    expect(m.tokensPerSecond).toBeUndefined();
    // While streaming the window runs to now: hidden at 999 ms, shown from 1000 ms.
    const live = trace(long.arrivals.slice(0, 3));
    expect(computeMetrics(live, 1300 + MIN_RATE_WINDOW_MS - 1).charsPerSecond).toBeUndefined();
    expect(computeMetrics(live, 1300 + MIN_RATE_WINDOW_MS).charsPerSecond).toBeCloseTo(20);
    expect(computeMetrics(live, 2300).tokensPerSecond).toBeUndefined(); // no usage before done
  });

  it("breaks the time down with the model's own figures from the terminal frame", () => {
    const m = computeMetrics(long, 9000);
    expect(m.modelFirstTokenMs).toBe(120);
    expect(m.overheadMs).toBe(300 - 120);
    expect(m.streamingMs).toBe(1400); // 1300 → 2700
    // The model wrote from 120 to 1420 ms (1300 ms); delivery took 1400 ms.
    expect(m.streamingLagMs).toBe(100);
    expect(m.completionDelayMs).toBe(100); // last text 2700 → terminal 2800
    expect(m.totalMs).toBe(1800);
  });

  it('leaves the breakdown unknown without the model figures', () => {
    const m = computeMetrics(finished, 5000);
    expect(m.modelFirstTokenMs).toBeUndefined();
    expect(m.overheadMs).toBeUndefined();
    expect(m.streamingLagMs).toBeUndefined();
    expect(m.streamingMs).toBe(500);
    expect(m.completionDelayMs).toBe(10);
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
