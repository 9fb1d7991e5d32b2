/**
 * The Function URL handler (architecture 1): Lambda response streaming, payload
 * format 2.0, SSE out.
 *
 *   POST /  Authorization: Bearer <idToken>, body = start request (docs/protocol.md)
 *           → 200 text/event-stream with the stream's frames, or an error status.
 *   GET  /?streamId=<uuid>  with Last-Event-ID: <seq> (or ?lastEventId=<seq>)
 *           → 200 text/event-stream replaying stored frames after that seq, then
 *             following the stream in the store until its terminal frame; 204 when
 *             the stream has ended and the client already holds its terminal frame.
 *
 * A follower (a GET, or a start re-posted for an existing stream) holds a follower
 * slot for as long as it follows: at most MAX_FOLLOWERS_PER_STREAM per stream and
 * MAX_FOLLOWERS_PER_USER per user, else 429 TOO_MANY_FOLLOWERS before the SSE starts.
 * The slot is a lease renewed while following, so a follower whose Lambda dies frees
 * it within one lease. A follower that finds the producer dead (its claim's lease
 * lapsed, or no update for a Lambda's lifetime) ends the stream with one error frame
 * after what is stored, which frees the owner's slot, and delivers that frame.
 *
 * Everything that can fail before streaming (auth, validation, the stream record
 * and its per-user cap) is settled first and answered with a real status and
 * ``{"error": {"code", "message"}}``; only then are the 200 SSE headers written.
 * Failures after that are ``error`` frames. CORS (including OPTIONS) is the
 * Function URL's job: this handler adds no CORS headers, since duplicated
 * Access-Control-* headers make browsers reject the response.
 *
 * The same handler serves the REST API's streaming routes (architecture 4):
 * src/frontdoor.mjs reads their REST proxy events into the same request view and
 * writes their prelude; everything else here is shared.
 */

import { performance } from 'node:perf_hooks';

import { ErrorCode, StreamError } from './errors.mjs';
import { MAX_SEQ, parseStartRequest, parseStreamId, rejection, TERMINAL_TYPES } from './frames.mjs';
import { frontDoor } from './frontdoor.mjs';
import { parseJson } from './json_input.mjs';
import { bearerToken, TokenError } from './jwt.mjs';
import { errorKind } from './log.mjs';
import { randomUUID } from 'node:crypto';

import { ABANDONED, errorFrame, runStream } from './producer.mjs';
import { HEARTBEAT, sseEvent } from './sse.mjs';
import { isTerminal } from './store.mjs';

