/**
 * Bedrock ConverseStream behind a small, bounded, testable interface (the Node
 * twin of chalicelib/bedrock.py).
 *
 * ``BedrockModel.open(req)`` returns a ModelStream whose ``nextEvent(timeoutMs)``
 * yields normalized events ({type: 'text'|'stop'|'metadata'}), ``null`` when
 * nothing arrived in time (so the producer can check the cancel flag while the
 * model is silent) or ``END``; every failure becomes a StreamError with a message
 * safe to show a user.
 *
 * Why the shape:
 * - One async pump per attempt reads the SDK's event stream into a queue; the
 *   consumer waits on the queue with a timeout. That gives a first-event timeout,
 *   an idle (stall) timeout and a bounded wait.
 * - Throttling before the first text is retried here with full-jitter backoff;
 *   the SDK's own retries are off (maxAttempts 1) so the policy stays ours. Once
 *   text has been yielded nothing is retried: a retry would duplicate text.
 * - Leaving a stream with ``break`` keeps the model generating (and billing); every
 *   attempt has an AbortController and ``close()`` aborts it, which destroys the
 *   socket at once, even while the request still waits for response headers.
 * - The SDK client uses NodeHttpHandler (HTTP/1.1): the default HTTP/2 handler
 *   fails against HTTP/1.1 servers such as the local emulator, and HTTP/1.1 is
 *   valid against real Bedrock for ConverseStream, so there is no local-only branch.
 */

import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

import { BedrockRuntimeClient, ConverseStreamCommand } from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';

import { ErrorCode, StreamError } from './errors.mjs';
import { PROTOCOL } from './protocol.mjs';

/** Returned by nextEvent once the stream is over (finished or closed). */
export const END = Symbol('end');

/**
 * @typedef {{type: 'text', text: string}
 *   | {type: 'stop', stopReason: string}
 *   | {type: 'metadata', usage: {inputTokens: number, outputTokens: number}, metrics: Record<string, number>}} ModelEvent
 */

// Bedrock's reasons that the protocol has too; "cancelled" is ours alone.
const KEPT_STOP_REASONS = new Set(PROTOCOL.stopReasons.filter((r) => r !== 'cancelled'));

/** Bedrock's stopReason as one of the frame protocol's values (docs/protocol.md). */
export function mapStopReason(/** @type {string|undefined} */ raw) {
  if (raw && KEPT_STOP_REASONS.has(raw)) return raw;
  if (raw === 'model_context_window_exceeded') return 'max_tokens'; // cut for length
  return 'end_turn'; // tool_use (no tools are offered) and anything newer
}

// -- request building ---------------------------------------------------------------

/**
 * The ConverseStream input for a validated start request.
 * @param {import('./frames.mjs').StartRequest} req
 * @param {{modelId: string}} settings
 */
export function buildConverseRequest(req, settings) {
  let messages;
  if (req.prompt !== undefined) {
    messages = [{ role: 'user', content: [{ text: req.prompt }] }];
  } else if (req.messages?.length) {
    messages = req.messages.map((m) => ({ role: m.role, content: [{ text: m.content }] }));
  } else {
    throw new StreamError(ErrorCode.BAD_REQUEST, 'Either prompt or messages is required.');
  }
  /** @type {{maxTokens: number, temperature?: number}} */
  const inferenceConfig = { maxTokens: req.maxTokens };
  if (req.temperature !== undefined) inferenceConfig.temperature = req.temperature;
  /** @type {Record<string, any>} */
  const input = { modelId: settings.modelId, messages, inferenceConfig };
  if (req.system) input.system = [{ text: req.system }];
  return input;
}

// -- error mapping ------------------------------------------------------------------

const MSG_BUSY = 'The model is busy. Try again shortly.';
const MSG_UNAVAILABLE = 'The model is not available.';
const MSG_REJECTED = 'The model rejected the request.';
const MSG_FAILED = 'The model failed while answering.';
const MSG_TIMEOUT = 'The model took too long to respond.';

