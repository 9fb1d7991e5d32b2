import { METRIC_BY_KEY, METRICS, type MetricKey } from '../stats/definitions';
import type { RunRecord } from '../stats/runLog';
import { summarize, verdict, type Summary } from '../stats/stats';
import type { TransportInfo } from '../transports';
import type { TransportName } from '../transports/types';
import { formatDiff, formatValue } from './format';
import { MetricName } from './HelpTip';

export type SummaryGrid = Record<MetricKey, Partial<Record<TransportName, Summary | undefined>>>;

export function summaryGrid(runs: readonly RunRecord[], order: readonly TransportName[]): SummaryGrid {
  const grid = {} as SummaryGrid;
  for (const def of METRICS) {
    grid[def.key] = {};
    for (const name of order) grid[def.key][name] = summarize(runs.filter((r) => r.transport === name).map((r) => r[def.key]));
  }
  return grid;
}

const VERDICT_METRICS: readonly MetricKey[] = ['ttftMs', 'overheadMs', 'totalMs', 'streamingLagMs', 'setupMs'];

/** One sentence per headline metric: who is best, by how much the others trail. */
export function VerdictList({ grid, infos }: { grid: SummaryGrid; infos: readonly TransportInfo[] }) {
  const order = infos.map((i) => i.name);
  const title = (n: TransportName) => infos.find((i) => i.name === n)?.title ?? n;
  const items = VERDICT_METRICS.flatMap((key) => {
    const def = METRIC_BY_KEY[key];
    const v = verdict(def, order, grid[key]);
    if (!v) return [];
    const others = order
      .filter((n) => n !== v.best && v.diff[n] !== undefined)
      .map((n) => `${title(n)} ${formatDiff(def, v.diff[n])}`);
    return [
      <li key={key} data-metric={key}>
        <strong>{def.label}</strong>: {title(v.best)} is best (median {formatValue(def, grid[key][v.best]?.median)})
        {others.length > 0 && `; ${others.join(', ')}`}.
      </li>,
    ];
  });
  if (items.length === 0) return null;
  return (
    <ul className="verdict" aria-label="Verdict" data-testid="verdict">
      {items}
    </ul>
  );
}

/** Per metric and architecture over every completed run: median (★ best, others' difference), p90, min, max, count. */
export function StatsTable({ grid, infos }: { grid: SummaryGrid; infos: readonly TransportInfo[] }) {
  const order = infos.map((i) => i.name);
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label="Statistics over all runs">
      <table className="summary stats" data-testid="stats">
        <caption>Statistics over every completed run: ★ best median, others' difference from it</caption>
        <thead>
          <tr>
            <th scope="col">Metric</th>
            <th scope="col">Architecture</th>
            <th scope="col">Median</th>
            <th scope="col">vs best</th>
            <th scope="col">p90</th>
            <th scope="col">Min</th>
            <th scope="col">Max</th>
            <th scope="col">Count</th>
          </tr>
        </thead>
        {METRICS.map((def) => {
          const v = verdict(def, order, grid[def.key]);
          return (
            <tbody key={def.key} data-metric={def.key}>
              {infos.map((info, i) => {
                const s = grid[def.key][info.name];
                const best = v?.best === info.name;
                return (
                  <tr key={info.name} data-transport={info.name} className={best ? 'best' : undefined}>
                    {i === 0 && (
                      <th scope="rowgroup" rowSpan={infos.length} className="metric-name">
                        <MetricName metric={def} />
                      </th>
                    )}
                    <th scope="row">{info.title}</th>
                    <td data-stat="median">
                      {formatValue(def, s?.median)}
                      {best && <span className="badge"> ★</span>}
                    </td>
                    <td data-stat="diff">{s ? formatDiff(def, v?.diff[info.name]) : ''}</td>
                    <td data-stat="p90">{formatValue(def, s?.p90)}</td>
                    <td data-stat="min">{formatValue(def, s?.min)}</td>
                    <td data-stat="max">{formatValue(def, s?.max)}</td>
                    <td data-stat="count">{s?.count ?? 0}</td>
                  </tr>
                );
              })}
            </tbody>
          );
        })}
      </table>
    </div>
  );
}
