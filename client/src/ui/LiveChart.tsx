import { useEffect, useMemo, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { alignSeries } from '../stream/metrics';

export interface ChartSeries {
  label: string;
  color: string;
  dash: number[];
  /** [ms since the request, characters so far] */
  points: Array<[number, number]>;
}

const HEIGHT = 260;

/**
 * Characters received over time, one line per architecture on one time axis (seconds
 * since each run's request; "Run all" starts them together).
 */
export function LiveChart({ series }: { series: ChartSeries[] }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const labels = series.map((s) => s.label).join('|');

  const data = useMemo(() => {
    const { x, ys } = alignSeries(series.map((s) => s.points));
    return [x.map((t) => t / 1000), ...ys] as uPlot.AlignedData;
  }, [series]);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(280, el.clientWidth),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [
        { label: 'seconds since the request', stroke: '#333', grid: { stroke: '#e3e3e3' } },
        { label: 'characters received', stroke: '#333', grid: { stroke: '#e3e3e3' }, size: 60 },
      ],
      series: [
        { label: 'time', value: (_u, v) => (v == null ? '–' : `${v.toFixed(2)} s`) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => (v == null ? '–' : `${v} chars`),
        })),
      ],
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(280, el.clientWidth), height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // The plot is rebuilt only when the set of lines changes; data updates use setData.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [labels]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return (
    <figure className="chart">
      <figcaption id="chart-caption">Characters received over time</figcaption>
      <div ref={host} role="img" aria-labelledby="chart-caption" data-testid="chart" />
    </figure>
  );
}
