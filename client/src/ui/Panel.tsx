import { METRIC_BY_KEY, MIN_RATE_WINDOW_MS } from '../stats/definitions';
import type { Metrics } from '../stream/metrics';
import { FINISHED, type RunState } from '../stream/runner';
import type { TransportInfo } from '../transports';
import type { ChatMessage } from '../transports/types';
import { count, ms, rate } from './format';
import { Markdown } from './Markdown';

export function statusLabel(state: RunState | undefined): string {
  if (!state) return 'idle';
  if (state.status === 'done') return state.stopReason ? `done (${state.stopReason})` : 'done';
  return state.status;
}

interface Props {
  info: TransportInfo;
  color: string;
  state: RunState | undefined;
  metrics: Metrics | undefined;
  canRun: boolean;
  /** Earlier turns to show above the answer (conversation mode). */
  transcript: ChatMessage[];
  onRun: () => void;
  onStop: () => void;
}

export function Panel({ info, color, state, metrics, canRun, transcript, onRun, onStop }: Props) {
  const running = state !== undefined && !FINISHED.has(state.status);
  const m = metrics;
  const titleId = `panel-${info.name}-title`;
  return (
    <section className="panel" aria-labelledby={titleId} data-transport={info.name}>
      <header className="panel-head">
        <h2 id={titleId}>
          <span className="swatch" style={{ background: color }} aria-hidden="true" />
          {info.title}
        </h2>
        <p className="path">{info.path}</p>
      </header>
      <div className="panel-status">
        <span className={`status status-${state?.status ?? 'idle'}`} role="status" data-testid="status">
          {statusLabel(state)}
        </span>
        {state?.detail && <span className="detail">{state.detail}</span>}
      </div>
      <div className="panel-actions">
        <button type="button" onClick={onRun} disabled={!canRun || running}>
          Run {info.title}
        </button>
        <button
          type="button"
          className="stop"
          onClick={onStop}
          disabled={!running || state?.status === 'cancelling'}
        >
          Stop {info.title}
        </button>
      </div>
      {state?.error && (
        <p className="error" role="alert" data-testid="error">
          <strong>{state.error.code}</strong>: {state.error.message}
        </p>
      )}
      <dl className="metrics" aria-label={`${info.title} metrics`}>
        <Metric name="setup" label="Connection setup" value={ms(m?.setupMs)} />
        <Metric name="ttft" label="First token" value={ms(m?.ttftMs)} />
        <Metric name="model-ttft" label="Model first token" value={ms(m?.modelFirstTokenMs)} />
        <Metric name="overhead" label="Overhead to first token" value={ms(m?.overheadMs)} />
        <Metric name="lag" label="Streaming lag" value={ms(m?.streamingLagMs)} />
        <Metric name="completion" label="Completion delay" value={ms(m?.completionDelayMs)} />
        <Metric name="chars-per-s" label="Chars / s" value={rate(m?.charsPerSecond)} hint={rateHint(m, m?.charsPerSecond)} />
        <Metric name="tokens-per-s" label="Tokens / s" value={rate(m?.tokensPerSecond)} hint={rateHint(m, m?.tokensPerSecond)} />
        <Metric name="total" label={running ? 'Elapsed' : 'Total'} value={ms(running ? m?.elapsedMs : m?.totalMs)} />
        <Metric name="frames" label="Frames" value={m ? count(m.frames) : '–'} />
        <Metric name="chars" label="Characters" value={m ? count(m.chars) : '–'} />
        <Metric
          name="gaps"
          label="Gaps repaired"
          value={m ? gapsText(m) : '–'}
        />
        <Metric name="duplicates" label="Duplicates dropped" value={m ? count(m.duplicates) : '–'} />
        <Metric name="heartbeats" label="Heartbeats" value={m ? count(m.heartbeats) : '–'} />
        <Metric name="pause" label="Longest pause" value={ms(m?.longestPauseMs)} />
        <Metric name="resumes" label="Resumes" value={m ? count(m.resumes) : '–'} />
      </dl>
      {/* Focusable: the pane scrolls, and keyboard users must be able to scroll it. */}
      <div
        className="answer"
        tabIndex={0}
        role="region"
        aria-label={`${info.title} answer`}
        aria-live="off"
        aria-busy={running}
      >
        {transcript.map((msg, i) => (
          <div key={i} className={`turn turn-${msg.role}`} data-testid="turn">
            <p className="turn-role">{msg.role === 'user' ? 'You' : 'Model'}</p>
            {msg.role === 'user' ? <p className="turn-text">{msg.content}</p> : <Markdown text={msg.content} />}
          </div>
        ))}
        {state?.reasoning && (
          <details className="reasoning" data-testid="reasoning">
            <summary>Reasoning ({state.reasoning.length.toLocaleString('en-US')} characters)</summary>
            <p>{state.reasoning}</p>
          </details>
        )}
        <div data-testid="answer">
          {state ? <Markdown text={state.text} /> : transcript.length === 0 && <p className="placeholder">No answer yet.</p>}
        </div>
      </div>
    </section>
  );
}

/** "repaired / detected", with the frames fetched from the store to repair them. */
function gapsText(m: Metrics): string {
  const frames = m.framesRepaired === 1 ? '1 frame' : `${m.framesRepaired} frames`;
  return `${m.gapsRepaired} / ${m.gapsDetected}${m.framesRepaired ? ` (${frames})` : ''}`;
}

/** What each panel figure measures (the timing ones share the tables' definitions). */
const PANEL_DEFINITIONS: Record<string, string> = {
  setup: METRIC_BY_KEY.setupMs.definition,
  ttft: METRIC_BY_KEY.ttftMs.definition,
  'model-ttft': METRIC_BY_KEY.modelFirstTokenMs.definition,
  overhead: METRIC_BY_KEY.overheadMs.definition,
  lag: METRIC_BY_KEY.streamingLagMs.definition,
  completion: METRIC_BY_KEY.completionDelayMs.definition,
  'chars-per-s': METRIC_BY_KEY.charsPerSecond.definition,
  'tokens-per-s': METRIC_BY_KEY.tokensPerSecond.definition,
  total: 'Request sent → terminal frame arrived (while running: the time so far).',
  pause: METRIC_BY_KEY.longestPauseMs.definition,
  frames: 'Transcript frames released in seq order: start, deltas, the terminal frame.',
  chars: 'Characters (code points) of all deltas.',
  gaps: 'Holes in the seq order: repaired / detected, and the frames read from the stream store to fill them.',
  duplicates: 'Frames that arrived twice (a replay after a resume, a store read racing live frames), shown once.',
  heartbeats: 'Keep-alives during silence: SSE comments, WebSocket and AppSync heartbeat frames.',
  resumes: 'New connections after a drop or a reload, each resuming from the last seq shown.',
};

/** Why a rate is not shown yet: its window is still shorter than the minimum. */
function rateHint(m: Metrics | undefined, value: number | undefined): string | undefined {
  if (!m || value !== undefined || m.ttftMs === undefined) return undefined;
  return `Shown once at least ${MIN_RATE_WINDOW_MS / 1000} s lies between the first text and the end.`;
}

function Metric({ name, label, value, hint }: { name: string; label: string; value: string; hint?: string | undefined }) {
  const definition = PANEL_DEFINITIONS[name];
  return (
    <div className="metric" data-metric={name}>
      <dt>
        {definition ? (
          <details className="help">
            <summary>{label}</summary>
            <p>{definition}</p>
          </details>
        ) : (
          label
        )}
      </dt>
      <dd title={hint}>{value}</dd>
    </div>
  );
}
