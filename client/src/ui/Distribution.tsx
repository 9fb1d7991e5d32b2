import { useEffect, useMemo, useRef } from 'react';
import uPlot from 'uplot';

import type { MetricDef } from '../stats/definitions';
import type { Summary } from '../stats/stats';
import { formatValue } from './format';
import { LegendMark } from './LiveChart';
import { CHART_INK, useColorScheme } from './theme';

export interface StripSeries {
  label: string;
  color: string;
  dash: number[];
  values: number[];
  summary: Summary | undefined;
}

const HEIGHT = 260;

/** A spread of up to ±0.22 around each architecture's position, the same on every render. */
function jitter(j: number): number {
  return (((j * 0.6180339887) % 1) - 0.5) * 0.44;
}

/**
 * Strip plot: every run of one metric as a dot, one column per architecture, with the
 * median (solid bar) and p90 (dashed bar) drawn across each column.
 */
export function Distribution({ metric, series }: { metric: MetricDef; series: StripSeries[] }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const summaries = useRef(series.map((s) => s.summary));
  summaries.current = series.map((s) => s.summary);
  const scheme = useColorScheme();
  const shape = series.map((s) => `${s.label}:${s.color}`).join('|') + scheme + metric.key;

  const data = useMemo(() => {
    const xs: number[] = [];
    const ys: Array<Array<number | null>> = series.map(() => []);
    series.forEach((s, i) => {
      const points = s.values.map((v, j) => [i + jitter(j), v] as const).sort((a, b) => a[0] - b[0]);
      for (const [x, v] of points) {
        xs.push(x);
        ys.forEach((col, k) => col.push(k === i ? v : null));
      }
    });
    return [xs, ...ys] as uPlot.AlignedData;
  }, [series]);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const ink = CHART_INK[scheme];
    const titles = series.map((s) => s.label);
    const bars = (u: uPlot) => {
      const ctx = u.ctx;
      summaries.current.forEach((sum, i) => {
        if (!sum) return;
        const x0 = u.valToPos(i - 0.32, 'x', true);
        const x1 = u.valToPos(i + 0.32, 'x', true);
        for (const [value, dash, width] of [
          [sum.median, [], 3],
          [sum.p90, [6, 4], 1.5],
        ] as const) {
          const y = u.valToPos(value, 'y', true);
          ctx.save();
          ctx.strokeStyle = series[i]!.color;
          ctx.lineWidth = width * devicePixelRatio;
          ctx.setLineDash(dash.map((d) => d * devicePixelRatio));
          ctx.beginPath();
          ctx.moveTo(x0, y);
          ctx.lineTo(x1, y);
          ctx.stroke();
          ctx.restore();
        }
      });
    };
    const opts: uPlot.Options = {
      width: Math.max(260, el.clientWidth),
      height: HEIGHT,
      scales: { x: { time: false, range: [-0.5, Math.max(1, series.length) - 0.5] }, y: { range: (_u, min, max) => [Math.min(0, min), max * 1.08 || 1] } },
      axes: [
        {
          stroke: ink.axis,
          grid: { show: false },
          ticks: { stroke: ink.grid },
          splits: () => titles.map((_, i) => i),
          values: (_u, splits) => splits.map((v) => titles[v] ?? ''),
        },
        {
          label: metric.unit === 'ms' ? `${metric.label} (ms)` : `${metric.label}`,
          stroke: ink.axis,
          grid: { stroke: ink.grid },
          ticks: { stroke: ink.grid },
          size: 64,
        },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          fill: s.color,
          paths: () => null,
          points: { show: true, size: 8, width: 1, stroke: s.color, fill: s.color },
        })),
      ],
      legend: { show: false },
      cursor: { show: false },
      hooks: { draw: [bars] },
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(260, el.clientWidth), height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return (
    <figure className="chart" data-testid="distribution">
      <figcaption id="dist-caption">
        {metric.label}: every run (dots), median (solid bar), p90 (dashed bar)
      </figcaption>
      <div ref={host} role="img" aria-labelledby="dist-caption dist-legend" data-testid="distribution-plot" />
      <ul className="legend" id="dist-legend">
        {series.map((s) => (
          <li key={s.label}>
            <LegendMark color={s.color} dash={[]} />
            <strong>{s.label}</strong>{' '}
            <span>
              {s.summary
                ? `median ${formatValue(metric, s.summary.median)}, p90 ${formatValue(metric, s.summary.p90)} (${s.summary.count} ${s.summary.count === 1 ? 'run' : 'runs'})`
                : 'no runs yet'}
            </span>
          </li>
        ))}
      </ul>
    </figure>
  );
}