// Exceptions inside the event stream (the JS SDK throws them as modelled classes).
/** @type {Record<string, [string, string]>} */
const IN_STREAM_ERRORS = {
  ThrottlingException: [ErrorCode.THROTTLED, MSG_BUSY],
  ModelStreamErrorException: [ErrorCode.MODEL_ERROR, MSG_FAILED],
  InternalServerException: [ErrorCode.MODEL_ERROR, MSG_FAILED],
  ServiceUnavailableException: [ErrorCode.MODEL_ERROR, MSG_UNAVAILABLE],
  ValidationException: [ErrorCode.BAD_REQUEST, MSG_REJECTED],
  ModelTimeoutException: [ErrorCode.MODEL_TIMEOUT, MSG_TIMEOUT],
};
// HTTP-level errors of the ConverseStream call itself.
/** @type {Record<string, [string, string]>} */
const HTTP_ERRORS = {
  ValidationException: [ErrorCode.BAD_REQUEST, MSG_REJECTED],
  AccessDeniedException: [ErrorCode.MODEL_ERROR, MSG_UNAVAILABLE],
  ResourceNotFoundException: [ErrorCode.MODEL_ERROR, MSG_UNAVAILABLE],
  ModelTimeoutException: [ErrorCode.MODEL_TIMEOUT, MSG_TIMEOUT],
};
// Worth retrying before the first text: the request never started generating.
const RETRY_HTTP = new Set(['ThrottlingException', 'ServiceUnavailableException', 'ModelNotReadyException']);
const RETRY_IN_STREAM = new Set(['ThrottlingException']);
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * The user-facing error for ``err`` and whether it may be retried before any text.
 * @param {unknown} err
 * @param {boolean} inStream raised while reading the event stream (vs by the call)
 * @returns {[StreamError, boolean]}
 */
export function classifyError(err, inStream) {
  const e = /** @type {any} */ (err ?? {});
  const name = typeof e.name === 'string' ? e.name : '';
  const isService = typeof e.$fault === 'string' || typeof e.$metadata === 'object';
  if (isService && inStream) {
    const [code, message] = IN_STREAM_ERRORS[name] ?? [ErrorCode.MODEL_ERROR, MSG_FAILED];
    return [new StreamError(code, message), RETRY_IN_STREAM.has(name)];
  }
  if (isService) {
    if (RETRY_HTTP.has(name)) return [new StreamError(ErrorCode.THROTTLED, MSG_BUSY, { retryable: true }), true];
    const [code, message] = HTTP_ERRORS[name] ?? [ErrorCode.MODEL_ERROR, MSG_FAILED];
    return [new StreamError(code, message), false];
  }
  if (name === 'TimeoutError' || e.code === 'ETIMEDOUT') {
    return [new StreamError(ErrorCode.MODEL_TIMEOUT, MSG_TIMEOUT), false];
  }
  if (UNREACHABLE.has(e.code)) return [new StreamError(ErrorCode.MODEL_ERROR, MSG_UNAVAILABLE), false];
  return [new StreamError(ErrorCode.MODEL_ERROR, MSG_FAILED), false];
}

/**
 * Full jitter: uniform in [0, min(max, base * 2**retry)] milliseconds.
 * @param {number} retry @param {{modelRetryBaseMs: number, modelRetryMaxMs: number}} settings @param {() => number} rng
 */
export function backoffDelayMs(retry, settings, rng) {
  const capMs = Math.min(settings.modelRetryMaxMs, settings.modelRetryBaseMs * 2 ** retry);
  return rng() * capMs;
}

// -- one attempt ------------------------------------------------------------------

/** @typedef {{kind: 'event', raw: any, at: number} | {kind: 'end', at: number} | {kind: 'error', err: unknown, inStream: boolean, at: number}} Item */

/** A queue the consumer can wait on with a timeout. */
class ItemQueue {
  constructor() {
    /** @type {Item[]} */
    this.items = [];
    /** @type {(() => void)|null} */
    this._waiter = null;
  }

