/**
 * An ordered background sender that coalesces text into frames (mirrors
 * chalicelib/sender.py, with a promise loop instead of a thread).
 *
 * The producer (the loop reading Bedrock) hands over text and control frames and
 * never waits: they go into a queue drained by one async loop, which assigns seq
 * numbers, applies the FlushPolicy and awaits ``deliver`` one frame at a time, in
 * order. While a delivery is slow, text piles up in the queue and leaves as one
 * frame afterwards, so the delay stays bounded by one flush interval plus one call
 * (docs/architecture.md, performance model) instead of growing per token.
 *
 * A delivery that throws is recorded (``failures``, ``onFailure``) and the loop
 * goes on with the next frames, so a ``deliver`` that writes to the response and
 * the store keeps storing after the client is gone.
 *
 * What the ordered sender decides (coalesce, flush, drain before a control frame, a
 * heartbeat after silence, stop) is ``SenderCore``, a pure object fed items and times,
 * the same as chalicelib/sender.py SenderCore; both are held to tests/vectors/sender.json.
 *
 * ``PerTokenSender`` is the baseline the benchmark measures this design against
 * (``SENDER_MODE=per_token``): the same interface, but every model token is its own
 * frame and ``sendText`` resolves once it was delivered; the producer awaits it, so
 * reading the model waits on every call, which is what most samples do.
 */

import { performance } from 'node:perf_hooks';

import { FlushPolicy } from './flush.mjs';

/** @typedef {import('./frames.mjs').Frame} Frame */
/** @typedef {import('./frames.mjs').FrameBuilder} FrameBuilder */
/** @typedef {(frame: Frame) => (void|Promise<void>)} Deliver */
/** @typedef {{frame: Frame|null, error: unknown}} DeliveryFailure */

/** The item that ends a sender's queue. */
export const CLOSE = Symbol('close');

/**
 * @typedef {{kind: 'delta', text: string} | {kind: 'control', item: any} | {kind: 'heartbeat'}} Decision
 */

/**
 * The ordered sender's decisions, without timers, clocks or I/O.
 *
 * ``step(items, nowMs)`` takes what was queued since the last step (texts, control
 * items, CLOSE) and returns what to send now, in order: text coalesced by the flush
 * policy; pending text drained before a control frame and before CLOSE; after
 * ``heartbeatMs`` with nothing sent, a heartbeat. ``waitMs(nowMs)`` is how long the
 * sender may wait for new items before the next step is due.
 */
export class SenderCore {
  /** @param {import('./flush.mjs').FlushPolicy} policy @param {number} heartbeatMs @param {number} nowMs */
  constructor(policy, heartbeatMs, nowMs) {
    this._policy = policy;
    this._heartbeatMs = heartbeatMs;
    this._lastSent = nowMs;
    this.closed = false;
  }

  /** A frame left at ``nowMs`` (the sender reports each delivery's start). */
  sent(/** @type {number} */ nowMs) {
    this._lastSent = nowMs;
  }

  waitMs(/** @type {number} */ nowMs) {
    let wait = this._lastSent + this._heartbeatMs - nowMs;
    const deadline = this._policy.deadlineMs();
    if (deadline !== null) wait = Math.min(wait, deadline - nowMs);
    return Math.max(wait, 0);
  }

  /** @param {any[]} items @param {number} nowMs @returns {Decision[]} */
  step(items, nowMs) {
    if (this.closed) throw new Error('the sender is closed');
    /** @type {Decision[]} */
    const out = [];
    const deltas = (/** @type {string[]} */ chunks) => {
      for (const text of chunks) out.push({ kind: 'delta', text });
    };
    /** @type {string[]} */
    let text = [];
    let stopped = false;
    for (const item of items) {
      if (typeof item === 'string') {
        text.push(item);
        continue;
      }
      if (text.length) {
        deltas(this._policy.add(text.join(''), nowMs));
        text = [];
      }
      deltas(this._policy.drain());
      if (item === CLOSE) {
        this.closed = true;
        stopped = true;
        break;
      }
      out.push({ kind: 'control', item });
    }
    if (!stopped) {
      deltas(text.length ? this._policy.add(text.join(''), nowMs) : this._policy.due(nowMs));
      if (!out.length && nowMs - this._lastSent >= this._heartbeatMs) out.push({ kind: 'heartbeat' });
    }
    if (out.length) this._lastSent = nowMs;
    return out;
  }
}

