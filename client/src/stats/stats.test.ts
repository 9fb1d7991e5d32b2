import { describe, expect, it } from 'vitest';

import { METRIC_BY_KEY } from './definitions';
import { plan, roundOrder } from './rotation';
import { quantile, summarize, verdict } from './stats';

describe('summarize', () => {
  it('gives median, p90, min, max and count, interpolating between ranks', () => {
    expect(summarize([500, 100, 300, 200, 400])).toEqual({ count: 5, median: 300, p90: 460, min: 100, max: 500 });
    // An even count: the median lies halfway between the two middle values.
    expect(summarize([4, 1, 3, 2])).toMatchObject({ median: 2.5, p90: 3.7 });
  });

  it('ignores unknown values and has no summary without any', () => {
    expect(summarize([undefined, 7, null, NaN, Infinity])).toEqual({ count: 1, median: 7, p90: 7, min: 7, max: 7 });
    expect(summarize([undefined, null])).toBeUndefined();
    expect(quantile([], 0.5)).toBeNaN();
  });

  it('p90 of ten runs lies between the 9th and the 10th', () => {
    const s = summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])!;
    expect(s.p90).toBeCloseTo(9 + 0.1 * 91);
  });
});

describe('verdict', () => {
  const order = ['functionUrl', 'websocket', 'appsync'] as const;

  it('marks the lowest median best for times and gives every difference from it', () => {
    const v = verdict(METRIC_BY_KEY.ttftMs, order, {
      functionUrl: summarize([400, 420]),
      websocket: summarize([350, 370]),
      appsync: summarize([600]),
    });
    expect(v).toEqual({ best: 'websocket', diff: { functionUrl: 50, websocket: 0, appsync: 240 } });
  });

  it('marks the highest median best for rates', () => {
    const v = verdict(METRIC_BY_KEY.charsPerSecond, order, {
      functionUrl: summarize([100]),
      websocket: summarize([300]),
    });
    expect(v).toEqual({ best: 'websocket', diff: { functionUrl: -200, websocket: 0 } });
  });

  it('gives a tie to the first in panel order, and nothing without data', () => {
    expect(verdict(METRIC_BY_KEY.totalMs, order, { appsync: summarize([5]), websocket: summarize([5]) })?.best).toBe(
      'websocket',
    );
    expect(verdict(METRIC_BY_KEY.totalMs, order, {})).toBeUndefined();
  });
});

describe('rotation', () => {
  const names = ['F', 'W', 'A'];

  it('starts round r at index r mod n and wraps around', () => {
    expect(roundOrder(names, 0)).toEqual(['F', 'W', 'A']);
    expect(roundOrder(names, 1)).toEqual(['W', 'A', 'F']);
    expect(roundOrder(names, 2)).toEqual(['A', 'F', 'W']);
    expect(roundOrder(names, 3)).toEqual(['F', 'W', 'A']);
  });

  it('plans N rounds of every architecture, each first, second and third equally often', () => {
    const runs = plan(names, 6);
    expect(runs).toHaveLength(18);
    expect(runs.slice(0, 6).map((r) => r.transport).join('')).toBe('FWAWAF');
    expect(runs[4]).toEqual({ round: 1, position: 1, transport: 'A' });
    for (const name of names) {
      const positions = runs.filter((r) => r.transport === name).map((r) => r.position);
      expect([0, 1, 2].map((p) => positions.filter((x) => x === p).length)).toEqual([2, 2, 2]);
    }
  });

  it('refuses a number of runs outside 1..50, naming the limit', () => {
    expect(() => plan(names, 0)).toThrow('from 1 to 50, got 0');
    expect(() => plan(names, 51)).toThrow('from 1 to 50, got 51');
    expect(() => plan(names, 2.5)).toThrow(RangeError);
    expect(plan(names, 50)).toHaveLength(150);
  });
});
