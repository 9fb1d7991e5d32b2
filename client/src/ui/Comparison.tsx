import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from 'react';

import type { AppConfig } from '../config';
import { inputChars, loadForm, saveForm, type FormState } from '../formStore';
import { isUnauthorized, mayBeAuthFailure } from '../session';
import { METRIC_BY_KEY, METRICS, type MetricKey } from '../stats/definitions';
import { MAX_ROUNDS, plan, roundOrder, type PlannedRun } from '../stats/rotation';
import { RunLog, counts, recordOf, toCsv, toJson, type BatchPlace, type RunRecord } from '../stats/runLog';
import { charSeries, computeMetrics, now, type Metrics } from '../stream/metrics';
import { FINISHED, StreamRunner, type RunState } from '../stream/runner';
import { SavedRuns } from '../stream/savedRuns';
import { TRANSPORTS, uuid } from '../transports';
import type { RestApi } from '../transports/rest';
import type { ChatMessage, StartRequest, Transport, TransportName } from '../transports/types';
import { Distribution, type StripSeries } from './Distribution';
import { count, ms } from './format';
import { LiveChart, type ChartSeries } from './LiveChart';
import { Panel } from './Panel';
import { RunningStreams } from './RunningStreams';
import { StatsTable, summaryGrid, VerdictList } from './StatsTable';
import { SummaryTable } from './SummaryTable';
import { SERIES_STYLE, useColorScheme } from './theme';

type States = Partial<Record<TransportName, RunState>>;

const NAMES: TransportName[] = TRANSPORTS.map((t) => t.name);
const TITLE: Record<TransportName, string> = Object.fromEntries(TRANSPORTS.map((t) => [t.name, t.title])) as Record<
  TransportName,
  string
>;
/** The documented default of the server's input limit, when /config publishes none. */
export const DEFAULT_MAX_INPUT_CHARS = 32_000;
/** How long sign-out waits for the cancelled streams to end before it goes on anyway. */
const CANCEL_WAIT_MS = 8000;

export interface ComparisonHandle {
  /** Stops every running stream (waiting for the answers) before the session ends. */
  cancelAll(): Promise<void>;
}

interface Props {
  config: AppConfig;
  rest: RestApi;
  transports: Record<TransportName, Transport>;
  /** Called when the REST API refused the session's token (a pool or key that no longer exists). */
  onSessionInvalid: () => void;
  /** Receives the handle sign-out uses. */
  handle: { current: ComparisonHandle | null };
}

interface Batch {
  id: string;
  runs: PlannedRun<TransportName>[];
  index: number;
}