export class OrderedSender {
  /**
   * @param {FrameBuilder} builder
   * @param {Deliver} deliver
   * @param {import('./flush.mjs').FlushPolicy} policy
   * @param {{heartbeatIntervalMs?: number, onFailure?: (f: DeliveryFailure) => void, now?: () => number}} [options]
   */
  constructor(builder, deliver, policy, options = {}) {
    this._builder = builder;
    this._deliver = deliver;
    this._onFailure = options.onFailure;
    this._now = options.now ?? (() => performance.now());
    this._core = new SenderCore(policy, options.heartbeatIntervalMs ?? 15_000, this._now());
    /** @type {Array<string | ((b: FrameBuilder) => Frame) | typeof CLOSE>} */
    this._queue = [];
    /** @type {DeliveryFailure[]} */
    this.failures = [];
    this._closed = false;
    /** @type {(() => void) | null} */
    this._wake = null;
    /** @type {Promise<void> | null} */
    this._loop = null;
    this.framesSent = 0;
    this.heartbeatsSent = 0;
  }

  // -- producer side ------------------------------------------------------------------

  start() {
    if (!this._loop) this._loop = this._run();
    return this;
  }

  /** Queue model text; it leaves coalesced in delta frames. Never waits. */
  sendText(/** @type {string} */ text) {
    if (this._closed) throw new Error('sender is closed');
    if (text) this._push(text);
  }

  /** Queue a control frame (start, done, error); pending text goes out before it. */
  sendFrame(/** @type {(b: FrameBuilder) => Frame} */ build) {
    if (this._closed) throw new Error('sender is closed');
    this._push(build);
  }

  /** Deliver everything queued, then stop; resolves when the last delivery ended. */
  async close() {
    if (!this._closed) {
      this._closed = true;
      this._push(CLOSE);
    }
    await this.start()._loop;
  }

  get failure() {
    return this.failures[0] ?? null;
  }

  get lastSeq() {
    return this._builder.lastSeq;
  }

  _push(item) {
    this._queue.push(item);
    const wake = this._wake;
    this._wake = null;
    wake?.();
  }

  // -- the sending loop ----------------------------------------------------------------

  /** Until something is queued or ``ms`` pass; the timer is always cleared. */
  _waitForItems(/** @type {number} */ ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._wake = null;
        resolve(undefined);
      }, ms);
      this._wake = () => {
        clearTimeout(timer);
        resolve(undefined);
      };
    });
  }

  async _run() {
    while (!this._core.closed) {
      if (this._queue.length === 0) await this._waitForItems(this._core.waitMs(this._now()));
      // Take everything that piled up during the last delivery, so it leaves
      // coalesced rather than one frame per token.
      const items = this._queue.splice(0);
      for (const decision of this._core.step(items, this._now())) {
        if (decision.kind === 'delta') {
          await this._emit(this._builder.delta(decision.text));
        } else if (decision.kind === 'heartbeat') {
          this.heartbeatsSent += 1;
          await this._emit(this._builder.heartbeat());
        } else {
          let frame;
          try {
            frame = decision.item(this._builder);
          } catch (error) {
            // A bad control frame must not stop the loop.
            this._record({ frame: null, error });
            continue;
          }
          await this._emit(frame);
        }
      }
    }
  }

  async _emit(/** @type {Frame} */ frame) {
    this._core.sent(this._now());
    try {
      await this._deliver(frame);
      this.framesSent += 1;
    } catch (error) {
      // Reported to the producer; never stops the loop.
      this._record({ frame, error });
    }
  }

  _record(/** @type {DeliveryFailure} */ failure) {
    this.failures.push(failure);
    try {
      this._onFailure?.(failure);
    } catch {
      // A broken callback must not stop delivery.
    }
  }
}

/**
 * The per-token baseline (``SENDER_MODE=per_token``): one frame per model token,
 * delivered in order; ``sendText`` and ``sendFrame`` return a promise that resolves
 * when that frame was delivered, and the producer awaits ``sendText``. Once token
 * rate x call latency exceeds 1, the delay grows with every token. Heartbeats go out
 * after ``heartbeatIntervalMs`` of silence, as the protocol requires. Failures are
 * recorded and reported exactly as ``OrderedSender`` does.
 */
