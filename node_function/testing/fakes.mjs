/**
 * Test doubles: an in-memory stream store with the StreamStore interface, a
 * scriptable model, a fake Lambda response stream and a fake Bedrock SDK client.
 */

import { EventEmitter } from 'node:events';

import { END } from '../src/bedrock.mjs';
import { ErrorCode, StreamError } from '../src/errors.mjs';
import { loadSettings } from '../src/settings.mjs';
import { ClaimLost, claimLapsed, framesKey, newGeneration, STALE_AFTER_S, TERMINAL_STATUSES } from '../src/store.mjs';

/** Settings with test-friendly values on top of the defaults. */
export function testSettings(env = {}) {
  return loadSettings({ MODEL_ID: 'test-model', USER_POOL_ID: 'us-east-1_TestPool', USER_POOL_CLIENT_ID: 'client-1', ...env });
}

/** A promise plus its resolver. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve: /** @type {(v?: any) => void} */ (resolve), reject: /** @type {(e: any) => void} */ (reject) };
}

/** Something that can be waited on until a condition holds (re-checked on notify). */
export class Waitable {
  constructor() {
    /** @type {Array<{check: () => boolean, resolve: () => void}>} */
    this._waiters = [];
  }

  notify() {
    this._waiters = this._waiters.filter((w) => {
      if (!w.check()) return true;
      w.resolve();
      return false;
    });
  }

  until(/** @type {() => boolean} */ check) {
    if (check()) return Promise.resolve();
    return new Promise((resolve) => this._waiters.push({ check, resolve: () => resolve(undefined) }));
  }
}

/**
 * The StreamStore interface in memory, with the same rules (cap, owners, NOT_FOUND,
 * generations, claims, follower slots).
 */
export class MemoryStore extends Waitable {
  constructor(settings = testSettings()) {
    super();
    this.settings = settings;
    /** @type {Map<string, any>} */
    this.streams = new Map();
    /** @type {Map<string, any[]>} frames by frames key */
    this.frames = new Map();
    /** @type {Map<string, Set<string>>} */
    this.running = new Map();
    /** @type {Map<string, Map<string, number>>} follower slots by stream id and by `user#owner` */
    this.followers = new Map();
    this.calls = { create: 0, appendFrames: 0, isCancelRequested: 0, renewClaim: 0, finish: 0, framesAfter: 0 };
    /** @type {((frames: any[]) => Promise<void>|void)|null} runs before each append */
    this.beforeAppend = null;
    this.now = () => Date.now() / 1000;
  }

  async create(streamId, owner, transport, { model, claimedBy, leaseS } = {}) {
    this.calls.create += 1;
    const existing = this.streams.get(streamId);
    if (existing) {
      if (existing.owner !== owner) {
        throw new StreamError(ErrorCode.FORBIDDEN, 'This streamId is already used by another stream.');
      }
      return { record: { ...existing }, created: false };
    }
    const set = this.running.get(owner) ?? new Set();
    if (set.size >= this.settings.limits.maxStreamsPerUser) {
      const cap = this.settings.limits.maxStreamsPerUser;
      throw new StreamError(
        ErrorCode.TOO_MANY_STREAMS,
        `At most ${cap} streams may run at once per user; wait for one to finish or cancel one.`,
      );
    }
    const now = this.now();
    const record = {
      streamId,
      generation: newGeneration(),
      owner,
      status: 'running',
      transport,
      createdAt: now,
      updatedAt: now,
      expiresAt: Math.trunc(now) + 86400,
      cancelRequested: false,
      model: model ?? null,
      lastSeq: null,
      errorCode: null,
      claimedBy: claimedBy ?? null,
      leaseUntil: claimedBy ? now + (leaseS ?? this.settings.claimLeaseS) : null,
      connectionId: null,
      deliveredSeq: null,
    };
    this.streams.set(streamId, record);
    set.add(streamId);
    this.running.set(owner, set);
    this.notify();
    return { record: { ...record }, created: true };
  }

  /** Forget a stream's record, as TTL deletion does (its frames stay). */
  expire(streamId) {
    this.streams.delete(streamId);
  }

  async get(streamId) {
    const rec = this.streams.get(streamId);
    return rec ? { ...rec } : null;
  }

  async getOwned(streamId, owner) {
    const rec = await this.get(streamId);
    if (!rec || rec.owner !== owner) throw new StreamError(ErrorCode.NOT_FOUND, `Stream ${streamId} was not found.`);
    return rec;
  }

  async isCancelRequested(streamId) {
    this.calls.isCancelRequested += 1;
    return Boolean(this.streams.get(streamId)?.cancelRequested);
  }

  async renewClaim(streamId, workerId, leaseS) {
    this.calls.renewClaim += 1;
    const rec = this.streams.get(streamId);
    if (!rec || rec.claimedBy !== workerId || rec.status !== 'running') throw new ClaimLost(streamId);
    rec.leaseUntil = this.now() + leaseS;
    return Boolean(rec.cancelRequested);
  }

  requestCancel(streamId) {
    this.streams.get(streamId).cancelRequested = true;
  }

