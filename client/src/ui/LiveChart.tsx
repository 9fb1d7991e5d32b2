import { useEffect, useMemo, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { alignSeries } from '../stream/metrics';
import { CHART_INK, useColorScheme } from './theme';

export interface ChartSeries {
  label: string;
  color: string;
  dash: number[];
  /** [ms since the request, characters so far] */
  points: Array<[number, number]>;
  /** Shown beside the line's name without hovering, e.g. "1,234 chars in 2.31 s". */
  summary: string;
}

const HEIGHT = 260;

/**
 * Characters received over time, one line per architecture on one time axis (seconds
 * since each run's request). Step lines: the count jumps when a frame arrives and stays
 * flat until the next one, so sparse frames never look like a steady ramp.
 */
export function LiveChart({ series }: { series: ChartSeries[] }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const scheme = useColorScheme();
  const shape = series.map((s) => `${s.label}:${s.color}`).join('|') + scheme;

  const data = useMemo(() => {
    const { x, ys } = alignSeries(series.map((s) => s.points));
    return [x.map((t) => t / 1000), ...ys] as uPlot.AlignedData;
  }, [series]);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const ink = CHART_INK[scheme];
    const stepped = uPlot.paths.stepped!({ align: 1 });
    const opts: uPlot.Options = {
      width: Math.max(260, el.clientWidth),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [
        { label: 'seconds since the request', stroke: ink.axis, grid: { stroke: ink.grid }, ticks: { stroke: ink.grid } },
        { label: 'characters received', stroke: ink.axis, grid: { stroke: ink.grid }, ticks: { stroke: ink.grid }, size: 60 },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          paths: stepped,
          points: { show: false },
        })),
      ],
      // The legend below is ours: it shows every line's figures without hovering.
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
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
    // Rebuilt only when the set of lines or the colour scheme changes; data updates use setData.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return (
    <figure className="chart">
      <figcaption id="chart-caption">Characters received over time (last run of each)</figcaption>
      <div ref={host} role="img" aria-labelledby="chart-caption chart-legend" data-testid="chart" />
      <ul className="legend" id="chart-legend" data-testid="chart-legend">
        {series.map((s) => (
          <li key={s.label}>
            <LegendMark color={s.color} dash={s.dash} />
            <strong>{s.label}</strong> <span>{s.summary}</span>
          </li>
        ))}
      </ul>
    </figure>
  );
}

export function LegendMark({ color, dash }: { color: string; dash: number[] }) {
  return (
    <svg width="28" height="10" aria-hidden="true" className="legend-mark">
      <line x1="0" y1="5" x2="28" y2="5" stroke={color} strokeWidth="3" strokeDasharray={dash.join(' ')} />
    </svg>
  );
}