export class PerTokenSender {
  /**
   * @param {FrameBuilder} builder
   * @param {Deliver} deliver
   * @param {number} maxChars a text longer than this is split so each frame fits the transport
   * @param {{heartbeatIntervalMs?: number, onFailure?: (f: DeliveryFailure) => void, now?: () => number}} [options]
   */
  constructor(builder, deliver, maxChars, options = {}) {
    this._builder = builder;
    this._deliver = deliver;
    // Interval 0: every text is due at once; maxChars only splits what would not fit.
    this._chunks = new FlushPolicy(0, maxChars);
    this._heartbeatMs = options.heartbeatIntervalMs ?? 15_000;
    this._onFailure = options.onFailure;
    this._now = options.now ?? (() => performance.now());
    /** @type {DeliveryFailure[]} */
    this.failures = [];
    this._closed = false;
    /** @type {Promise<void>} the last delivery queued; deliveries run one after another */
    this._tail = Promise.resolve();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    this.framesSent = 0;
    this.heartbeatsSent = 0;
  }

  start() {
    this._armHeartbeat();
    return this;
  }

  /** Deliver model text as delta frames; resolves once they were delivered. */
  sendText(/** @type {string} */ text) {
    if (this._closed) throw new Error('sender is closed');
    if (!text) return this._tail;
    for (const chunk of this._chunks.add(text, this._now())) this._chain((b) => b.delta(chunk));
    return this._tail;
  }

  /** Deliver a control frame (start, done, error); resolves once it was delivered. */
  sendFrame(/** @type {(b: FrameBuilder) => Frame} */ build) {
    if (this._closed) throw new Error('sender is closed');
    return this._chain(build);
  }

  /** Resolves when the last delivery ended; no heartbeats after it. */
  async close() {
    this._closed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    await this._tail;
  }

  get failure() {
    return this.failures[0] ?? null;
  }

  get lastSeq() {
    return this._builder.lastSeq;
  }

  /** Queue one delivery after the others; frames are built when their turn comes, so
   * seq order is delivery order. Never rejects. */
  _chain(/** @type {(b: FrameBuilder) => Frame} */ build) {
    this._tail = this._tail.then(async () => {
      let frame;
      try {
        frame = build(this._builder);
      } catch (error) {
        // A bad control frame must not stop the deliveries after it.
        this._record({ frame: null, error });
        return;
      }
      await this._emit(frame);
    });
    return this._tail;
  }

  async _emit(/** @type {Frame} */ frame) {
    try {
      await this._deliver(frame);
      this.framesSent += 1;
    } catch (error) {
      this._record({ frame, error });
    }
    this._armHeartbeat();
  }

  _armHeartbeat() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    if (this._closed) return;
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this._closed) return;
      this._chain((b) => {
        this.heartbeatsSent += 1;
        return b.heartbeat();
      });
    }, this._heartbeatMs);
  }

  _record(/** @type {DeliveryFailure} */ failure) {
    this.failures.push(failure);
    try {
      this._onFailure?.(failure);
    } catch {
      // A broken callback must not stop delivery.
    }
  }
}

/**
 * The sender of ``mode`` (settings.senderMode), not yet started: the ordered coalescing
 * sender with a flush policy of ``intervalMs`` / ``maxChars``, or the per-token
 * baseline. The one place the function builds a sender.
 * @param {string} mode
 * @param {FrameBuilder} builder
 * @param {Deliver} deliver
 * @param {{intervalMs: number, maxChars: number, heartbeatIntervalMs?: number,
 *   onFailure?: (f: DeliveryFailure) => void, now?: () => number}} options
 * @returns {OrderedSender | PerTokenSender}
 */
export function createSender(mode, builder, deliver, { intervalMs, maxChars, ...options }) {
  if (mode === 'per_token') return new PerTokenSender(builder, deliver, maxChars, options);
  if (mode !== 'coalesce') throw new RangeError(`unknown sender mode ${JSON.stringify(mode)}`);
  return new OrderedSender(builder, deliver, new FlushPolicy(intervalMs, maxChars), options);
}
