import type { Metrics } from '../stream/metrics';
import type { RunState } from '../stream/runner';
import type { TransportInfo } from '../transports';
import { count, ms, rate } from './format';
import { statusLabel } from './Panel';

export interface Row {
  info: TransportInfo;
  state: RunState | undefined;
  metrics: Metrics | undefined;
}

export function SummaryTable({ rows }: { rows: Row[] }) {
  return (
    <div className="table-wrap">
      <table className="summary" data-testid="summary">
        <caption>Summary of each architecture's last run</caption>
        <thead>
          <tr>
            <th scope="col">Architecture</th>
            <th scope="col">Status</th>
            <th scope="col">Setup</th>
            <th scope="col">First token</th>
            <th scope="col">Chars / s</th>
            <th scope="col">Tokens / s</th>
            <th scope="col">Total</th>
            <th scope="col">Longest pause</th>
            <th scope="col">Frames</th>
            <th scope="col">Gaps repaired</th>
            <th scope="col">Duplicates</th>
            <th scope="col">Heartbeats</th>
            <th scope="col">Resumes</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(({ info, state, metrics: m }) => (
            <tr key={info.name} data-transport={info.name}>
              <th scope="row">{info.title}</th>
              <td>{statusLabel(state)}</td>
              <td>{ms(m?.setupMs)}</td>
              <td>{ms(m?.ttftMs)}</td>
              <td>{rate(m?.charsPerSecond)}</td>
              <td>{rate(m?.tokensPerSecond)}</td>
              <td>{ms(m?.totalMs)}</td>
              <td>{ms(m?.longestPauseMs)}</td>
              <td>{m ? count(m.frames) : '–'}</td>
              <td>{m ? `${m.gapsRepaired} / ${m.gapsDetected}` : '–'}</td>
              <td>{m ? count(m.duplicates) : '–'}</td>
              <td>{m ? count(m.heartbeats) : '–'}</td>
              <td>{m ? count(m.resumes) : '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
