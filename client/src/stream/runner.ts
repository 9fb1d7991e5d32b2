/**
 * One stream through one transport, start to terminal frame: frames go through the
 * shared reassembly (order, duplicates, gaps repaired from the store through the REST
 * API), dropped connections are resumed from the last released seq, a silent connection
 * is checked against the store, and the run is kept in sessionStorage until it ends so a
 * reload resumes it.
 */

import type { RestApi } from '../transports/rest';
import type { Connection, StartRequest, Transport, TransportEvents, TransportName } from '../transports/types';
import { charCount, isTerminal, type Frame, type FrameError } from './frames';
import { emptyTrace, now, type RunTrace } from './metrics';
import { Reassembler } from './reassembly';
import type { SavedRun, SavedRuns } from './savedRuns';

export type RunStatus =
  | 'connecting'
  | 'streaming'
  | 'reconnecting'
  | 'cancelling'
  | 'done'
  | 'cancelled'
  | 'error';

export interface RunState {
  transport: TransportName;
  streamId: string;
  request: StartRequest;
  status: RunStatus;
  /** A short note on the status (why it is reconnecting, a failed cancel, ...). */
  detail?: string;
  text: string;
  /** A reasoning model's thinking text (`reasoning` frames), kept apart from the answer. */
  reasoning?: string;
  model?: string;
  stopReason?: string;
  error?: FrameError;
  trace: RunTrace;
}

export const FINISHED: ReadonlySet<RunStatus> = new Set(['done', 'cancelled', 'error']);

export interface RunnerOptions {
  /** The server's heartbeat interval: twice this without any message means check the store. */
  heartbeatIntervalS: number;
  /** Resume attempts after a drop before giving up. */
  maxResumeAttempts?: number;
  /** How often the state is written to sessionStorage while streaming. */
  saveIntervalMs?: number;
  /** Told of every dropped connection (the page checks whether the session still holds). */
  onDrop?: (reason: string) => void;
}

const RESUME_BASE_MS = 250;
const RESUME_MAX_MS = 5000;

export class StreamRunner {
  private state: RunState;
  private readonly reassembly: Reassembler;
  private connection: Connection | undefined;
  private repairing = false;
  private attempts = 0;
  private lastActivity = now();
  private resumeTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private lastSaved = 0;
  private disposed = false;

  private constructor(
    private readonly transport: Transport,
    private readonly rest: RestApi,
    private readonly saved: SavedRuns,
    private readonly onChange: (state: RunState) => void,
    private readonly options: RunnerOptions,
    initial: RunState,
    lastSeq: number,
  ) {
    this.state = initial;
    this.reassembly = new Reassembler(initial.streamId, lastSeq);
  }

  /** Starts a new stream now; `requestedAt` lets "Run all" give every panel one start time. */
  static start(
    transport: Transport,
    rest: RestApi,
    saved: SavedRuns,
    request: StartRequest,
    onChange: (state: RunState) => void,
    options: RunnerOptions,
    requestedAt = now(),
  ): StreamRunner {
    const runner = new StreamRunner(transport, rest, saved, onChange, options, {
      transport: transport.name,
      streamId: request.streamId,
      request,
      status: 'connecting',
      text: '',
      trace: emptyTrace(requestedAt),
    }, -1);
    runner.save(true);
    runner.emit();
    runner.connection = transport.start(request, runner.events());
    runner.startWatchdog();
    return runner;
  }

  /** Resumes a run saved before a reload, from the last seq it had shown. */
  static resume(
    transport: Transport,
    rest: RestApi,
    saved: SavedRuns,
    run: SavedRun,
    onChange: (state: RunState) => void,
    options: RunnerOptions,
  ): StreamRunner {
    const state: RunState = {
      transport: run.transport,
      streamId: run.streamId,
      request: run.request,
      status: 'reconnecting',
      detail: 'resuming after a reload',
      text: run.text,
      trace: { ...run.trace, resumes: run.trace.resumes + 1 },
    };
    if (run.model !== undefined) state.model = run.model;
    if (run.reasoning !== undefined) state.reasoning = run.reasoning;
    const runner = new StreamRunner(transport, rest, saved, onChange, options, state, run.lastSeq);
    runner.emit();
    runner.connection = transport.resume(run.streamId, run.lastSeq, runner.events());
    runner.startWatchdog();
    return runner;
  }