  /** The frames key of a ref (or the current generation of an id). */
  _key(stream) {
    if (typeof stream !== 'string') return framesKey(stream);
    const rec = this.streams.get(stream);
    return rec ? framesKey(rec) : stream;
  }

  async appendFrames(stream, frames) {
    this.calls.appendFrames += 1;
    if (this.beforeAppend) await this.beforeAppend(frames);
    const key = this._key(stream);
    const list = (this.frames.get(key) ?? []).filter((f) => !frames.some((n) => n.seq === f.seq));
    for (const f of frames) if (typeof f.seq === 'number') list.push(JSON.parse(JSON.stringify(f)));
    list.sort((a, b) => a.seq - b.seq);
    this.frames.set(key, list);
    this.notify();
  }

  /** Put frames directly (a stream produced elsewhere), under its current generation. */
  seed(streamId, frames) {
    const key = this._key(streamId);
    const list = this.frames.get(key) ?? [];
    list.push(...frames);
    this.frames.set(key, list);
    this.notify();
  }

  async framesAfter(stream, afterSeq, limit = 1000) {
    this.calls.framesAfter += 1;
    this.notify();
    return (this.frames.get(this._key(stream)) ?? []).filter((f) => f.seq > afterSeq).slice(0, limit);
  }

  async lastStoredSeq(stream) {
    const list = this.frames.get(this._key(stream)) ?? [];
    return list.length ? list[list.length - 1].seq : -1;
  }

  async finish(streamId, owner, status, { lastSeq, errorCode, generation }) {
    this.calls.finish += 1;
    if (!TERMINAL_STATUSES.has(status)) throw new RangeError(status);
    const rec = this.streams.get(streamId);
    let finished = null;
    if (rec && rec.status === 'running' && (!generation || rec.generation === generation)) {
      Object.assign(rec, { status, lastSeq, deliveredSeq: lastSeq, errorCode: errorCode ?? null, updatedAt: this.now() });
      finished = { ...rec };
    }
    this.running.get(owner)?.delete(streamId);
    this.notify();
    return finished;
  }

  async endWithError(record, errorFrame, errorCode) {
    const seq = (await this.lastStoredSeq(record)) + 1;
    const finished = await this.finish(record.streamId, record.owner, 'error', {
      lastSeq: seq,
      errorCode,
      generation: record.generation,
    });
    if (finished === null) return null;
    const frame = errorFrame(record, seq);
    await this.appendFrames(record, [frame]);
    return { frame, record: finished };
  }

  abandoned(record) {
    if (TERMINAL_STATUSES.has(record.status)) return false;
    const now = this.now();
    return now - record.updatedAt > STALE_AFTER_S || claimLapsed(record, now);
  }

  async endIfAbandoned(record, errorFrame, errorCode) {
    if (!this.abandoned(record)) return record;
    await this.endWithError(record, errorFrame, errorCode);
    return (await this.get(record.streamId)) ?? record;
  }

  _slots(key) {
    const slots = this.followers.get(key) ?? new Map();
    this.followers.set(key, slots);
    return slots;
  }

  _take(key, followerId, until, cap) {
    const slots = this._slots(key);
    const now = this.now();
    for (const [id, end] of slots) if (end < now) slots.delete(id);
    if (slots.size >= cap && !slots.has(followerId)) return false;
    slots.set(followerId, until);
    return true;
  }

  async acquireFollower(owner, streamId, followerId, leaseS) {
    const { maxFollowersPerStream, maxFollowersPerUser } = this.settings.limits;
    const until = this.now() + leaseS;
    if (!this._take(streamId, followerId, until, maxFollowersPerStream)) {
      throw new StreamError(ErrorCode.TOO_MANY_FOLLOWERS, `At most ${maxFollowersPerStream} readers may follow one stream at once.`);
    }
    if (!this._take(`user#${owner}`, followerId, until, maxFollowersPerUser)) {
      this._slots(streamId).delete(followerId);
      throw new StreamError(ErrorCode.TOO_MANY_FOLLOWERS, `At most ${maxFollowersPerUser} streams may be followed at once per user.`);
    }
    this.notify();
  }

  async renewFollower(owner, streamId, followerId, leaseS) {
    let held = true;
    for (const key of [streamId, `user#${owner}`]) {
      const slots = this._slots(key);
      if (slots.has(followerId)) slots.set(followerId, this.now() + leaseS);
      else held = false;
    }
    return held;
  }

  async releaseFollower(owner, streamId, followerId) {
    this._slots(streamId).delete(followerId);
    this._slots(`user#${owner}`).delete(followerId);
    this.notify();
  }

  /** Live follower slots of a stream (or, with ``user#<owner>``, of a user). */
  followersOf(key) {
    const now = this.now();
    return [...this._slots(key).values()].filter((end) => end >= now).length;
  }

  storedFrames(streamId) {
    return this.frames.get(this._key(streamId)) ?? [];
  }
}

/**
 * A model whose events the test pushes; records opens and closes (aborts).
 * ``open`` returns a stream with the ModelStream interface.
 */
export class ScriptedModel extends Waitable {
  constructor() {
    super();
    /** @type {ScriptedStream[]} */
    this.streams = [];
    /** @type {((stream: ScriptedStream) => void)|null} */
    this.onOpen = null;
  }

