/**
 * One generation: Bedrock → ordered coalescing sender → (response stream, store).
 * The same behaviour as chalicelib/producer.py generate_claimed, for the Function URL:
 *
 * - the stream is created claimed by this invocation under a lease (claimedBy,
 *   leaseUntil), renewed by the cancel watch while the model runs and by the deliveries
 *   while the sender drains; if this Lambda dies, the lease lapses and the next reader
 *   ends the stream with one error frame and frees the slot;
 * - the terminal frame is stored, then the record finished (freeing the owner's slot),
 *   then written to the client, so a client that starts its next stream the moment
 *   it sees this one end always finds its slot free;
 * - a sender that cannot drain before the Lambda ends is stopped and the stream ended
 *   with an error frame after what is stored; a claim lost to a reader stops every
 *   delivery and the client gets the frame that reader stored.
 *
 * The loop reading the model never waits on the response stream or DynamoDB: it
 * hands text to the OrderedSender, whose single async loop delivers frames in
 * order (with SENDER_MODE=per_token, the baseline sender, it waits on every token). The cancel flag is read in the background at most every flush/2 ms; a
 * cancel aborts the Bedrock request at once (even while the model is silent) and
 * the stream ends with ``done`` + ``stopReason: "cancelled"``.
 */

import { performance } from 'node:perf_hooks';

import { END } from './bedrock.mjs';
import { ErrorCode, StreamError } from './errors.mjs';
import { FrameBuilder, maxTextChars, TERMINAL_TYPES } from './frames.mjs';
import { errorKind } from './log.mjs';
import { createSender } from './sender.mjs';
import { CANCELLED, CancelWatch, DONE, ERROR, isTerminal } from './store.mjs';

/** What readers and retries see of a stream whose producer died or could not deliver. */
export const ABANDONED = new StreamError(ErrorCode.INTERNAL, 'The stream stopped unexpectedly; start it again.', {
  retryable: true,
});

/** The builder of a stream's terminal error frame for ``err`` at a seq (the store's ErrorFrame). */
export function errorFrame(/** @type {StreamError} */ err) {
  return (/** @type {{streamId: string}} */ rec, /** @type {number} */ seq) => new FrameBuilder(rec.streamId, seq).error(err);
}

/**
 * (status, error code) a transcript frame ends its stream with; null for others
 * (chalicelib/endings.py terminal_status).
 * @param {import('./frames.mjs').Frame} frame
 */
export function terminalStatus(frame) {
  if (frame.type === 'done') return { status: frame.stopReason === 'cancelled' ? CANCELLED : DONE, errorCode: null };
  if (frame.type === 'error' && typeof frame.seq === 'number') {
    return { status: ERROR, errorCode: /** @type {any} */ (frame).error.code };
  }
  return null;
}

// How long a stopped sender's delivery in progress is waited for before the stream is
// ended for it (chalicelib/drain.py: a quarter of the deadline margin).
const STOP_WAIT_MS = 2500;

// A frame item holds the frame's JSON with non-ASCII escaped (up to 12 bytes for
// one astral code point); DynamoDB items are at most 400 KB.
const STORE_ITEM_LIMIT = 400 * 1024;
const STORE_BYTES_PER_CHAR = 12;
// Stop generating this long before Lambda's own timeout, so the stream still ends
// with a terminal frame and the store is left consistent.
export const DEADLINE_MARGIN_MS = 10_000;

/**
 * @typedef {object} ProducerDeps
 * @property {import('./settings.mjs').Settings} settings
 * @property {Pick<import('./store.mjs').StreamStore, 'isCancelRequested'|'renewClaim'|'appendFrames'|'finish'|'get'|'endWithError'|'framesAfter'>} store
 * @property {{open(req: import('./frames.mjs').StartRequest): Pick<import('./bedrock.mjs').ModelStream, 'nextEvent'|'close'|'closed'>}} model
 * @property {import('./log.mjs').Logger} log
 * @property {() => number} [now] monotonic milliseconds
 */

/**
 * Produce one stream to ``write`` (the client) and the store; returns its final status.
 * ``record`` is the stream as created, claimed by ``workerId``.
 * @param {ProducerDeps} deps
 * @param {{streamId: string, owner: string, record: import('./store.mjs').StreamRecord, workerId: string,
 *   request: import('./frames.mjs').StartRequest,
 *   write: (frame: import('./frames.mjs').Frame) => void, remainingMs: () => number}} job
 */
