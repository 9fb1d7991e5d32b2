/**
 * The stream store of docs/architecture.md, stream store on DynamoDB: the same tables, keys, item shapes
 * and conditions as chalicelib/stream_store.py, so the REST API (Python) can
 * read, cancel and resume streams this function produces.
 *
 * streams table (key ``pk``): ``stream#<id>`` items (owner, status, transport,
 * cancel flag, timestamps, ``expiresAt``) and ``user#<sub>`` items whose string
 * set ``running`` holds that user's running streams; the per-user cap is a size
 * condition on that set inside the transaction that creates the stream.
 * frames table (``streamId`` + ``seq``): one item per transcript frame, its JSON
 * in ``frame``, written as frames are flushed. The hash key is
 * ``<streamId>#<generation>``: each creation of an id gets a new random generation,
 * so frames that outlive their record are never read as a later stream's.
 * Follower slots: ``followers`` maps (follower id -> lease end) on the stream record
 * and on the user item, bounded per stream and per user (chalicelib/store/followers.py).
 */

import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import {
  BatchWriteItemCommand,
  GetItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';

import { ErrorCode, StreamError } from './errors.mjs';

export const RUNNING = 'running';
export const DONE = 'done';
export const ERROR = 'error';
export const CANCELLED = 'cancelled';
export const TERMINAL_STATUSES = new Set([DONE, ERROR, CANCELLED]);
export const TRANSPORT = 'function_url';

// A producer cannot outlive Lambda's 15-minute maximum; a stream still marked
// running long after its last update lost its producer and must not hold a slot.
export const STALE_AFTER_S = 15 * 60 + 60;

const BATCH = 25; // BatchWriteItem's per-call maximum
const BATCH_RETRIES = 8;

/**
 * @typedef {object} StreamRecord
 * @property {string} streamId
 * @property {string} owner
 * @property {string} status
 * @property {string} transport
 * @property {number} createdAt
 * @property {number} updatedAt
 * @property {number} expiresAt
 * @property {boolean} cancelRequested
 * @property {string|null} model
 * @property {number|null} lastSeq
 * @property {string|null} errorCode
 * @property {string|null} claimedBy the producer, which renews its claim as a lease
 * @property {number|null} leaseUntil until when that claim holds (epoch seconds)
 * @property {string|null} connectionId
 * @property {number|null} deliveredSeq
 * @property {string|null} generation random per creation of the id; part of the frames' key
 */

/** @typedef {{streamId: string, generation: string|null}} StreamRef */
/** @typedef {(rec: StreamRecord, seq: number) => import('./frames.mjs').Frame} ErrorFrame */

/** The stream no longer runs under the caller's claim. */
export class ClaimLost extends Error {}

/** A random generation: 64 bits (chalicelib/store/lifecycle.py new_generation). */
export function newGeneration() {
  return randomBytes(8).toString('hex');
}

/** The frames table's hash key of one generation of a stream. */
export function framesKey(/** @type {StreamRef} */ ref) {
  return ref.generation ? `${ref.streamId}#${ref.generation}` : ref.streamId;
}

/** @param {StreamRecord} rec */
export function isTerminal(rec) {
  return TERMINAL_STATUSES.has(rec.status);
}

/**
 * The stream is claimed under a lease nobody renewed in time: its producer died
 * (chalicelib/stream_store.py claim_lapsed).
 * @param {StreamRecord} rec @param {number} nowS epoch seconds
 */
export function claimLapsed(rec, nowS) {
  return rec.claimedBy !== null && rec.leaseUntil !== null && nowS > rec.leaseUntil;
}

const streamKey = (/** @type {string} */ id) => ({ pk: { S: `stream#${id}` } });
const userKey = (/** @type {string} */ owner) => ({ pk: { S: `user#${owner}` } });

/** @returns {StreamRecord} */
function toRecord(/** @type {Record<string, any>} */ item) {
  const s = (/** @type {string} */ n) => (item[n] ? item[n].S : null);
  const n = (/** @type {string} */ k) => (item[k] ? Number(item[k].N) : null);
  const lastSeq = n('lastSeq');
  return {
    streamId: item.streamId.S,
    owner: item.owner.S,
    status: item.status.S,
    transport: item.transport.S,
    createdAt: n('createdAt') ?? 0,
    updatedAt: n('updatedAt') ?? 0,
    expiresAt: Math.trunc(n('expiresAt') ?? 0),
    cancelRequested: item.cancelRequested?.BOOL ?? false,
    model: s('model'),
    lastSeq: lastSeq === null ? null : Math.trunc(lastSeq),
    errorCode: s('errorCode'),
    claimedBy: s('claimedBy'),
    leaseUntil: n('leaseUntil'),
    connectionId: s('connectionId'),
    deliveredSeq: n('deliveredSeq') === null ? null : Math.trunc(/** @type {number} */ (n('deliveredSeq'))),
    generation: s('generation'),
  };
}

/**
 * JSON the way Python's json.dumps(separators=(",", ":")) writes it (ASCII only,
 * \uXXXX escapes), so stored frames are byte-identical whichever side wrote them.
 * @param {unknown} value
 */
export function asciiJson(value) {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const errorName = (/** @type {any} */ err) => (err && typeof err === 'object' ? err.name : undefined);
const conditionFailed = (/** @type {any} */ err) => errorName(err) === 'ConditionalCheckFailedException';
const PRUNE_AT_ONCE = 50;
const TAKE_ATTEMPTS = 3;

class StreamExists extends Error {}
class CapReached extends Error {}

export class StreamStore {
  /**
   * @param {import('./settings.mjs').Settings} settings
   * @param {{send(command: any): Promise<any>}} client a DynamoDBClient
   * @param {{now?: () => number, sleep?: (ms: number) => Promise<void>}} [options] now in epoch seconds
   */
  constructor(settings, client, options = {}) {
    this._settings = settings;
    this.client = client;
    this._now = options.now ?? (() => Date.now() / 1000);
    this._sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  get _streams() {
    return this._settings.streamsTable;
  }

  get _frames() {
    return this._settings.framesTable;
  }

  /**
   * An UpdateItem on the streams table whose condition may fail: the response, or null
   * when DynamoDB refused it on its condition (any other failure is thrown).
   * @param {Record<string, any>} params UpdateItem input without TableName
   */
  async _updateIf(params) {
    try {
      return await this.client.send(new UpdateItemCommand({ TableName: this._streams, ...params }));
    } catch (err) {
      if (!conditionFailed(err)) throw err;
      return null;
    }
  }

  _expiresAt(/** @type {number} */ now) {
    return Math.trunc(now) + this._settings.streamTtlS;
  }

  // -- create and the per-user cap --------------------------------------------------

  /**
   * Create a running stream owned by ``owner``. The same owner creating the same id
   * again gets the existing record and ``created: false`` (idempotent retries);
   * another owner's id is FORBIDDEN; a user at the cap gets TOO_MANY_STREAMS.
   * @param {string} streamId @param {string} owner @param {string} transport
   * An expired record (TTL deletes lazily) is replaced by a new generation. With
   * ``claimedBy`` the stream is created claimed by that producer under a lease of
   * ``leaseS`` (the same fields a Python producer's claim writes).
   * @param {{model?: string, claimedBy?: string, leaseS?: number}} [options]
   * @returns {Promise<{record: StreamRecord, created: boolean}>}
   */
  async create(streamId, owner, transport, options = {}) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        return { record: await this._createOnce(streamId, owner, transport, options), created: true };
      } catch (err) {
        if (err instanceof StreamExists) {
          const existing = await this.get(streamId);
          // It expired between our write and read: nothing to return.
          if (existing === null) throw new StreamError(ErrorCode.INTERNAL, 'Please retry.');
          if (existing.owner !== owner) {
            throw new StreamError(ErrorCode.FORBIDDEN, 'This streamId is already used by another stream.');
          }
          return { record: existing, created: false };
        }
        if (err instanceof CapReached) {
          if (attempt === 0 && (await this._releaseDeadSlots(owner))) continue;
          const cap = this._settings.limits.maxStreamsPerUser;
          throw new StreamError(
            ErrorCode.TOO_MANY_STREAMS,
            `At most ${cap} streams may run at once per user; wait for one to finish or cancel one.`,
          );
        }
        throw err;
      }
    }
    throw new Error('unreachable');
  }

  async _createOnce(streamId, owner, transport, { model, claimedBy, leaseS } = {}) {
    const now = this._now();
    /** @type {Record<string, any>} */
    const item = {
      ...streamKey(streamId),
      streamId: { S: streamId },
      generation: { S: newGeneration() },
      owner: { S: owner },
      status: { S: RUNNING },
      transport: { S: transport },
      cancelRequested: { BOOL: false },
      followers: { M: {} },
      createdAt: { N: String(now) },
      updatedAt: { N: String(now) },
      expiresAt: { N: String(this._expiresAt(now)) },
    };
    if (model) item.model = { S: model };
    if (claimedBy) {
      item.claimedBy = { S: claimedBy };
      item.leaseUntil = { N: String(now + (leaseS ?? this._settings.claimLeaseS)) };
    }
    try {
      await this.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this._streams,
                Item: item,
                ConditionExpression: 'attribute_not_exists(pk) OR expiresAt < :now',
                ExpressionAttributeValues: { ':now': { N: String(Math.trunc(now)) } },
              },
            },
            {
              Update: {
                TableName: this._streams,
                Key: userKey(owner),
                UpdateExpression: 'ADD #running :sid SET expiresAt = :exp, #followers = if_not_exists(#followers, :none)',
                ConditionExpression: 'attribute_not_exists(#running) OR size(#running) < :cap',
                ExpressionAttributeNames: { '#running': 'running', '#followers': 'followers' },
                ExpressionAttributeValues: {
                  ':sid': { SS: [streamId] },
                  ':cap': { N: String(this._settings.limits.maxStreamsPerUser) },
                  ':exp': { N: String(this._expiresAt(now)) },
                  ':none': { M: {} },
                },
              },
            },
          ],
        }),
      );
    } catch (err) {
      if (errorName(err) !== 'TransactionCanceledException') throw err;
      const reasons = (/** @type {any} */ (err).CancellationReasons ?? []).map((/** @type {any} */ r) => r?.Code);
      if (reasons[0] === 'ConditionalCheckFailed') throw new StreamExists();
      if (reasons[1] === 'ConditionalCheckFailed') throw new CapReached();
      throw err;
    }
    return toRecord(item);
  }

  /** Drop slots of streams that ended or lost their producer; true if any. */
  async _releaseDeadSlots(/** @type {string} */ owner) {
    const resp = await this.client.send(
      new GetItemCommand({ TableName: this._streams, Key: userKey(owner), ConsistentRead: true }),
    );
    /** @type {string[]} */
    const running = resp.Item?.running?.SS ?? [];
    const now = this._now();
    const dead = [];
    for (const sid of running) {
      const rec = await this.get(sid);
      // Ended, reused by another owner, or its producer died: no update for a Lambda's
      // lifetime, or a lapsed lease.
      if (
        rec === null ||
        rec.owner !== owner ||
        isTerminal(rec) ||
        now - rec.updatedAt > STALE_AFTER_S ||
        claimLapsed(rec, now)
      ) {
        dead.push(sid);
      }
    }
    if (dead.length) await this._releaseSlots(owner, dead);
    return dead.length > 0;
  }

  async _releaseSlots(/** @type {string} */ owner, /** @type {string[]} */ streamIds) {
    await this.client.send(
      new UpdateItemCommand({
        TableName: this._streams,
        Key: userKey(owner),
        UpdateExpression: 'DELETE #running :sids',
        ExpressionAttributeNames: { '#running': 'running' },
        ExpressionAttributeValues: { ':sids': { SS: streamIds } },
      }),
    );
  }

  // -- reads ------------------------------------------------------------------------

  /** @returns {Promise<StreamRecord|null>} null when missing or expired */
  async get(/** @type {string} */ streamId) {
    const resp = await this.client.send(
      new GetItemCommand({ TableName: this._streams, Key: streamKey(streamId), ConsistentRead: true }),
    );
    if (!resp.Item) return null;
    const rec = toRecord(resp.Item);
    // TTL deletion is lazy (and absent in emulators): an expired item is missing.
    if (rec.expiresAt && rec.expiresAt < this._now()) return null;
    return rec;
  }

  /** The stream if ``owner`` owns it; otherwise NOT_FOUND (existence is not leaked). */
  async getOwned(/** @type {string} */ streamId, /** @type {string} */ owner) {
    const rec = await this.get(streamId);
    if (rec === null || rec.owner !== owner) {
      throw new StreamError(ErrorCode.NOT_FOUND, `Stream ${streamId} was not found.`);
    }
    return rec;
  }

  async isCancelRequested(/** @type {string} */ streamId) {
    const resp = await this.client.send(
      new GetItemCommand({
        TableName: this._streams,
        Key: streamKey(streamId),
        ConsistentRead: true,
        ProjectionExpression: 'cancelRequested',
      }),
    );
    return Boolean(resp.Item?.cancelRequested?.BOOL);
  }

  /**
   * The frames key of a reference or record; for a bare id, of its current generation
   * (one read; null when no such stream is live).
   * @param {StreamRef|string} stream
   */
  async _framesKey(stream) {
    if (typeof stream !== 'string') return framesKey(stream);
    const rec = await this.get(stream);
    return rec === null ? null : framesKey(rec);
  }

  /**
   * Stored frames of this generation with seq > afterSeq, in order, at most ``limit``.
   * @param {StreamRef|string} stream
   * @returns {Promise<import('./frames.mjs').Frame[]>}
   */
  async framesAfter(stream, /** @type {number} */ afterSeq, limit = 1000) {
    /** @type {import('./frames.mjs').Frame[]} */
    const frames = [];
    const key = await this._framesKey(stream);
    if (key === null) return frames;
    /** @type {Record<string, any>|undefined} */
    let startKey;
    while (frames.length < limit) {
      const resp = await this.client.send(
        new QueryCommand({
          TableName: this._frames,
          KeyConditionExpression: 'streamId = :s AND seq > :n',
          ExpressionAttributeValues: { ':s': { S: key }, ':n': { N: String(afterSeq) } },
          ConsistentRead: true,
          Limit: limit - frames.length,
          ...(startKey ? { ExclusiveStartKey: startKey } : {}),
        }),
      );
      for (const item of resp.Items ?? []) frames.push(JSON.parse(item.frame.S));
      if (!resp.LastEvaluatedKey) break;
      startKey = resp.LastEvaluatedKey;
    }
    return frames;
  }

  // -- producer side ----------------------------------------------------------------

  /** The highest stored seq (-1 when nothing is stored). */
  async lastStoredSeq(/** @type {StreamRef|string} */ stream) {
    const key = await this._framesKey(stream);
    if (key === null) return -1;
    const resp = await this.client.send(
      new QueryCommand({
        TableName: this._frames,
        KeyConditionExpression: 'streamId = :s',
        ExpressionAttributeValues: { ':s': { S: key } },
        ProjectionExpression: 'seq',
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
      }),
    );
    const items = resp.Items ?? [];
    return items.length ? Number(items[0].seq.N) : -1;
  }

  /** Store transcript frames (those with a seq); one BatchWriteItem per 25. */
  async appendFrames(/** @type {StreamRef|string} */ stream, /** @type {import('./frames.mjs').Frame[]} */ frames) {
    const key = await this._framesKey(stream);
    if (key === null) throw new StreamError(ErrorCode.NOT_FOUND, 'The stream was not found.');
    const expires = { N: String(this._expiresAt(this._now())) };
    const requests = frames
      .filter((f) => typeof f.seq === 'number')
      .map((frame) => ({
        PutRequest: {
          Item: {
            streamId: { S: key },
            seq: { N: String(frame.seq) },
            frame: { S: asciiJson(frame) },
            expiresAt: expires,
          },
        },
      }));
    for (let start = 0; start < requests.length; start += BATCH) {
      /** @type {Record<string, any>} */
      let pending = { [this._frames]: requests.slice(start, start + BATCH) };
      for (let attempt = 0; attempt < BATCH_RETRIES; attempt += 1) {
        const resp = await this.client.send(new BatchWriteItemCommand({ RequestItems: pending }));
        pending = resp.UnprocessedItems ?? {};
        if (Object.keys(pending).length === 0) break;
        // Throttled partitions: back off before resending what was left.
        await this._sleep(Math.min(50 * 2 ** attempt, 1000));
      }
      if (Object.keys(pending).length) {
        throw new StreamError(ErrorCode.INTERNAL, 'The stream store is busy; please retry.');
      }
    }
  }

  /**
   * Mark a running stream terminal and free its owner's slot. Returns the record as
   * finished (the delivery cursor moved to ``lastSeq`` in the same write), or null if it
   * had already ended. With ``generation``, only that generation of the id is finished.
   * @param {string} streamId @param {string} owner @param {string} status
   * @param {{lastSeq: number, errorCode?: string|null, generation?: string|null}} options
   * @returns {Promise<StreamRecord|null>}
   */
  async finish(streamId, owner, status, { lastSeq, errorCode, generation }) {
    if (!TERMINAL_STATUSES.has(status)) throw new RangeError(`not a terminal status: ${status}`);
    /** @type {Record<string, any>} */
    const values = {
      ':status': { S: status },
      ':running': { S: RUNNING },
      ':now': { N: String(this._now()) },
      ':seq': { N: String(lastSeq) },
    };
    let update = 'SET #status = :status, updatedAt = :now, lastSeq = :seq, deliveredSeq = :seq';
    if (errorCode) {
      update += ', errorCode = :code';
      values[':code'] = { S: errorCode };
    }
    let condition = '#status = :running';
    if (generation) {
      condition += ' AND generation = :gen';
      values[':gen'] = { S: generation };
    }
    /** @type {StreamRecord|null} */
    let finished = null;
    const resp = await this._updateIf({
      Key: streamKey(streamId),
      UpdateExpression: update,
      ConditionExpression: condition,
      ExpressionAttributeNames: { '#status': 'status' },
      ExpressionAttributeValues: values,
      ReturnValues: 'ALL_NEW',
    });
    if (resp !== null) finished = toRecord(resp.Attributes);
    // Released even when the stream was already terminal: a crash between the two
    // writes must not hold the slot.
    await this._releaseSlots(owner, [streamId]);
    return finished;
  }

  /**
   * End a running stream with a terminal error frame after its stored frames (as
   * chalicelib/store/lifecycle.py end_with_error): finished first (of two racing
   * callers one ends it; a live producer loses its claim at its next renewal), then
   * ``errorFrame(record, seq)`` stored. Null if it had already ended.
   * @param {StreamRecord} record @param {ErrorFrame} errorFrame @param {string} errorCode
   */
  async endWithError(record, errorFrame, errorCode) {
    const seq = (await this.lastStoredSeq(record)) + 1;
    const finished = await this.finish(record.streamId, record.owner, ERROR, {
      lastSeq: seq,
      errorCode,
      generation: record.generation,
    });
    if (finished === null) return null;
    const frame = errorFrame(record, seq);
    await this.appendFrames(record, [frame]);
    return { frame, record: finished };
  }

  /** The producer of this running stream cannot be alive any more. */
  abandoned(/** @type {StreamRecord} */ record) {
    if (isTerminal(record)) return false;
    const now = this._now();
    return now - record.updatedAt > STALE_AFTER_S || claimLapsed(record, now);
  }

  /**
   * End a stream whose producer is gone with an error frame; the record as it is now.
   * @param {StreamRecord} record @param {ErrorFrame} errorFrame @param {string} errorCode
   */
  async endIfAbandoned(record, errorFrame, errorCode) {
    if (!this.abandoned(record)) return record;
    await this.endWithError(record, errorFrame, errorCode);
    return (await this.get(record.streamId)) ?? record;
  }

  // -- the producer's claim -----------------------------------------------------------

  /**
   * Extend ``workerId``'s claim by ``leaseS``; resolves to whether a cancel was
   * requested. Rejects with ClaimLost once the stream no longer runs under this claim.
   */
  async renewClaim(/** @type {string} */ streamId, /** @type {string} */ workerId, /** @type {number} */ leaseS) {
    try {
      const resp = await this.client.send(
        new UpdateItemCommand({
          TableName: this._streams,
          Key: streamKey(streamId),
          UpdateExpression: 'SET leaseUntil = :lease',
          ConditionExpression: 'claimedBy = :w AND #status = :running',
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: {
            ':w': { S: workerId },
            ':running': { S: RUNNING },
            ':lease': { N: String(this._now() + leaseS) },
          },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return Boolean(resp.Attributes?.cancelRequested?.BOOL);
    } catch (err) {
      if (conditionFailed(err)) throw new ClaimLost(streamId);
      throw err;
    }
  }

  // -- follower slots (chalicelib/store/followers.py) --------------------------------

  /**
   * Take a follower slot of ``streamId`` for ``leaseS``; TOO_MANY_FOLLOWERS when the
   * stream or the owner has none free.
   */
  async acquireFollower(/** @type {string} */ owner, /** @type {string} */ streamId, /** @type {string} */ followerId, /** @type {number} */ leaseS) {
    const { maxFollowersPerStream, maxFollowersPerUser } = this._settings.limits;
    const until = this._now() + leaseS;
    if (!(await this._take(streamKey(streamId), followerId, until, maxFollowersPerStream, true))) {
      throw new StreamError(
        ErrorCode.TOO_MANY_FOLLOWERS,
        `At most ${maxFollowersPerStream} readers may follow one stream at once (MAX_FOLLOWERS_PER_STREAM); close one and retry.`,
      );
    }
    if (!(await this._take(userKey(owner), followerId, until, maxFollowersPerUser, false))) {
      await this._drop(streamKey(streamId), followerId);
      throw new StreamError(
        ErrorCode.TOO_MANY_FOLLOWERS,
        `At most ${maxFollowersPerUser} streams may be followed or resumed at once per user (MAX_FOLLOWERS_PER_USER); close one and retry.`,
      );
    }
  }

  /** Extend a held slot; false if it was lost (pruned after its lease lapsed). */
  async renewFollower(/** @type {string} */ owner, /** @type {string} */ streamId, /** @type {string} */ followerId, /** @type {number} */ leaseS) {
    const until = { N: String(this._now() + leaseS) };
    let held = true;
    for (const key of [streamKey(streamId), userKey(owner)]) {
      const renewed = await this._updateIf({
        Key: key,
        UpdateExpression: 'SET #f.#id = :until',
        ConditionExpression: 'attribute_exists(#f.#id)',
        ExpressionAttributeNames: { '#f': 'followers', '#id': followerId },
        ExpressionAttributeValues: { ':until': until },
      });
      if (renewed === null) held = false;
    }
    return held;
  }

  async releaseFollower(/** @type {string} */ owner, /** @type {string} */ streamId, /** @type {string} */ followerId) {
    await this._drop(streamKey(streamId), followerId);
    await this._drop(userKey(owner), followerId);
  }

  /** @returns {Promise<Record<string, number>|null>} */
  async _slots(/** @type {Record<string, any>} */ key) {
    const resp = await this.client.send(
      new GetItemCommand({ TableName: this._streams, Key: key, ConsistentRead: true, ProjectionExpression: 'followers' }),
    );
    const raw = resp.Item?.followers?.M;
    if (!raw) return null;
    return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(/** @type {any} */ (v).N)]));
  }

  async _take(key, followerId, until, cap, mustExist) {
    const exists = mustExist ? 'attribute_exists(pk) AND ' : '';
    for (let attempt = 0; attempt < TAKE_ATTEMPTS; attempt += 1) {
      const taken = await this._updateIf({
        Key: key,
        UpdateExpression: 'SET #f.#id = :until',
        ConditionExpression: `${exists}attribute_exists(#f) AND (size(#f) < :cap OR attribute_exists(#f.#id))`,
        ExpressionAttributeNames: { '#f': 'followers', '#id': followerId },
        ExpressionAttributeValues: { ':until': { N: String(until) }, ':cap': { N: String(cap) } },
      });
      if (taken !== null) return true;
      const slots = await this._slots(key);
      if (slots === null) {
        // An item written before follower slots existed has no map: start it.
        const started = await this._updateIf({
          Key: key,
          // A user item made here expires like one made by a stream's creation.
          UpdateExpression: 'SET #f = :slots, expiresAt = if_not_exists(expiresAt, :exp)',
          ConditionExpression: `${exists}attribute_not_exists(#f)`,
          ExpressionAttributeNames: { '#f': 'followers' },
          ExpressionAttributeValues: {
            ':slots': { M: { [followerId]: { N: String(until) } } },
            ':exp': { N: String(this._expiresAt(this._now())) },
          },
        });
        if (started !== null) return true;
        continue;
      }
      if (!(await this._prune(key, slots))) return false;
    }
    return false;
  }

  /** Remove slots whose lease lapsed (each only if unchanged); false if there were none. */
  async _prune(key, /** @type {Record<string, number>} */ slots) {
    const now = this._now();
    const lapsed = Object.keys(slots)
      .filter((id) => slots[id] < now)
      .slice(0, PRUNE_AT_ONCE);
    if (!lapsed.length) return false;
    /** @type {Record<string, string>} */
    const names = { '#f': 'followers' };
    /** @type {Record<string, any>} */
    const values = {};
    lapsed.forEach((id, i) => {
      names[`#l${i}`] = id;
      values[`:l${i}`] = { N: String(slots[id]) };
    });
    // Each lapsed slot only if unchanged: a renewal in between keeps it.
    await this._updateIf({
      Key: key,
      UpdateExpression: `REMOVE ${lapsed.map((_, i) => `#f.#l${i}`).join(', ')}`,
      ConditionExpression: lapsed.map((_, i) => `#f.#l${i} = :l${i}`).join(' AND '),
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    });
    return true;
  }

  async _drop(key, /** @type {string} */ followerId) {
    await this._updateIf({
      Key: key,
      UpdateExpression: 'REMOVE #f.#id',
      // Never create an item (a stream whose record is gone has no slots).
      ConditionExpression: 'attribute_exists(#f)',
      ExpressionAttributeNames: { '#f': 'followers', '#id': followerId },
    });
  }
}

