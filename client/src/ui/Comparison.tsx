import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from 'react';

import type { AppConfig } from '../config';
import { charSeries, computeMetrics, now, type Metrics } from '../stream/metrics';
import { FINISHED, StreamRunner, type RunState } from '../stream/runner';
import { SavedRuns } from '../stream/savedRuns';
import { TRANSPORTS, uuid } from '../transports';
import type { RestApi } from '../transports/rest';
import type { ChatMessage, StartRequest, Transport, TransportName } from '../transports/types';
import { LiveChart, type ChartSeries } from './LiveChart';
import { Panel } from './Panel';
import { SummaryTable } from './SummaryTable';

// Colour-blind-safe colours (Okabe-Ito) plus a dash pattern per line.
const STYLE: Record<TransportName, { color: string; dash: number[] }> = {
  functionUrl: { color: '#0072B2', dash: [] },
  websocket: { color: '#D55E00', dash: [8, 4] },
  appsync: { color: '#009E73', dash: [2, 3] },
};

type States = Partial<Record<TransportName, RunState>>;
type History = Partial<Record<TransportName, ChatMessage[]>>;

interface Props {
  config: AppConfig;
  rest: RestApi;
  transports: Record<TransportName, Transport>;
}

export function Comparison({ config, rest, transports }: Props) {
  const [prompt, setPrompt] = useState('What is serverless streaming?');
  const [system, setSystem] = useState('');
  const [maxTokens, setMaxTokens] = useState(String(config.limits.defaultMaxTokens));
  const [temperature, setTemperature] = useState('');
  const [conversation, setConversation] = useState(false);
  const [history, setHistory] = useState<History>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [states, setStates] = useState<States>({});
  const [, setClock] = useState(0);

  const saved = useMemo(() => new SavedRuns(), []);
  const runners = useRef(new Map<TransportName, StreamRunner>());
  const pending = useRef<States>({});
  const frame = useRef<number | null>(null);
  const recorded = useRef(new Set<string>());

  // Batches runner updates into one render per animation frame.
  const onChange = useCallback((state: RunState) => {
    pending.current[state.transport] = state;
    if (FINISHED.has(state.status) && !recorded.current.has(state.streamId)) {
      recorded.current.add(state.streamId);
      recordTurn(state);
    }
    if (frame.current === null) {
      frame.current = requestAnimationFrame(() => {
        frame.current = null;
        const batch = pending.current;
        pending.current = {};
        setStates((prev) => ({ ...prev, ...batch }));
      });
    }
  }, []);

  // Conversation mode: a finished answer joins its architecture's history.
  function recordTurn(state: RunState) {
    const messages = state.request.messages;
    if (!messages || state.status === 'error' || !state.text.trim()) return;
    const turn: ChatMessage[] = [...messages, { role: 'assistant', content: state.text }];
    setHistory((h) => ({ ...h, [state.transport]: turn }));
  }

  const options = useMemo(() => ({ heartbeatIntervalS: config.heartbeatIntervalS }), [config]);

  // After a reload: resume the streams that were running.
  useEffect(() => {
    const map = runners.current;
    for (const run of saved.all()) {
      if (map.has(run.transport)) continue;
      map.set(run.transport, StreamRunner.resume(transports[run.transport], rest, saved, run, onChange, options));
    }
    const persist = () => map.forEach((r) => r.persist());
    window.addEventListener('pagehide', persist);
    return () => {
      // Unmounted: signed out. The streams are no longer followed here, nor resumed later.
      window.removeEventListener('pagehide', persist);
      map.forEach((r) => r.dispose());
      map.clear();
      saved.clear();
    };
  }, [saved, transports, rest, onChange, options]);

  const anyRunning = Object.values(states).some((s) => s && !FINISHED.has(s.status));

  // Elapsed times tick while something runs.
  useEffect(() => {
    if (!anyRunning) return;
    const id = setInterval(() => setClock((c) => c + 1), 200);
    return () => clearInterval(id);
  }, [anyRunning]);

  function buildRequest(name: TransportName): StartRequest | string {
    const text = prompt.trim();
    if (!text) return 'Enter a prompt.';
    const max = Number(maxTokens);
    if (!Number.isInteger(max) || max < 1 || max > config.limits.maxTokens) {
      return `Max tokens must be a whole number from 1 to ${config.limits.maxTokens}.`;
    }
    const request: StartRequest = { streamId: uuid(), maxTokens: max };
    if (temperature.trim() !== '') {
      const t = Number(temperature);
      if (!Number.isFinite(t) || t < 0 || t > 1) return 'Temperature must be a number from 0 to 1.';
      request.temperature = t;
    }
    if (system.trim()) request.system = system;
    if (conversation) {
      let messages: ChatMessage[] = [...(history[name] ?? []), { role: 'user', content: text }];
      // Keep within the server's limit, dropping the oldest exchanges first.
      while (messages.length > config.limits.maxMessages && messages.length > 2) messages = messages.slice(2);
      request.messages = messages;
    } else {
      request.prompt = text;
    }
    return request;
  }

  function start(names: TransportName[]) {
    const requestedAt = now();
    const requests: Array<[TransportName, StartRequest]> = [];
    for (const name of names) {
      const request = buildRequest(name);
      if (typeof request === 'string') {
        setFormError(request);
        return;
      }
      requests.push([name, request]);
    }
    setFormError(null);
    for (const [name, request] of requests) {
      runners.current.get(name)?.dispose();
      const runner = StreamRunner.start(transports[name], rest, saved, request, onChange, options, requestedAt);
      runners.current.set(name, runner);
    }
  }

  function stop(name: TransportName) {
    void runners.current.get(name)?.cancel();
  }

  function runAll(e: FormEvent) {
    e.preventDefault();
    start(TRANSPORTS.map((t) => t.name));
  }

  const at = now();
  const metrics: Partial<Record<TransportName, Metrics>> = {};
  for (const t of TRANSPORTS) {
    const s = states[t.name];
    if (s) metrics[t.name] = computeMetrics(s.trace, at);
  }

  const series: ChartSeries[] = useMemo(
    () =>
      TRANSPORTS.filter((t) => states[t.name]).map((t) => ({
        label: t.title,
        ...STYLE[t.name],
        points: charSeries(states[t.name]!.trace),
      })),
    [states],
  );

  const turns = Math.max(0, ...TRANSPORTS.map((t) => (history[t.name]?.length ?? 0) / 2));

  return (
    <>
      <form className="prompt" onSubmit={runAll} aria-label="Prompt and options">
        <label htmlFor="prompt">Prompt</label>
        <textarea
          id="prompt"
          rows={3}
          value={prompt}
          maxLength={config.limits.maxInputChars}
          onChange={(e) => setPrompt(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) runAll(e);
          }}
        />
        <div className="options">
          <div className="field wide">
            <label htmlFor="system">System prompt</label>
            <input id="system" value={system} onChange={(e) => setSystem(e.target.value)} placeholder="optional" />
          </div>
          <div className="field">
            <label htmlFor="max-tokens">Max tokens</label>
            <input
              id="max-tokens"
              type="number"
              inputMode="numeric"
              min={1}
              max={config.limits.maxTokens}
              value={maxTokens}
              onChange={(e) => setMaxTokens(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="temperature">Temperature</label>
            <input
              id="temperature"
              type="number"
              inputMode="decimal"
              min={0}
              max={1}
              step={0.1}
              placeholder="model default"
              value={temperature}
              onChange={(e) => setTemperature(e.target.value)}
            />
          </div>
          <div className="field check">
            <input
              id="conversation"
              type="checkbox"
              checked={conversation}
              onChange={(e) => setConversation(e.target.checked)}
            />
            <label htmlFor="conversation">Conversation mode (send the history as messages)</label>
          </div>
        </div>
        {formError && (
          <p className="error" role="alert">
            {formError}
          </p>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={anyRunning}>
            Run all
          </button>
          <button
            type="button"
            disabled={!anyRunning}
            onClick={() => TRANSPORTS.forEach((t) => stop(t.name))}
          >
            Stop all
          </button>
          {conversation && (
            <span className="history">
              {turns} earlier {turns === 1 ? 'exchange' : 'exchanges'}{' '}
              <button type="button" className="link" onClick={() => setHistory({})} disabled={turns === 0}>
                Clear conversation
              </button>
            </span>
          )}
          <span className="hint">Ctrl+Enter runs all</span>
        </div>
      </form>

      <div className="panels">
        {TRANSPORTS.map((t) => (
          <Panel
            key={t.name}
            info={t}
            color={STYLE[t.name].color}
            state={states[t.name]}
            metrics={metrics[t.name]}
            canRun={true}
            onRun={() => start([t.name])}
            onStop={() => stop(t.name)}
          />
        ))}
      </div>

      <section className="results" aria-label="Comparison">
        <LiveChart series={series} />
        <SummaryTable rows={TRANSPORTS.map((t) => ({ info: t, state: states[t.name], metrics: metrics[t.name] }))} />
      </section>
    </>
  );
}