export async function runStream(deps, job) {
  const { settings, store, log } = deps;
  const now = deps.now ?? (() => performance.now());
  const { streamId, owner, record } = job;
  const builder = new FrameBuilder(streamId);
  let stored = 0;
  let written = -1; // the highest seq written to the client
  /** @type {{status: string, errorCode: string|null}|null} */
  let ended = null;
  let stopped = false;
  let dropped = 0;
  /** @type {Promise<void>} the delivery in progress */
  let inFlight = Promise.resolve();
  /** @type {ProducerWatch|null} */
  let watch = null;
  const writeFrame = (/** @type {import('./frames.mjs').Frame} */ frame) => {
    job.write(frame);
    if (typeof frame.seq === 'number') written = frame.seq;
  };
  const deliverOnce = async (/** @type {import('./frames.mjs').Frame} */ frame) => {
    const end = typeof frame.seq === 'number' ? terminalStatus(frame) : null;
    if (end) {
      // Stored, then finished (the slot freed), then written.
      await store.appendFrames(record, [frame]);
      stored += 1;
      await store.finish(streamId, owner, end.status, {
        lastSeq: /** @type {number} */ (frame.seq),
        errorCode: end.errorCode,
        generation: record.generation,
      });
      ended = end;
      writeFrame(frame);
      return;
    }
    // Client first (its latency is what this architecture is measured on), then the
    // store: frames are stored in seq order by this one loop, so a client resuming
    // after any frame it saw finds every later frame there.
    writeFrame(frame);
    if (typeof frame.seq === 'number') {
      await store.appendFrames(record, [frame]);
      stored += 1;
    }
  };
  // Nothing is delivered once the stream is no longer this producer's (chalicelib/drain.py
  // DeliveryGuard): stopped to be ended here, or the claim lost to a reader.
  const deliver = (/** @type {import('./frames.mjs').Frame} */ frame) => {
    if (stopped || (watch !== null && !watch.keepClaim())) {
      dropped += 1;
      return undefined;
    }
    inFlight = deliverOnce(frame);
    return inFlight;
  };
  const maxChars = Math.min(settings.flushMaxChars, maxTextChars(STORE_ITEM_LIMIT, STORE_BYTES_PER_CHAR));
  const sender = createSender(settings.senderMode, builder, deliver, {
    intervalMs: settings.flushIntervalMs,
    maxChars,
    heartbeatIntervalMs: settings.heartbeatIntervalS * 1000,
    now,
    onFailure: ({ frame, error }) =>
      log('warn', 'frame delivery failed', { streamId, seq: frame?.seq ?? null, ...errorKind(error) }),
  }).start();

  const deadlineAt = now() + Math.max(0, job.remainingMs() - DEADLINE_MARGIN_MS);
  const produced = await produce(deps, job, sender, now, deadlineAt, (w) => {
    watch = w;
  });
  let { status } = produced;
  const { errorCode } = produced;

  // Drain within what is left before Lambda's timeout, so the last writes still run.
  const drainMs = Math.max(1000, job.remainingMs() - DEADLINE_MARGIN_MS / 2);
  let timer;
  const drained = await Promise.race([
    sender.close().then(() => true),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(false), drainMs);
    }),
  ]);
  clearTimeout(timer);
  const claimLost = /** @type {ProducerWatch|null} */ (watch)?.claimLost ?? false;
  if (!drained || ended === null) {
    // Not drained, or the terminal frame never stored: stop delivering, then end the
    // stream after what the store holds (unless someone else ended it).
    stopped = true;
    const settled = await Promise.race([
      inFlight.then(
        () => true,
        () => true,
      ),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(false), STOP_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!drained) log('error', 'sender did not drain', { streamId });
    const endedHere = settled ? await endUndelivered(store, record, log) : null;
    if (endedHere) {
      writeFrame(endedHere.frame);
      status = ERROR;
    } else if (ended === null) {
      status = ERROR;
      // Ended by a reader that took this producer for dead: the client gets its frame.
      await writeStored(store, record, written, writeFrame, log);
    } else {
      status = /** @type {{status: string}} */ (ended).status;
    }
  }
  log('info', 'stream finished', {
    streamId,
    status,
    ...(errorCode ? { errorCode } : {}),
    frames: builder.lastSeq + 1,
    stored,
    heartbeats: sender.heartbeatsSent,
    deliveryFailures: sender.failures.length,
    claimLost,
    dropped,
  });
  return { status, errorCode, lastSeq: builder.lastSeq, failures: sender.failures };
}