/**
 * Reads a stream's cancel flag at most once per interval, in the background, with the
 * semantics of chalicelib/store/cancel.py CancelWatch.
 *
 * ``poke()`` starts a read when one is due and none is in flight, and never waits,
 * so reading the model never waits on DynamoDB; ``cancelled`` is the last answer.
 * When a read finds the flag set, ``onCancel`` runs at once (the producer aborts
 * the model request there, even while the model is silent).
 *
 * With ``claim`` ({workerId, leaseS}), a read becomes a renewal of the producer's claim
 * every third of the lease (its answer carries the flag). A renewal refused means the
 * claim was lost (a reader took the producer for dead and ended the stream): that
 * counts as a cancel and sets ``claimLost``. ``keepClaim()`` renews when due without
 * reading the flag, for the sender while it drains.
 */
export class CancelWatch {
  /**
   * @param {{isCancelRequested(id: string): Promise<boolean>, renewClaim?(id: string, w: string, s: number): Promise<boolean>}} store
   * @param {string} streamId
   * @param {number} intervalMs
   * @param {{now?: () => number, onCancel?: () => void, onError?: (err: unknown) => void,
   *   claim?: {workerId: string, leaseS: number}}} [options]
   */
  constructor(store, streamId, intervalMs, options = {}) {
    this._store = store;
    this._streamId = streamId;
    this._intervalMs = intervalMs;
    this._now = options.now ?? (() => performance.now());
    this._onCancel = options.onCancel;
    this._onError = options.onError;
    this._claim = options.claim ?? null;
    /** @type {number|null} */
    this._checkedAt = null;
    this._renewedAt = this._now();
    this._inFlight = false;
    this.cancelled = false;
    this.claimLost = false;
    this.reads = 0;
    this.renewals = 0;
  }