function download(name: string, type: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function Comparison({ config, rest, transports, onSessionInvalid, handle }: Props) {
  const maxInput = config.limits?.maxInputChars ?? DEFAULT_MAX_INPUT_CHARS;
  const defaults: FormState = {
    prompt: 'What is serverless streaming?',
    system: '',
    maxTokens: String(config.limits.defaultMaxTokens),
    temperature: '',
    conversation: false,
    rounds: '10',
    history: {},
  };
  const [form, setForm] = useState<FormState>(() => loadForm(defaults));
  const { prompt, system, maxTokens, temperature, conversation, rounds, history } = form;
  const set = <K extends keyof FormState>(key: K, value: FormState[K]) => setForm((f) => ({ ...f, [key]: value }));
  useEffect(() => saveForm(form), [form]);

  const [formError, setFormError] = useState<string | null>(null);
  const [states, setStates] = useState<States>({});
  const [showRunning, setShowRunning] = useState(false);
  const [batch, setBatch] = useState<Batch | null>(null);
  const [distMetric, setDistMetric] = useState<MetricKey>('ttftMs');
  const [, setClock] = useState(0);
  const scheme = useColorScheme();
  const style = SERIES_STYLE[scheme];

  const saved = useMemo(() => new SavedRuns(), []);
  const runLog = useMemo(() => new RunLog(), []);
  const [runs, setRuns] = useState<RunRecord[]>(() => runLog.all());
  const runners = useRef(new Map<TransportName, StreamRunner>());
  const pending = useRef<States>({});
  const frame = useRef<number | null>(null);
  const recorded = useRef(new Set<string>());
  const places = useRef(new Map<string, BatchPlace>());
  const waiters = useRef(new Map<string, (s: RunState) => void>());
  const stopBatch = useRef(false);
  const mounted = useRef(true);
  const checking = useRef(false);

  /**
   * Decides whether a failure was the token being refused: the REST API first (same
   * origin on AWS), then the Function URL (whose 401 a page on another origin can read).
   */
  const checkSession = useCallback(() => {
    if (checking.current) return;
    checking.current = true;
    (async () => {
      try {
        await rest.running();
        return;
      } catch (err) {
        if (isUnauthorized(err)) {
          if (mounted.current) onSessionInvalid();
          return;
        }
      }
      if ((await transports.functionUrl.acceptsToken?.()) === false && mounted.current) onSessionInvalid();
    })()
      .catch(() => undefined)
      .finally(() => {
        checking.current = false;
      });
  }, [rest, transports, onSessionInvalid]);

  // Batches runner updates into one render per animation frame.
  const onChange = useCallback(
    (state: RunState) => {
      pending.current[state.transport] = state;
      if (FINISHED.has(state.status) && !recorded.current.has(state.streamId)) {
        recorded.current.add(state.streamId);
        finished(state);
      }
      if (frame.current === null) {
        frame.current = requestAnimationFrame(() => {
          frame.current = null;
          const batchStates = pending.current;
          pending.current = {};
          setStates((prev) => ({ ...prev, ...batchStates }));
        });
      }
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );

  function finished(state: RunState) {
    // Conversation mode: a finished answer joins its architecture's history.
    const messages = state.request.messages;
    if (messages && state.status !== 'error' && state.text.trim()) {
      const turn: ChatMessage[] = [...messages, { role: 'assistant', content: state.text }];
      setForm((f) => ({ ...f, history: { ...f.history, [state.transport]: turn } }));
    }
    const place = places.current.get(state.streamId) ?? null;
    places.current.delete(state.streamId);
    setRuns(runLog.add(recordOf(state, computeMetrics(state.trace, now()), place)));
    if (state.error?.code === 'TOO_MANY_STREAMS') setShowRunning(true);
    if (state.error && mayBeAuthFailure(state.error.code, state.error.message)) checkSession();
    waiters.current.get(state.streamId)?.(state);
    waiters.current.delete(state.streamId);
  }

  const options = useMemo(
    () => ({ heartbeatIntervalS: config.heartbeatIntervalS, onDrop: () => checkSession() }),
    [config, checkSession],
  );

  // After a reload: resume the streams that were running.
  useEffect(() => {
    mounted.current = true;
    const map = runners.current;
    for (const run of saved.all()) {
      if (map.has(run.transport)) continue;
      map.set(run.transport, StreamRunner.resume(transports[run.transport], rest, saved, run, onChange, options));
    }
    const persist = () => map.forEach((r) => r.persist());
    window.addEventListener('pagehide', persist);
    return () => {
      // Unmounted: signed out. The streams are no longer followed here, nor resumed later.
      mounted.current = false;
      stopBatch.current = true;
      window.removeEventListener('pagehide', persist);
      map.forEach((r) => r.dispose());
      map.clear();
      saved.clear();
    };
  }, [saved, transports, rest, onChange, options]);

  // A session that died while the tab was closed: found before the first run.
  useEffect(() => checkSession(), [checkSession]);

  // Sign-out stops this tab's streams, then any other of the user's, before the token goes.
  useEffect(() => {
    handle.current = {
      async cancelAll() {
        stopBatch.current = true;
        const live = [...runners.current.values()].filter((r) => !r.finished);
        await Promise.all(
          live.map(async (r) => {
            const ended = new Promise<void>((done) => {
              const prev = waiters.current.get(r.current.streamId);
              waiters.current.set(r.current.streamId, (s) => {
                prev?.(s);
                done();
              });
            });
            await r.cancel();
            await Promise.race([ended, new Promise((t) => setTimeout(t, CANCEL_WAIT_MS))]);
          }),
        );
        const others = await rest.running().catch(() => []);
        await Promise.allSettled(others.map((s) => rest.cancel(s.streamId)));
      },
    };
    return () => {
      handle.current = null;
    };
  }, [handle, rest]);

  const anyRunning = Object.values(states).some((s) => s && !FINISHED.has(s.status)) || batch !== null;

  // Elapsed times tick while something runs.
  useEffect(() => {
    if (!anyRunning) return;
    const id = setInterval(() => setClock((c) => c + 1), 200);
    return () => clearInterval(id);
  }, [anyRunning]);

  const sentChars = (name: TransportName | null): number => {
    const text = prompt.trim();
    const past = conversation && name ? (history[name] ?? []).map((m) => m.content) : [];
    return inputChars([system.trim() ? system : '', text, ...past]);
  };

  function buildRequest(name: TransportName, single: boolean): StartRequest | string {
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
    if (conversation && !single) {
      let messages: ChatMessage[] = [...(history[name] ?? []), { role: 'user', content: text }];
      // Keep within the server's limit, dropping the oldest exchanges first.
      while (messages.length > config.limits.maxMessages && messages.length > 2) messages = messages.slice(2);
      request.messages = messages;
    } else {
      request.prompt = text;
    }
    // What the server counts against its limit, exactly as it will be sent.
    const chars = inputChars([request.system, request.prompt, ...(request.messages ?? []).map((m) => m.content)]);
    if (chars > maxInput) {
      const parts = ['prompt', request.system ? 'system prompt' : '', request.messages ? 'conversation' : ''].filter(Boolean);
      return `The input is ${count(chars)} characters (${parts.join(', ')}); the limit is ${count(maxInput)}. Shorten it to send.`;
    }
    return request;
  }

  /** Starts one stream; resolves with its final state. */
  function launch(name: TransportName, request: StartRequest, requestedAt: number, place: BatchPlace | null) {
    const done = new Promise<RunState>((resolve) => waiters.current.set(request.streamId, resolve));
    if (place) places.current.set(request.streamId, place);
    runners.current.get(name)?.dispose();
    const runner = StreamRunner.start(transports[name], rest, saved, request, onChange, options, requestedAt);
    runners.current.set(name, runner);
    return done;
  }

  function start(names: TransportName[]) {
    const requestedAt = now();
    const requests: Array<[TransportName, StartRequest]> = [];
    for (const name of names) {
      const request = buildRequest(name, false);
      if (typeof request === 'string') {
        setFormError(request);
        return;
      }
      requests.push([name, request]);
    }
    setFormError(null);
    setShowRunning(false);
    for (const [name, request] of requests) void launch(name, request, requestedAt, null);
  }

  async function runRounds() {
    const n = Number(rounds);
    if (!Number.isInteger(n) || n < 1 || n > MAX_ROUNDS) {
      setFormError(`Runs must be a whole number from 1 to ${MAX_ROUNDS}.`);
      return;
    }
    const check = buildRequest(NAMES[0]!, true);
    if (typeof check === 'string') {
      setFormError(check);
      return;
    }
    setFormError(null);
    setShowRunning(false);
    const id = uuid();
    const todo = plan(NAMES, n);
    stopBatch.current = false;
    for (let i = 0; i < todo.length; i++) {
      if (stopBatch.current || !mounted.current) break;
      const p = todo[i]!;
      setBatch({ id, runs: todo, index: i });
      const request = buildRequest(p.transport, true) as StartRequest;
      const state = await launch(p.transport, request, now(), { batchId: id, round: p.round, position: p.position });
      // A refusal that repeats for every run (cap, session): stop rather than fail N times.
      if (state.error && (state.error.code === 'TOO_MANY_STREAMS' || mayBeAuthFailure(state.error.code, state.error.message))) break;
    }
    if (mounted.current) setBatch(null);
  }

  function stop(name: TransportName) {
    void runners.current.get(name)?.cancel();
  }

  function stopAll() {
    stopBatch.current = true;
    NAMES.forEach(stop);
  }

  function runAll(e: FormEvent) {
    e.preventDefault();
    start(NAMES);
  }

  function clearRuns() {
    runLog.clear();
    setRuns([]);
  }

  const at = now();
  const metrics: Partial<Record<TransportName, Metrics>> = {};
  for (const t of TRANSPORTS) {
    const s = states[t.name];
    if (s) metrics[t.name] = computeMetrics(s.trace, at);
  }

  const series: ChartSeries[] = useMemo(
    () =>
      TRANSPORTS.filter((t) => states[t.name]).map((t) => {
        const s = states[t.name]!;
        const m = computeMetrics(s.trace, now());
        return {
          label: t.title,
          ...style[t.name],
          points: charSeries(s.trace),
          summary: `${count(m.chars)} chars, first at ${ms(m.ttftMs)}, ${
            FINISHED.has(s.status) ? `ended at ${ms(m.totalMs ?? m.elapsedMs)}` : 'streaming'
          }`,
        };
      }),
    [states, style],
  );

  const completed = useMemo(() => runs.filter(counts), [runs]);
  const grid = useMemo(() => summaryGrid(completed, NAMES), [completed]);
  const strips: StripSeries[] = useMemo(
    () =>
      TRANSPORTS.map((t) => ({
        label: t.title,
        ...style[t.name],
        values: completed
          .filter((r) => r.transport === t.name)
          .map((r) => r[distMetric])
          .filter((v): v is number => typeof v === 'number'),
        summary: grid[distMetric][t.name],
      })),
    [completed, distMetric, grid, style],
  );

  const turns = Math.max(0, ...NAMES.map((n) => (history[n]?.length ?? 0) / 2));
  const promptChars = inputChars([prompt.trim()]);
  const totalChars = Math.max(...NAMES.map((n) => sentChars(n)));
  const overLimit = totalChars > maxInput;
  const current = batch ? batch.runs[batch.index] : undefined;

  return (
    <>
      <form className="prompt" onSubmit={runAll} aria-label="Prompt and options">
        <label htmlFor="prompt">Prompt</label>
        <textarea
          id="prompt"
          rows={3}
          value={prompt}
          aria-describedby="prompt-count"
          onChange={(e) => set('prompt', e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) runAll(e);
          }}
        />
        <p id="prompt-count" className={`counter${overLimit ? ' over' : ''}`} data-testid="char-counter">
          {count(promptChars)} / {count(maxInput)} characters
          {totalChars !== promptChars && ` (${count(totalChars)} with the system prompt${conversation ? ' and conversation' : ''})`}
          {overLimit && ' — over the limit: shorten it to send'}
        </p>
        <div className="options">
          <div className="field wide">
            <label htmlFor="system">System prompt</label>
            <input id="system" value={system} onChange={(e) => set('system', e.target.value)} placeholder="optional" />
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
              onChange={(e) => set('maxTokens', e.target.value)}
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
              onChange={(e) => set('temperature', e.target.value)}
            />
          </div>
          <div className="field check">
            <input
              id="conversation"
              type="checkbox"
              checked={conversation}
              onChange={(e) => set('conversation', e.target.checked)}
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
          <button type="button" disabled={!anyRunning} onClick={stopAll}>
            Stop all
          </button>
          <span className="repeat">
            <label htmlFor="rounds">Runs</label>
            <input
              id="rounds"
              type="number"
              inputMode="numeric"
              min={1}
              max={MAX_ROUNDS}
              value={rounds}
              onChange={(e) => set('rounds', e.target.value)}
            />
            <button type="button" disabled={anyRunning} onClick={() => void runRounds()}>
              Run {rounds || 'N'} times
            </button>
          </span>
          {conversation && (
            <span className="history">
              {turns} earlier {turns === 1 ? 'exchange' : 'exchanges'}{' '}
              <button
                type="button"
                className="link"
                onClick={() => set('history', {})}
                disabled={turns === 0}
              >
                Clear conversation
              </button>
            </span>
          )}
          <span className="hint">Ctrl+Enter runs all</span>
        </div>
        <details className="help order">
          <summary>How “Run N times” works</summary>
          <p>
            N rounds, each running every architecture once, one at a time, with the prompt alone (no conversation
            history). Round r (counting from 0) starts with the architecture at position r mod {NAMES.length} (from 0) of{' '}
            {NAMES.map((n) => TITLE[n]).join(' → ')} and wraps around (
            {[0, 1, 2].map((r) => roundOrder(NAMES, r).map((n) => TITLE[n]).join(' → ')).join('; ')}; …), so over every {NAMES.length} rounds each
            architecture runs once in every position. Every run is kept in this browser (local storage) until
            you clear them; cancelled and failed runs are kept and exported but left out of the statistics.
          </p>
        </details>
        {batch && current && (
          <p className="progress" role="status" data-testid="batch-progress">
            Run {batch.index + 1} of {batch.runs.length}: round {current.round + 1}, order{' '}
            {roundOrder(NAMES, current.round)
              .map((n) => TITLE[n])
              .join(' → ')}
            ; now {TITLE[current.transport]}.
          </p>
        )}
      </form>

      {showRunning && <RunningStreams rest={rest} onDone={() => setShowRunning(false)} />}

      <div className="panels">
        {TRANSPORTS.map((t) => {
          const s = states[t.name];
          const transcript = conversation ? (s ? (s.request.messages ?? []) : (history[t.name] ?? [])) : [];
          return (
            <Panel
              key={t.name}
              info={t}
              color={style[t.name].color}
              state={s}
              metrics={metrics[t.name]}
              canRun={batch === null}
              transcript={transcript}
              onRun={() => start([t.name])}
              onStop={() => stop(t.name)}
            />
          );
        })}
      </div>

      <section className="results" aria-label="Comparison">
        <div className="charts">
          <LiveChart series={series} />
          <div>
            <div className="dist-pick">
              <label htmlFor="dist-metric">Distribution of</label>
              <select id="dist-metric" value={distMetric} onChange={(e) => setDistMetric(e.target.value as MetricKey)}>
                {METRICS.map((m) => (
                  <option key={m.key} value={m.key}>
                    {m.label}
                  </option>
                ))}
              </select>
            </div>
            <Distribution metric={METRIC_BY_KEY[distMetric]} series={strips} />
          </div>
        </div>
        <SummaryTable rows={TRANSPORTS.map((t) => ({ info: t, state: states[t.name], metrics: metrics[t.name] }))} />
        <div className="runs-head">
          <h2>
            All runs: {count(runs.length)} kept, {count(completed.length)} completed
          </h2>
          <div className="actions">
            <button type="button" disabled={runs.length === 0} onClick={() => download('llm-stream-runs.csv', 'text/csv', toCsv(runs))}>
              Export CSV
            </button>
            <button
              type="button"
              disabled={runs.length === 0}
              onClick={() => download('llm-stream-runs.json', 'application/json', toJson(runs))}
            >
              Export JSON
            </button>
            <button type="button" className="stop" disabled={runs.length === 0 || anyRunning} onClick={clearRuns}>
              Clear runs
            </button>
          </div>
        </div>
        <VerdictList grid={grid} infos={TRANSPORTS} />
        <StatsTable grid={grid} infos={TRANSPORTS} />
      </section>
    </>
  );
}
