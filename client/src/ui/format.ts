import type { MetricDef } from '../stats/definitions';

export function ms(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  const sign = value < 0 ? '−' : '';
  const a = Math.abs(value);
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  return `${sign}${(a / 1000).toFixed(2)} s`;
}

export function rate(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

export function count(value: number): string {
  return value.toLocaleString('en-US');
}

export function formatValue(metric: Pick<MetricDef, 'unit'>, value: number | undefined): string {
  return metric.unit === 'ms' ? ms(value) : rate(value);
}

/** A difference from the best, signed: "+81 ms", "−12.5 /s"; "best" for zero. */
export function formatDiff(metric: Pick<MetricDef, 'unit'>, diff: number | undefined): string {
  if (diff === undefined || !Number.isFinite(diff)) return '';
  if (diff === 0) return 'best';
  const sign = diff > 0 ? '+' : '−';
  const a = Math.abs(diff);
  return metric.unit === 'ms' ? `${sign}${ms(a)}` : `${sign}${rate(a)} /s`;
}