const SSE_HEADERS = Object.freeze({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
const JSON_HEADERS = Object.freeze({ 'Content-Type': 'application/json' });
// Every HTTP entry point refuses a bad token with API Gateway's own answer for a failed
// authorizer, whatever the reason (the reason goes to the log only): the REST API and its
// streaming routes answer this at the gateway, the Function URL here.
export const UNAUTHORIZED_BODY = '{"message":"Unauthorized"}';
const REPLAY_PAGE = 500;
// How often a follower re-reads the stream record (to notice a stream whose
// producer died or whose terminal frame never reached the store).
const RECORD_CHECK_MS = 1000;
// A follower hands the client back (it reconnects with Last-Event-ID) this long
// before Lambda's timeout, so the response ends cleanly.
const FOLLOW_MARGIN_MS = 5000;
const DEFAULT_REMAINING_MS = 15 * 60 * 1000;

/**
 * @typedef {object} HandlerDeps
 * @property {import('./settings.mjs').Settings} settings
 * @property {{verify(token: string|null): Promise<Record<string, any>>}} verifier
 * @property {Pick<import('./store.mjs').StreamStore, 'create'|'get'|'getOwned'|'framesAfter'|'isCancelRequested'
 *   |'renewClaim'|'appendFrames'|'finish'|'endWithError'|'endIfAbandoned'|'abandoned'|'acquireFollower'
 *   |'renewFollower'|'releaseFollower'>} store
 * @property {import('./producer.mjs').ProducerDeps['model']} model
 * @property {(stream: any, prelude: {statusCode: number, headers: Record<string, string>}) => any} httpResponseStreamFrom
 *   awslambda.HttpResponseStream.from
 * @property {import('./log.mjs').Logger} log
 * @property {string} [corsAllowOrigin] the REST front door's Access-Control-Allow-Origin
 *   (``none``: no header; the Function URL's CORS is the URL's own)
 * @property {() => number} [now] monotonic milliseconds
 * @property {(ms: number) => Promise<void>} [sleep]
 */

/** The response: JSON error or SSE, written at most once, tolerant of a gone client. */
class Response {
  /** @param {any} responseStream @param {HandlerDeps['httpResponseStreamFrom']} from @param {HandlerDeps['log']} log */
  constructor(responseStream, from, log) {
    this._raw = responseStream;
    this._from = from;
    this._log = log;
    /** @type {any} */
    this._stream = null;
    this.committed = false;
    this.gone = false;
    this.bytes = 0;
    /** The stream record's transport: which front door the request came through. */
    this.transport = '';
    this._onError = () => this._markGone('error event');
    // An unhandled 'error' event would crash the process; a failed write only
    // means the client is gone.
    responseStream?.on?.('error', this._onError);
  }

  _markGone(/** @type {string} */ why) {
    if (!this.gone) {
      this.gone = true;
      this._log('info', 'client gone', { why });
    }
  }

  /** @param {number} statusCode @param {Record<string, string>} headers */
  _open(statusCode, headers) {
    if (this.committed) throw new Error('response already started');
    this.committed = true;
    this._stream = this._from(this._raw, { statusCode, headers: { ...headers } });
    if (this._stream !== this._raw) this._stream?.on?.('error', this._onError);
  }

  /** An error answer before any streaming. */
  sendError(/** @type {StreamError} */ err, /** @type {Record<string, string>} */ extraHeaders = {}) {
    this._open(err.httpStatus, { ...JSON_HEADERS, ...extraHeaders });
    this.write(JSON.stringify({ error: { code: err.code, message: err.message } }));
  }

  /** 401 with the one refusal body every HTTP entry point gives. */
  sendUnauthorized() {
    this._open(401, { ...JSON_HEADERS, 'WWW-Authenticate': 'Bearer' });
    this.write(UNAUTHORIZED_BODY);
  }

  /** 204 and no body: nothing to send (EventSource stops reconnecting on a 204). */
  sendNoContent() {
    this._open(204, {});
    // Lambda sends the status only on a write(): end() alone would answer 200
    // (aws/aws-lambda-nodejs-runtime-interface-client#97).
    this.write('');
  }

  /** Commit to 200 and SSE: from here on, failures are frames. */
  startSse() {
    this._open(200, SSE_HEADERS);
  }

  /** Write if the client is still there; never throws. */
  write(/** @type {string} */ text) {
    if (this.gone || !this._stream) return false;
    try {
      this._stream.write(text);
      this.bytes += Buffer.byteLength(text);
      return true;
    } catch {
      this._markGone('write failed');
      return false;
    }
  }

  end() {
    try {
      if (!this.committed) this._open(500, JSON_HEADERS); // never leave the prelude unwritten
      this._stream?.end();
    } catch {
      // The client is gone; nothing to end.
    }
  }
}

/** @param {Record<string, string>|undefined} headers @param {string} name */
function header(headers, name) {
  if (!headers) return undefined;
  if (headers[name] !== undefined) return headers[name]; // payload 2.0 lower-cases names
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}

/** @param {any} event */
function queryParams(event) {
  if (event.queryStringParameters) return event.queryStringParameters;
  return Object.fromEntries(new URLSearchParams(event.rawQueryString ?? ''));
}

/** @param {any} event */
function bodyText(event) {
  if (event.body == null) return '';
  return event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : String(event.body);
}

const bad = (/** @type {string} */ message) => new StreamError(ErrorCode.BAD_REQUEST, message);

/** The seq a resume starts after: Last-Event-ID header, else ?lastEventId=, else -1. */
function parseAfterSeq(/** @type {string|undefined} */ raw) {
  if (raw === undefined || raw.trim() === '') return -1;
  if (!/^\s*[+-]?\d+\s*$/.test(raw)) throw bad('Last-Event-ID must be an integer');
  const value = Number.parseInt(raw, 10);
  if (value < -1 || value > MAX_SEQ) throw bad(`Last-Event-ID must be from -1 to ${MAX_SEQ}`);
  return value;
}

/**
 * The streamifyResponse handler, with its dependencies injected.
 * @param {HandlerDeps} deps
 */
export function createStreamHandler(deps) {
  const { settings, verifier, store, log } = deps;
  const now = deps.now ?? (() => performance.now());
  const sleep = deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));

  /**
   * @param {any} rawEvent Function URL event (payload format 2.0) or REST proxy event
   * @param {any} responseStream
   * @param {any} [context]
   */
  return async function streamHandler(rawEvent, responseStream, context) {
    // Nothing left on the event loop (a keep-alive socket, an SDK timer) may hold
    // the invocation open once the response has ended.
    if (context) context.callbackWaitsForEmptyEventLoop = false;
    const requestId = context?.awsRequestId;
    const rlog = /** @type {import('./log.mjs').Logger} */ (
      (level, msg, fields) => log(level, msg, { ...(requestId ? { requestId } : {}), ...fields })
    );
    // The front door (src/frontdoor.mjs): how the request is read and the prelude written.
    const door = frontDoor(rawEvent, { corsAllowOrigin: deps.corsAllowOrigin });
    const event = door.event;
    const res = new Response(responseStream, (s, p) => deps.httpResponseStreamFrom(s, door.prelude(p)), rlog);
    res.transport = door.transport;
    const remainingMs = () =>
      typeof context?.getRemainingTimeInMillis === 'function' ? context.getRemainingTimeInMillis() : DEFAULT_REMAINING_MS;
    const method = String(event?.requestContext?.http?.method ?? '').toUpperCase();
    try {
      const owner = await authenticate(event, rlog, door);
      const path = event?.rawPath ?? '/';
      if (path !== '/' && path !== '') throw new StreamError(ErrorCode.NOT_FOUND, 'Not found.');
      if (method === 'POST') await start(event, owner, res, rlog, remainingMs, requestId);
      else if (method === 'GET') await resume(event, owner, res, rlog, remainingMs);
      // 405 would be the exact status; BAD_REQUEST keeps to the protocol's error codes.
      else res.sendError(bad('Use POST to start a stream or GET to resume one.'), { Allow: 'GET, POST' });
    } catch (err) {
      if (res.committed) {
        // Producers turn their own failures into frames; this is a follower failing.
        rlog('error', 'stream failed after the response started', errorKind(err));
      } else if (err instanceof StreamError && err.code === ErrorCode.UNAUTHORIZED) {
        res.sendUnauthorized();
      } else if (err instanceof StreamError) {
        res.sendError(err);
      } else {
        rlog('error', 'unhandled error', { method, ...errorKind(err) });
        res.sendError(new StreamError(ErrorCode.INTERNAL, 'Internal error.'));
      }
    } finally {
      res.end();
    }
  };

  /** The caller's ``sub``, or UNAUTHORIZED (the reason is logged, never answered). */
  async function authenticate(event, rlog, door) {
    const token = bearerToken(header(event?.headers, 'authorization'));
    try {
      const claims = await verifier.verify(token);
      if (typeof claims.sub !== 'string' || !claims.sub) throw new TokenError('missing required claim');
      // Defence in depth behind a gateway authorizer: both must name the same user.
      if (door.gatewaySub !== null && door.gatewaySub !== claims.sub) throw new TokenError('principal mismatch');
      return claims.sub;
    } catch (err) {
      if (err instanceof TokenError) {
        rlog('info', 'token rejected', { reason: err.reason, entry: door.transport });
        throw new StreamError(ErrorCode.UNAUTHORIZED, 'Unauthorized.');
      }
      throw err;
    }
  }

  async function start(event, owner, res, rlog, remainingMs, requestId) {
    const body = parseJson(bodyText(event), 'the request body');
    const request = parseStartRequest(body, settings.limits);
    const { streamId } = request;
    // Created claimed by this invocation, under a lease renewed while it produces.
    const workerId = requestId ?? randomUUID();
    const { record, created } = await store.create(streamId, owner, res.transport, {
      model: settings.modelId,
      claimedBy: workerId,
      leaseS: settings.claimLeaseS,
    });
    if (!created) {
      // The same owner retrying a start: replay and follow, no second generation.
      rlog('info', 'start retried; following the existing stream', { streamId });
      await following(owner, record, res, -1, rlog, remainingMs);
      return;
    }
    res.startSse();
    rlog('info', 'stream started', { streamId, maxTokens: request.maxTokens });
    await runStream(
      { settings, store, model: deps.model, log: rlog, now },
      { streamId, owner, record, workerId, request, write: (frame) => res.write(sseEvent(frame)), remainingMs },
    );
  }

  async function resume(event, owner, res, rlog, remainingMs) {
    const query = queryParams(event);
    if (query.streamId === undefined) throw bad('the streamId query parameter is required');
    const streamId = parseStreamId(query.streamId);
    const lastEventId = header(event.headers, 'last-event-id') ?? query.lastEventId;
    const afterSeq = parseAfterSeq(lastEventId);
    const record = await store.getOwned(streamId, owner); // NOT_FOUND for anyone else's
    if (isTerminal(record) && record.lastSeq !== null && record.lastSeq >= 0 && afterSeq >= record.lastSeq) {
      // The client holds the terminal frame already. Following would find nothing and
      // report the stream as broken; 204 says "nothing more", and stops an EventSource
      // from reconnecting.
      rlog('info', 'resume after the end: nothing to send', { streamId, afterSeq });
      res.sendNoContent();
      return;
    }
    rlog('info', 'stream resumed', { streamId, afterSeq });
    await following(owner, record, res, afterSeq, rlog, remainingMs);
  }

  /** Take a follower slot (429 before the SSE starts), follow, release the slot. */
  async function following(owner, record, res, afterSeq, rlog, remainingMs) {
    const followerId = `url-${randomUUID()}`;
    await store.acquireFollower(owner, record.streamId, followerId, settings.claimLeaseS);
    try {
      res.startSse();
      await follow(res, owner, record, followerId, afterSeq, rlog, remainingMs);
    } finally {
      try {
        await store.releaseFollower(owner, record.streamId, followerId);
      } catch (err) {
        // Its lease frees it all the same.
        rlog('warn', 'could not release a follower slot', { streamId: record.streamId, ...errorKind(err) });
      }
    }
  }

  /**
   * Replay stored frames after ``afterSeq`` and follow the stream through the store
   * (polled every flush interval) until its terminal frame, renewing the follower slot.
   */
  async function follow(res, owner, record, followerId, afterSeq, rlog, remainingMs) {
    const { streamId } = record;
    const deadlineAt = now() + Math.max(0, remainingMs() - FOLLOW_MARGIN_MS);
    const renewEveryMs = (settings.claimLeaseS * 1000) / 3;
    let cursor = afterSeq;
    let lastWrite = now();
    let recordCheckedAt = now();
    let renewedAt = now();
    const writeStored = async () => {
      // Frames of this generation only: frames an earlier stream of the id left are never read.
      for (;;) {
        const frames = await store.framesAfter(record, cursor, REPLAY_PAGE);
        for (const frame of frames) {
          res.write(sseEvent(frame));
          lastWrite = now();
          cursor = /** @type {number} */ (frame.seq);
          if (TERMINAL_TYPES.has(frame.type)) return true;
        }
        if (frames.length < REPLAY_PAGE) return false;
      }
    };
    const fail = (/** @type {StreamError} */ err) => res.write(sseEvent(rejection(err, streamId)));
    for (;;) {
      if (await writeStored()) return;
      if (res.gone) return; // a follower has nothing to do for a client that left
      if (now() - renewedAt >= renewEveryMs) {
        renewedAt = now();
        if (!(await store.renewFollower(owner, streamId, followerId, settings.claimLeaseS))) {
          // Pruned after its lease lapsed (this Lambda was frozen): take one again or stop.
          try {
            await store.acquireFollower(owner, streamId, followerId, settings.claimLeaseS);
          } catch (err) {
            if (!(err instanceof StreamError)) throw err;
            fail(err);
            return;
          }
        }
      }
      if (now() - recordCheckedAt >= RECORD_CHECK_MS) {
        recordCheckedAt = now();
        const current = await store.get(streamId);
        if (current !== null && current.generation === record.generation && store.abandoned(current)) {
          // Its producer died: end it here with one error frame after what is stored
          // (freeing the owner's slot); the next read delivers that frame.
          rlog('warn', 'producer gone; ending the stream', { streamId });
          await store.endIfAbandoned(current, errorFrame(ABANDONED), ABANDONED.code);
          continue;
        }
        if (current === null || current.generation !== record.generation || isTerminal(current)) {
          // One more read: the producer stores its terminal frame before finishing.
          if (await writeStored()) return;
          rlog('warn', 'stream ended without a stored terminal frame', { streamId });
          fail(new StreamError(ErrorCode.INTERNAL, 'The stream ended unexpectedly.'));
          return;
        }
      }
      if (now() >= deadlineAt) {
        // The client reconnects with Last-Event-ID and carries on from the store.
        rlog('info', 'follow handed back before the Lambda timeout', { streamId, cursor });
        return;
      }
      if (now() - lastWrite >= settings.heartbeatIntervalS * 1000) {
        res.write(HEARTBEAT);
        lastWrite = now();
      }
      await sleep(settings.flushIntervalMs);
    }
  }
}