  push(/** @type {Item} */ item) {
    this.items.push(item);
    this.wake();
  }

  wake() {
    const w = this._waiter;
    this._waiter = null;
    w?.();
  }

  /** The next item, or null if none came within ``ms`` (or the wait was woken). */
  async take(/** @type {number} */ ms) {
    if (this.items.length === 0 && ms > 0) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => {
          this._waiter = null;
          resolve(undefined);
        }, ms);
        this._waiter = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
    }
    return this.items.shift() ?? null;
  }
}

class Attempt {
  /**
   * @param {{send(cmd: any, opts?: any): Promise<any>}} client
   * @param {Record<string, any>} input
   * @param {() => number} now
   */
  constructor(client, input, now) {
    this.queue = new ItemQueue();
    this.startedAt = now();
    this._now = now;
    this._abort = new AbortController();
    this.closed = false;
    this.settled = false; // the response was read to its end or failed
    this._pump(client, input);
  }

  async _pump(client, input) {
    let inStream = false;
    try {
      const response = await client.send(new ConverseStreamCommand(input), { abortSignal: this._abort.signal });
      inStream = true;
      for await (const raw of response.stream ?? []) {
        if (this.closed) return;
        // Exceptions modelled as stream members, in case the SDK yields them.
        const key = Object.keys(raw ?? {}).find((k) => k.endsWith('Exception'));
        if (key) {
          const name = key[0].toUpperCase() + key.slice(1);
          const err = Object.assign(new Error('in-stream exception'), { name, $fault: 'server' });
          this.settled = true;
          this._abort.abort(); // stop reading the rest of this response
          this.queue.push({ kind: 'error', err, inStream: true, at: this._now() });
          return;
        }
        this.queue.push({ kind: 'event', raw, at: this._now() });
      }
      this.settled = true;
      if (!this.closed) this.queue.push({ kind: 'end', at: this._now() });
    } catch (err) {
      this.settled = true;
      // Handed to the consumer, which maps it; an abort we caused is not news.
      if (!this.closed) this.queue.push({ kind: 'error', err, inStream, at: this._now() });
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    // Destroys the request and its socket: the model stops generating for us.
    // Not once settled: the connection may be back in the keep-alive pool.
    if (!this.settled) this._abort.abort();
    this.queue.wake();
  }
}

// -- the stream -------------------------------------------------------------------

export class ModelStream {
  /**
   * @param {{send(cmd: any, opts?: any): Promise<any>}} client
   * @param {Record<string, any>} input ConverseStream input
   * @param {import('./settings.mjs').Settings} settings
   * @param {{now?: () => number, rng?: () => number, log?: import('./log.mjs').Logger}} [options]
   */
  constructor(client, input, settings, options = {}) {
    this._client = client;
    this._input = input;
    this._settings = settings;
    this._now = options.now ?? (() => performance.now());
    this._rng = options.rng ?? Math.random;
    this._log = options.log ?? (() => {});
    this._openedAt = this._now();
    /** @type {Attempt|null} */
    this._attempt = null;
    this.attempts = 0;
    this._retriesUsed = 0;
    /** @type {number|null} when the backoff before the next attempt ends */
    this._retryAt = null;
    this._sawEvent = false;
    this._lastEventAt = 0;
    /** @type {number|null} */
    this._firstTextMs = null;
    this._stopSeen = false;
    this._metadataSeen = false;
    /** @type {ModelEvent[]} */
    this._pending = [];
    this.finished = false; // ended on its own (complete or failed)
    this.closed = false; // ended by close()
    /** @type {(() => void)|null} */
    this._backoffWake = null;
    this._startAttempt();
  }

  /** No further events will come. */
  get done() {
    return (this.finished || this.closed) && this._pending.length === 0;
  }