  get current(): RunState {
    return this.state;
  }

  get finished(): boolean {
    return FINISHED.has(this.state.status);
  }

  /** Asks the server to stop the stream; it ends with done / stopReason "cancelled". */
  async cancel(): Promise<void> {
    if (this.finished) return;
    this.update({ status: 'cancelling', detail: 'cancel requested' });
    try {
      await this.transport.cancel(this.state.streamId);
    } catch (err) {
      if (!this.finished) {
        this.update({ status: 'streaming', detail: `cancel failed: ${(err as Error).message}` });
      }
    }
  }

  /** Stops following the stream here (the stream itself goes on until cancelled). */
  dispose(): void {
    this.disposed = true;
    this.stopTimers();
    this.connection?.close();
    this.connection = undefined;
  }

  // -- events from the transport ---------------------------------------------------------

  private events(): TransportEvents {
    return {
      onReady: () => this.onReady(),
      onFrame: (frame) => this.onFrame(frame, 'live'),
      onDrop: (reason) => this.onDrop(reason),
      onFailure: (f) => this.finishWithError({ code: f.code, message: f.message, retryable: f.retryable }),
      lastSeq: () => this.reassembly.lastSeq,
    };
  }

  private onReady(): void {
    if (this.disposed || this.finished) return;
    this.attempts = 0;
    this.lastActivity = now();
    const trace = this.state.trace;
    if (trace.connectedAt === undefined) trace.connectedAt = now();
    const status = this.state.status === 'cancelling' ? 'cancelling' : 'streaming';
    this.update({ status, detail: undefined });
  }

  private onFrame(frame: Frame, source: 'live' | 'repair'): void {
    if (this.disposed || this.finished) return;
    const at = now();
    this.lastActivity = at;
    const trace = this.state.trace;
    if (frame.type === 'heartbeat') {
      if (frame.streamId === undefined || frame.streamId === this.state.streamId) trace.heartbeats++;
      this.update({});
      return;
    }
    const { released, gap } = this.reassembly.accept(frame, source);
    let text = this.state.text;
    const patch: Partial<RunState> = {};
    for (const f of released) {
      const chars = f.type === 'delta' ? charCount(f.text) : 0;
      trace.arrivals.push({ at, type: f.type, chars });
      if (f.type === 'start' && f.model) patch.model = f.model;
      if (f.type === 'delta' && f.text) text += f.text;
      if (f.type === 'reasoning' && f.text) patch.reasoning = (patch.reasoning ?? this.state.reasoning ?? '') + f.text;
      if (f.type === 'done') {
        patch.stopReason = f.stopReason;
        if (typeof f.usage?.outputTokens === 'number') trace.outputTokens = f.usage.outputTokens;
        if (f.metrics) trace.modelMetrics = { ...f.metrics };
      }
      if (f.type === 'error' && f.error) patch.error = f.error;
    }
    Object.assign(trace, {
      duplicates: this.reassembly.counts.duplicates,
      gapsDetected: this.reassembly.counts.gapsDetected,
      gapsRepaired: this.reassembly.counts.gapsRepaired,
      framesRepaired: this.reassembly.counts.framesRepaired,
    });
    patch.text = text;
    const terminal = released.find(isTerminal);
    if (terminal) {
      if (terminal.type === 'error') patch.status = 'error';
      else patch.status = terminal.stopReason === 'cancelled' ? 'cancelled' : 'done';
      patch.detail = undefined;
      this.update(patch);
      this.end();
      return;
    }
    this.update(patch);
    this.save(false);
    if (gap && !this.repairing) void this.repair();
  }

