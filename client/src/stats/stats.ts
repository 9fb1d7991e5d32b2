/**
 * Statistics over repeated runs: median, p90, min, max and count per architecture and
 * metric, and the verdict (the best architecture per metric and every other one's
 * difference from it).
 */

import type { MetricDef } from './definitions';

export interface Summary {
  count: number;
  median: number;
  p90: number;
  min: number;
  max: number;
}

/**
 * The q-quantile (0..1) of sorted values, interpolating linearly between the two nearest
 * ranks (the "type 7" definition of R and NumPy's default): p90 of 10 runs lies between
 * the 9th and 10th fastest.
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** The summary of the finite values; undefined when there are none. */
export function summarize(values: ReadonlyArray<number | undefined | null>): Summary | undefined {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  return { count: v.length, median: quantile(v, 0.5), p90: quantile(v, 0.9), min: v[0]!, max: v[v.length - 1]! };
}

export interface Verdict<K extends string> {
  /** The architecture with the best median; ties go to the first in the given order. */
  best: K;
  /** Each architecture's median minus the best median (0 for the best; sign as measured). */
  diff: Partial<Record<K, number>>;
}

/** The best median of one metric among the architectures that have a summary. */
export function verdict<K extends string>(
  metric: Pick<MetricDef, 'better'>,
  order: readonly K[],
  summaries: Partial<Record<K, Summary | undefined>>,
): Verdict<K> | undefined {
  let best: K | undefined;
  for (const k of order) {
    const s = summaries[k];
    if (!s) continue;
    const b = best === undefined ? undefined : summaries[best]!;
    if (!b || (metric.better === 'lower' ? s.median < b.median : s.median > b.median)) best = k;
  }
  if (best === undefined) return undefined;
  const bestMedian = summaries[best]!.median;
  const diff: Partial<Record<K, number>> = {};
  for (const k of order) {
    const s = summaries[k];
    if (s) diff[k] = s.median - bestMedian;
  }
  return { best, diff };
}