  /**
   * The next event; null if none arrived within ``timeoutMs``; END once over.
   * Throws StreamError on failure (including the model timeouts).
   * @param {number} timeoutMs
   * @returns {Promise<ModelEvent|null|typeof END>}
   */
  async nextEvent(timeoutMs) {
    const deadline = this._now() + Math.max(0, timeoutMs);
    for (;;) {
      if (this._pending.length) return /** @type {ModelEvent} */ (this._pending.shift());
      if (this.finished || this.closed) return END;
      const attempt = this._attempt;
      if (attempt === null) {
        // Backing off before a retry.
        const retryAt = /** @type {number} */ (this._retryAt);
        const step = Math.min(retryAt, deadline) - this._now();
        if (step > 0) await this._sleep(step);
        if (this.closed) return END;
        if (this._now() >= retryAt) this._startAttempt();
        else if (this._now() >= deadline) return null;
        continue;
      }
      const event = await this._waitOn(attempt, deadline);
      if (event) return event;
      if (this._pending.length || this.finished || this.closed) continue;
      if (this._now() >= deadline) return null;
    }
  }

  /** Abort the model request; idempotent; wakes a waiting nextEvent (which returns END). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._closeAttempt();
    this._backoffWake?.();
  }

  // -- internals --------------------------------------------------------------------

  _sleep(/** @type {number} */ ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._backoffWake = null;
        resolve(undefined);
      }, ms);
      this._backoffWake = () => {
        clearTimeout(timer);
        this._backoffWake = null;
        resolve(undefined);
      };
    });
  }

  _startAttempt() {
    if (this.closed) return;
    this._sawEvent = false;
    this._retryAt = null;
    this.attempts += 1;
    this._attempt = new Attempt(this._client, this._input, this._now);
  }

  _closeAttempt() {
    const attempt = this._attempt;
    this._attempt = null;
    attempt?.close();
  }

  _modelDeadline(/** @type {Attempt} */ attempt) {
    if (this._sawEvent) return this._lastEventAt + this._settings.modelIdleTimeoutS * 1000;
    return attempt.startedAt + this._settings.modelFirstEventTimeoutS * 1000;
  }

  /** Handle at most one queue item; null if it produced no event (or none came). */
  async _waitOn(/** @type {Attempt} */ attempt, /** @type {number} */ deadline) {
    const modelDeadline = this._modelDeadline(attempt);
    const item = await attempt.queue.take(Math.min(deadline, modelDeadline) - this._now());
    if (this.closed) return null;
    if (item === null) {
      if (this._now() >= modelDeadline) {
        const first = !this._sawEvent;
        this._log('warn', 'bedrock timeout', { phase: first ? 'first-event' : 'idle' });
        this._fail(new StreamError(ErrorCode.MODEL_TIMEOUT, MSG_TIMEOUT));
      }
      return null;
    }
    if (item.kind === 'event') {
      this._sawEvent = true;
      this._lastEventAt = item.at;
      return this._normalize(item.raw, item.at);
    }
    if (item.kind === 'end') {
      this._endOfStream();
      return null;
    }
    this._handleError(item.err, item.inStream);
    return null;
  }

  /** @returns {ModelEvent|null} */
  _normalize(/** @type {any} */ raw, /** @type {number} */ at) {
    if (raw.contentBlockDelta) {
      const text = raw.contentBlockDelta.delta?.text;
      if (!text) return null; // tool-use or reasoning deltas, empty text
      if (this._firstTextMs === null) this._firstTextMs = Math.max(0, Math.round(at - this._openedAt));
      return { type: 'text', text };
    }
    if (raw.messageStop) {
      this._stopSeen = true;
      return { type: 'stop', stopReason: mapStopReason(raw.messageStop.stopReason) };
    }
    if (raw.metadata) {
      this._metadataSeen = true;
      const usage = raw.metadata.usage ?? {};
      return {
        type: 'metadata',
        usage: { inputTokens: Math.trunc(usage.inputTokens ?? 0), outputTokens: Math.trunc(usage.outputTokens ?? 0) },
        metrics: this._metrics(raw.metadata.metrics?.latencyMs),
      };
    }
    return null; // messageStart, contentBlockStart/Stop
  }

  _metrics(/** @type {unknown} */ latencyMs) {
    /** @type {Record<string, number>} */
    const metrics = {};
    if (this._firstTextMs !== null) metrics.modelFirstTokenMs = this._firstTextMs;
    if (typeof latencyMs === 'number' && Number.isFinite(latencyMs)) metrics.modelLatencyMs = Math.trunc(latencyMs);
    return metrics;
  }

  _endOfStream() {
    if (!this._stopSeen) {
      // A clean end without messageStop means the connection was cut mid-answer.
      this._log('warn', 'bedrock stream ended without messageStop');
      this._fail(new StreamError(ErrorCode.MODEL_ERROR, MSG_FAILED));
    }
    this.finished = true;
    this._closeAttempt();
    if (!this._metadataSeen) {
      // Keep the promise that a complete stream ends with a metadata event.
      this._pending.push({ type: 'metadata', usage: { inputTokens: 0, outputTokens: 0 }, metrics: this._metrics(null) });
    }
  }

  _handleError(/** @type {unknown} */ err, /** @type {boolean} */ inStream) {
    let [error, retryBeforeText] = classifyError(err, inStream);
    const name = String(/** @type {any} */ (err)?.name ?? typeof err);
    if (retryBeforeText && this._firstTextMs === null) {
      if (this._retriesUsed < this._settings.modelThrottleRetries) {
        const delay = backoffDelayMs(this._retriesUsed, this._settings, this._rng);
        this._retriesUsed += 1;
        this._log('info', 'bedrock retry', { errorName: name, retry: this._retriesUsed, delayMs: Math.round(delay) });
        this._closeAttempt();
        this._retryAt = this._now() + delay;
        return;
      }
      error = new StreamError(ErrorCode.THROTTLED, MSG_BUSY, { retryable: true });
    }
    this._log('warn', 'bedrock error', { errorName: name, inStream, code: error.code });
    this._fail(error);
  }

  /** @returns {never} */
  _fail(/** @type {StreamError} */ error) {
    this.finished = true;
    this._closeAttempt();
    throw error;
  }
}