/** @typedef {{claimLost: boolean, keepClaim(): boolean}} ProducerWatch */

/** End a running stream after what is stored; {frame, record} or null if it already ended. */
async function endUndelivered(store, record, log) {
  try {
    const current = await store.get(record.streamId);
    if (current === null || isTerminal(current) || current.generation !== record.generation) {
      return null;
    }
    return await store.endWithError(current, errorFrame(ABANDONED), ABANDONED.code);
  } catch (err) {
    log('error', 'could not end the stream record', { streamId: record.streamId, ...errorKind(err) });
    return null;
  }
}

/** Write the stored frames after ``afterSeq`` up to the terminal one (best effort). */
async function writeStored(store, record, afterSeq, writeFrame, log) {
  try {
    for (const frame of await store.framesAfter(record, afterSeq, 1000)) {
      writeFrame(frame);
      if (TERMINAL_TYPES.has(frame.type)) return;
    }
  } catch (err) {
    log('warn', 'could not read the stored end', { streamId: record.streamId, ...errorKind(err) });
  }
}

/**
 * Run the model into the sender; returns the status and error code to finish with.
 * @param {ProducerDeps} deps
 * @param {{streamId: string, workerId: string, request: import('./frames.mjs').StartRequest}} job
 * @param {import('./sender.mjs').OrderedSender | import('./sender.mjs').PerTokenSender} sender
 * @param {() => number} now
 * @param {number} deadlineAt
 * @param {(watch: CancelWatch) => void} onWatch
 * @returns {Promise<{status: string, errorCode: string|null}>}
 */
async function produce(deps, job, sender, now, deadlineAt, onWatch) {
  const { settings, store, model, log } = deps;
  const { streamId } = job;
  sender.sendFrame((b) => b.start(settings.modelId));
  // Read at twice the flush rate so a cancel lands within one flush interval.
  const pollMs = settings.flushIntervalMs / 2;
  /** @type {ReturnType<ProducerDeps['model']['open']>|null} */
  let stream = null;
  const watch = new CancelWatch(store, streamId, pollMs, {
    now,
    // Abort the Bedrock request itself: leaving the loop alone would keep it generating.
    onCancel: () => stream?.close(),
    onError: (err) => log('warn', 'cancel flag read failed', { streamId, ...errorKind(err) }),
    claim: { workerId: job.workerId, leaseS: settings.claimLeaseS },
  });
  onWatch(watch);
  let stopReason = 'end_turn';
  /** @type {Record<string, number>|null} */
  let usage = null;
  /** @type {Record<string, number>|null} */
  let metrics = null;
  try {
    stream = model.open(job.request);
    for (;;) {
      watch.poke();
      if (watch.cancelled) {
        stopReason = 'cancelled';
        break;
      }
      if (now() > deadlineAt) throw new StreamError(ErrorCode.MODEL_TIMEOUT, 'The answer took too long.');
      const event = await stream.nextEvent(pollMs);
      if (event === END) {
        if (stream.closed && watch.cancelled) stopReason = 'cancelled';
        break;
      }
      if (event === null) continue;
      // The coalescing sender returns at once; the per-token baseline resolves after
      // delivering, so there reading the model waits on every call.
      if (event.type === 'text') await sender.sendText(event.text);
      else if (event.type === 'stop') stopReason = event.stopReason;
      else if (event.type === 'metadata') ({ usage, metrics } = event);
    }
  } catch (err) {
    let error = err;
    if (!(err instanceof StreamError)) {
      log('error', 'generation failed', { streamId, ...errorKind(err) });
      error = new StreamError(ErrorCode.INTERNAL, 'The stream failed.');
    }
    const e = /** @type {StreamError} */ (error);
    sender.sendFrame((b) => b.error(e));
    return { status: ERROR, errorCode: e.code };
  } finally {
    stream?.close();
  }
  sender.sendFrame((b) => b.done(stopReason, usage, metrics));
  return { status: stopReason === 'cancelled' ? CANCELLED : DONE, errorCode: null };
}