  open(req) {
    const stream = new ScriptedStream(this, req);
    this.streams.push(stream);
    this.onOpen?.(stream);
    this.notify();
    return stream;
  }
}

class ScriptedStream {
  constructor(model, req) {
    this._model = model;
    this.request = req;
    /** @type {any[]} */
    this._items = [];
    this._wake = null;
    this.closed = false;
    this.closeCalls = 0;
  }

  /** Queue model events: {type:'text'...}, END, or an Error to throw. */
  push(...items) {
    this._items.push(...items);
    const w = this._wake;
    this._wake = null;
    w?.();
  }

  /** A whole answer: texts, stop, metadata, END. */
  answer(texts, stopReason = 'end_turn') {
    this.push(
      ...texts.map((text) => ({ type: 'text', text })),
      { type: 'stop', stopReason },
      { type: 'metadata', usage: { inputTokens: 3, outputTokens: texts.length }, metrics: { modelFirstTokenMs: 1 } },
      END,
    );
  }

  async nextEvent(timeoutMs) {
    if (this.closed) return END;
    if (this._items.length === 0) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this._wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
    }
    if (this.closed) return END;
    if (this._items.length === 0) return null;
    const item = this._items.shift();
    if (item instanceof Error) throw item;
    return item;
  }

  close() {
    this.closeCalls += 1;
    if (this.closed) return;
    this.closed = true;
    this._model.notify();
    const w = this._wake;
    this._wake = null;
    w?.();
  }
}

/**
 * A Lambda response stream: records the prelude (as HttpResponseStream.from would
 * send it), every write and the end. ``failAfter`` makes writes throw once that
 * many have succeeded (the client went away).
 */
export class FakeResponseStream extends EventEmitter {
  constructor({ failAfter = Infinity } = {}) {
    super();
    this.waitable = new Waitable();
    /** @type {{statusCode: number, headers: Record<string, string>}|null} */
    this.prelude = null;
    /** @type {string[]} */
    this.writes = [];
    this.ended = false;
    this.failAfter = failAfter;
    this.failedWrites = 0;
  }

  write(chunk) {
    if (this.prelude === null) throw new Error('write before HttpResponseStream.from');
    if (this.writes.length >= this.failAfter) {
      this.failedWrites += 1;
      throw new Error('Cannot call write after a stream was destroyed');
    }
    this.writes.push(String(chunk));
    this.waitable.notify();
    return true;
  }

  end() {
    this.ended = true;
    this.waitable.notify();
  }

  get body() {
    return this.writes.join('');
  }

  /** The SSE events written so far: [{id, event, data, comment}] */
  get events() {
    return parseSse(this.body);
  }

  until(check) {
    return this.waitable.until(check);
  }
}

/** Emulates awslambda.HttpResponseStream.from: the prelude goes first. */
export function httpResponseStreamFrom(stream, prelude) {
  if (stream.prelude !== null) throw new Error('prelude written twice');
  stream.prelude = JSON.parse(JSON.stringify(prelude));
  return stream;
}

/** A minimal SSE parser (per the HTML spec's field rules) for assertions. */
export function parseSse(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    if (!block) continue;
    const ev = { id: null, event: null, data: null, comment: null };
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) ev.comment = line.slice(1).trim();
      else {
        const i = line.indexOf(':');
        const field = line.slice(0, i);
        const value = line.slice(i + 1).replace(/^ /, '');
        if (field === 'data') ev.data = ev.data === null ? value : `${ev.data}\n${value}`;
        else ev[field] = value;
      }
    }
    events.push(ev);
  }
  return events;
}

/** The frames (data of non-comment events) of a fake response. */
export function framesOf(stream) {
  return stream.events.filter((e) => e.data !== null).map((e) => JSON.parse(e.data));
}

/** A verifier double: "good-<sub>" tokens pass. */
export const fakeVerifier = {
  async verify(token) {
    const { TokenError } = await import('../src/jwt.mjs');
    if (!token) throw new TokenError('missing token');
    if (!token.startsWith('good-')) throw new TokenError('invalid signature');
    return { sub: token.slice(5), token_use: 'id' };
  },
};

/** A Function URL event, payload format 2.0. */
export function urlEvent({ method = 'POST', body, token, headers = {}, query = {}, path = '/', base64 = false } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  const qs = new URLSearchParams(query).toString();
  const raw = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return {
    version: '2.0',
    rawPath: path,
    rawQueryString: qs,
    queryStringParameters: qs ? { ...query } : undefined,
    headers: h,
    requestContext: { http: { method, path, sourceIp: '127.0.0.1' }, requestId: 'r-1' },
    body: raw === undefined ? undefined : base64 ? Buffer.from(raw).toString('base64') : raw,
    isBase64Encoded: base64,
  };
}

/** A Lambda context double. */
export function lambdaContext(remainingMs = 15 * 60 * 1000) {
  return { awsRequestId: 'req-1', callbackWaitsForEmptyEventLoop: true, getRemainingTimeInMillis: () => remainingMs };
}