/** Opens model streams on one reused client. */
export class BedrockModel {
  /**
   * @param {import('./settings.mjs').Settings} settings
   * @param {() => {send(cmd: any, opts?: any): Promise<any>}} clientFactory
   * @param {{now?: () => number, rng?: () => number, log?: import('./log.mjs').Logger}} [options]
   */
  constructor(settings, clientFactory, options = {}) {
    this.settings = settings;
    this._clientFactory = clientFactory;
    this._options = options;
    /** @type {{send(cmd: any, opts?: any): Promise<any>}|null} */
    this._client = null;
  }

  /** Start generating and return the stream of events. */
  open(/** @type {import('./frames.mjs').StartRequest} */ req) {
    const input = buildConverseRequest(req, this.settings);
    if (this._client === null) {
      try {
        this._client = this._clientFactory();
      } catch {
        (this._options.log ?? (() => {}))('error', 'could not create the bedrock-runtime client');
        throw new StreamError(ErrorCode.INTERNAL, 'The model client could not be created.');
      }
    }
    return new ModelStream(this._client, input, this.settings, this._options);
  }
}

/**
 * The SDK client used in Lambda. The endpoint comes from
 * AWS_ENDPOINT_URL_BEDROCK_RUNTIME when set (the SDK reads it; the local cloud sets
 * it); SDK retries are off because ModelStream retries itself.
 * @param {import('./settings.mjs').Settings} settings
 */
export function createBedrockClient(settings) {
  const idleMs = (Math.max(settings.modelFirstEventTimeoutS, settings.modelIdleTimeoutS) + 5) * 1000;
  return new BedrockRuntimeClient({
    region: settings.region,
    maxAttempts: 1,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: 5000,
      // A socket idle this long is dead; our own first-event/idle timeouts fire first.
      socketTimeout: idleMs,
      httpAgent: new http.Agent({ keepAlive: true }),
      httpsAgent: new https.Agent({ keepAlive: true }),
    }),
  });
}
