/**
 * One generation: Bedrock → ordered coalescing sender → (response stream, store).
 * The same idea as chalicelib/ws_flow.generate, for the Function URL.
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
import { FrameBuilder, maxTextChars } from './frames.mjs';
import { errorKind } from './log.mjs';
import { createSender } from './sender.mjs';
import { CANCELLED, CancelWatch, DONE, ERROR } from './store.mjs';

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
 * @property {Pick<import('./store.mjs').StreamStore, 'isCancelRequested'|'appendFrames'|'finish'>} store
 * @property {{open(req: import('./frames.mjs').StartRequest): Pick<import('./bedrock.mjs').ModelStream, 'nextEvent'|'close'|'closed'>}} model
 * @property {import('./log.mjs').Logger} log
 * @property {() => number} [now] monotonic milliseconds
 */

/**
 * Produce one stream to ``write`` (the client) and the store; returns its final status.
 * @param {ProducerDeps} deps
 * @param {{streamId: string, owner: string, request: import('./frames.mjs').StartRequest,
 *   write: (frame: import('./frames.mjs').Frame) => void, remainingMs: () => number}} job
 */
export async function runStream(deps, job) {
  const { settings, store, log } = deps;
  const now = deps.now ?? (() => performance.now());
  const { streamId, owner } = job;
  const builder = new FrameBuilder(streamId);
  let stored = 0;
  // Client first (its latency is what this architecture is measured on), then the
  // store: frames are stored in seq order by this one loop, so a client resuming
  // after any frame it saw finds every later frame there.
  const deliver = async (/** @type {import('./frames.mjs').Frame} */ frame) => {
    job.write(frame);
    if (typeof frame.seq === 'number') {
      await store.appendFrames(streamId, [frame]);
      stored += 1;
    }
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
  const { status, errorCode } = await produce(deps, job, sender, now, deadlineAt);

  // Drain within what is left before Lambda's timeout, so finish() still runs.
  const drainMs = Math.max(1000, job.remainingMs() - DEADLINE_MARGIN_MS / 2);
  let timer;
  const drained = await Promise.race([
    sender.close().then(() => true),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(false), drainMs);
    }),
  ]);
  clearTimeout(timer);
  if (!drained) log('error', 'sender did not drain', { streamId });
  try {
    await store.finish(streamId, owner, status, { lastSeq: builder.lastSeq, errorCode });
  } catch (err) {
    log('error', 'could not finish the stream record', { streamId, ...errorKind(err) });
  }
  log('info', 'stream finished', {
    streamId,
    status,
    ...(errorCode ? { errorCode } : {}),
    frames: builder.lastSeq + 1,
    stored,
    heartbeats: sender.heartbeatsSent,
    deliveryFailures: sender.failures.length,
  });
  return { status, errorCode, lastSeq: builder.lastSeq, failures: sender.failures };
}

/**
 * Run the model into the sender; returns the status and error code to finish with.
 * @param {ProducerDeps} deps
 * @param {{streamId: string, request: import('./frames.mjs').StartRequest}} job
 * @param {import('./sender.mjs').OrderedSender | import('./sender.mjs').PerTokenSender} sender
 * @param {() => number} now
 * @param {number} deadlineAt
 * @returns {Promise<{status: string, errorCode: string|null}>}
 */
async function produce(deps, job, sender, now, deadlineAt) {
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
  });
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