  poke() {
    if (this.cancelled || this._inFlight) return;
    const now = this._now();
    if (this._checkedAt !== null && now - this._checkedAt < this._intervalMs) return;
    this._checkedAt = now;
    if (this._renewIfDue(now)) return;
    this._inFlight = true;
    this.reads += 1;
    this._store.isCancelRequested(this._streamId).then(
      (flag) => {
        this._inFlight = false;
        if (flag) this._cancel();
      },
      (err) => {
        // A failed read is not a cancel; the next interval reads again.
        this._inFlight = false;
        this._onError?.(err);
      },
    );
  }

  /** Renew the claim when due; false once it is lost. */
  keepClaim() {
    if (!this.claimLost && !this._inFlight) this._renewIfDue(this._now());
    return !this.claimLost;
  }

  _renewIfDue(/** @type {number} */ now) {
    const claim = this._claim;
    if (claim === null || !this._store.renewClaim || now - this._renewedAt < (claim.leaseS * 1000) / 3) return false;
    this._renewedAt = now;
    this._inFlight = true;
    this.renewals += 1;
    this._store.renewClaim(this._streamId, claim.workerId, claim.leaseS).then(
      (flag) => {
        this._inFlight = false;
        if (flag) this._cancel();
      },
      (err) => {
        this._inFlight = false;
        if (err instanceof ClaimLost) {
          this.claimLost = true;
          this._cancel();
        } else {
          this._onError?.(err);
        }
      },
    );
    return true;
  }

  _cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    this._onCancel?.();
  }
}