  private onDrop(reason: string): void {
    if (this.disposed || this.finished) return;
    this.options.onDrop?.(reason);
    this.connection?.close();
    this.connection = undefined;
    if (this.resumeTimer) return; // already scheduled
    const max = this.options.maxResumeAttempts ?? 12;
    if (this.attempts >= max) {
      this.finishWithError({
        code: 'CONNECTION_LOST',
        message: `The connection was lost and ${max} attempts to resume failed (${reason}).`,
      });
      return;
    }
    const delay = Math.min(RESUME_MAX_MS, RESUME_BASE_MS * 2 ** this.attempts);
    this.attempts++;
    const status = this.state.status === 'cancelling' ? 'cancelling' : 'reconnecting';
    this.update({ status, detail: `${reason}; resuming from seq ${this.reassembly.lastSeq}` });
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      if (this.disposed || this.finished) return;
      this.state.trace.resumes++;
      this.connection = this.transport.resume(
        this.state.streamId,
        this.reassembly.lastSeq,
        this.events(),
      );
    }, delay);
  }

  // -- repair, watchdog, persistence -------------------------------------------------------

  /** Reads the frames after the last released seq from the store until the gap closes. */
  private async repair(): Promise<void> {
    this.repairing = true;
    try {
      for (let page = 0; page < 100 && !this.finished && !this.disposed; page++) {
        const snapshot = await this.rest.frames(this.state.streamId, this.reassembly.lastSeq);
        for (const frame of snapshot.frames) this.onFrame(frame, 'repair');
        if (!snapshot.hasMore || snapshot.frames.length === 0) break;
      }
    } catch (err) {
      if (!this.finished) this.update({ detail: `store read failed: ${(err as Error).message}` });
    } finally {
      this.repairing = false;
    }
  }

  private startWatchdog(): void {
    const silenceMs = Math.max(2 * this.options.heartbeatIntervalS * 1000, 5000) + 2000;
    this.watchdog = setInterval(() => {
      if (this.finished || this.disposed) return;
      if (this.state.status === 'reconnecting') return;
      if (now() - this.lastActivity > silenceMs && !this.repairing) {
        // Not even a heartbeat: the connection may be dead without having noticed.
        this.lastActivity = now();
        this.update({ detail: 'connection silent; checking the stream store' });
        void this.repair();
      }
    }, 1000);
  }

  private save(force: boolean): void {
    const at = now();
    if (!force && at - this.lastSaved < (this.options.saveIntervalMs ?? 250)) return;
    this.lastSaved = at;
    this.saved.save(this.snapshot());
  }

  /** The run as it would be resumed after a reload. */
  snapshot(): SavedRun {
    const s = this.state;
    const run: SavedRun = {
      transport: s.transport,
      streamId: s.streamId,
      request: s.request,
      text: s.text,
      lastSeq: this.reassembly.lastSeq,
      trace: s.trace,
    };
    if (s.model !== undefined) run.model = s.model;
    if (s.reasoning !== undefined) run.reasoning = s.reasoning;
    return run;
  }

  /** Writes the run to sessionStorage now (before the page goes away). */
  persist(): void {
    if (!this.finished && !this.disposed) this.saved.save(this.snapshot());
  }

  private finishWithError(error: FrameError): void {
    if (this.disposed || this.finished) return;
    const at = now();
    this.state.trace.arrivals.push({ at, type: 'error', chars: 0 });
    this.update({ status: 'error', error, detail: undefined });
    this.end();
  }

  private end(): void {
    this.stopTimers();
    this.connection?.close();
    this.connection = undefined;
    this.saved.remove(this.state.transport, this.state.streamId);
  }

  private stopTimers(): void {
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.resumeTimer = undefined;
    this.watchdog = undefined;
  }

  private update(patch: Partial<RunState>): void {
    this.state = { ...this.state, ...patch };
    this.emit();
  }

  private emit(): void {
    this.onChange(this.state);
  }
}
