import { METRIC_BY_KEY, type MetricKey } from '../stats/definitions';
import { summarize, verdict } from '../stats/stats';
import type { Metrics } from '../stream/metrics';
import type { RunState } from '../stream/runner';
import type { TransportInfo } from '../transports';
import type { TransportName } from '../transports/types';
import { formatDiff, formatValue } from './format';
import { MetricName } from './HelpTip';
import { statusLabel } from './Panel';

export interface Row {
  info: TransportInfo;
  state: RunState | undefined;
  metrics: Metrics | undefined;
}

export const SUMMARY_METRICS: readonly MetricKey[] = [
  'setupMs',
  'ttftMs',
  'modelFirstTokenMs',
  'overheadMs',
  'streamingLagMs',
  'completionDelayMs',
  'totalMs',
  'charsPerSecond',
  'tokensPerSecond',
];

/** Each architecture's last run: every metric with the best marked and the others' differences. */
export function SummaryTable({ rows }: { rows: Row[] }) {
  const order = rows.map((r) => r.info.name);
  const verdicts = SUMMARY_METRICS.map((key) => {
    const sums: Partial<Record<TransportName, ReturnType<typeof summarize>>> = {};
    for (const r of rows) {
      // Only finished answers compete (a run still streaming has no total yet).
      if (r.state?.status === 'done' && r.metrics) sums[r.info.name] = summarize([r.metrics[key]]);
    }
    return verdict(METRIC_BY_KEY[key], order, sums);
  });
  return (
    <div className="table-wrap" tabIndex={0} role="region" aria-label="Last run of each architecture">
      <table className="summary" data-testid="summary">
        <caption>Last run of each architecture: ★ best, others' difference from it</caption>
        <thead>
          <tr>
            <th scope="col">Architecture</th>
            <th scope="col">Status</th>
            {SUMMARY_METRICS.map((key) => (
              <th scope="col" key={key}>
                <MetricName metric={METRIC_BY_KEY[key]} />
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map(({ info, state, metrics: m }) => (
            <tr key={info.name} data-transport={info.name}>
              <th scope="row">{info.title}</th>
              <td className="status-cell">{statusLabel(state)}</td>
              {SUMMARY_METRICS.map((key, i) => {
                const def = METRIC_BY_KEY[key];
                const v = verdicts[i];
                const best = v?.best === info.name;
                const diff = v?.diff[info.name];
                return (
                  <td key={key} data-metric={key} className={best ? 'best' : undefined}>
                    {formatValue(def, m?.[key])}
                    {best && <span className="badge">★ best</span>}
                    {!best && diff !== undefined && <span className="diff">{formatDiff(def, diff)}</span>}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
