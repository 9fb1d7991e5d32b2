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
 * in ``frame``, written as frames are flushed.
 */

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
 * @property {string|null} claimedBy the producer (Python producers renew it as a lease)
 * @property {number|null} leaseUntil until when that claim holds (epoch seconds)
 */

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

  _expiresAt(/** @type {number} */ now) {
    return Math.trunc(now) + this._settings.streamTtlS;
  }

  // -- create and the per-user cap --------------------------------------------------

  /**
   * Create a running stream owned by ``owner``. The same owner creating the same id
   * again gets the existing record and ``created: false`` (idempotent retries);
   * another owner's id is FORBIDDEN; a user at the cap gets TOO_MANY_STREAMS.
   * @param {string} streamId @param {string} owner @param {string} transport
   * @param {{model?: string}} [options]
   * @returns {Promise<{record: StreamRecord, created: boolean}>}
   */
  async create(streamId, owner, transport, options = {}) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        return { record: await this._createOnce(streamId, owner, transport, options.model), created: true };
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

  async _createOnce(streamId, owner, transport, model) {
    const now = this._now();
    /** @type {Record<string, any>} */
    const item = {
      ...streamKey(streamId),
      streamId: { S: streamId },
      owner: { S: owner },
      status: { S: RUNNING },
      transport: { S: transport },
      cancelRequested: { BOOL: false },
      createdAt: { N: String(now) },
      updatedAt: { N: String(now) },
      expiresAt: { N: String(this._expiresAt(now)) },
    };
    if (model) item.model = { S: model };
    try {
      await this.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this._streams,
                Item: item,
                ConditionExpression: 'attribute_not_exists(pk)',
              },
            },
            {
              Update: {
                TableName: this._streams,
                Key: userKey(owner),
                UpdateExpression: 'ADD #running :sid SET expiresAt = :exp',
                ConditionExpression: 'attribute_not_exists(#running) OR size(#running) < :cap',
                ExpressionAttributeNames: { '#running': 'running' },
                ExpressionAttributeValues: {
                  ':sid': { SS: [streamId] },
                  ':cap': { N: String(this._settings.limits.maxStreamsPerUser) },
                  ':exp': { N: String(this._expiresAt(now)) },
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
      // Ended, or its producer died: no update for a Lambda's lifetime, or a lapsed lease.
      if (rec === null || isTerminal(rec) || now - rec.updatedAt > STALE_AFTER_S || claimLapsed(rec, now)) {
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
   * Stored frames with seq > afterSeq, in order, at most ``limit``.
   * @returns {Promise<import('./frames.mjs').Frame[]>}
   */
  async framesAfter(/** @type {string} */ streamId, /** @type {number} */ afterSeq, limit = 1000) {
    /** @type {import('./frames.mjs').Frame[]} */
    const frames = [];
    /** @type {Record<string, any>|undefined} */
    let startKey;
    while (frames.length < limit) {
      const resp = await this.client.send(
        new QueryCommand({
          TableName: this._frames,
          KeyConditionExpression: 'streamId = :s AND seq > :n',
          ExpressionAttributeValues: { ':s': { S: streamId }, ':n': { N: String(afterSeq) } },
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

  /** Store transcript frames (those with a seq); one BatchWriteItem per 25. */
  async appendFrames(/** @type {string} */ streamId, /** @type {import('./frames.mjs').Frame[]} */ frames) {
    const expires = { N: String(this._expiresAt(this._now())) };
    const requests = frames
      .filter((f) => typeof f.seq === 'number')
      .map((frame) => ({
        PutRequest: {
          Item: {
            streamId: { S: streamId },
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
   * Mark a running stream terminal and free its owner's slot; false if already ended.
   * @param {string} streamId @param {string} owner @param {string} status
   * @param {{lastSeq: number, errorCode?: string|null}} options
   */
  async finish(streamId, owner, status, { lastSeq, errorCode }) {
    if (!TERMINAL_STATUSES.has(status)) throw new RangeError(`not a terminal status: ${status}`);
    /** @type {Record<string, any>} */
    const values = {
      ':status': { S: status },
      ':running': { S: RUNNING },
      ':now': { N: String(this._now()) },
      ':seq': { N: String(lastSeq) },
    };
    let update = 'SET #status = :status, updatedAt = :now, lastSeq = :seq';
    if (errorCode) {
      update += ', errorCode = :code';
      values[':code'] = { S: errorCode };
    }
    let finished = true;
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this._streams,
          Key: streamKey(streamId),
          UpdateExpression: update,
          ConditionExpression: '#status = :running',
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      if (errorName(err) !== 'ConditionalCheckFailedException') throw err;
      finished = false;
    }
    // Released even when the stream was already terminal: a crash between the two
    // writes must not hold the slot.
    await this._releaseSlots(owner, [streamId]);
    return finished;
  }
}

/**
 * Reads a stream's cancel flag at most once per interval, in the background.
 *
 * ``poke()`` starts a read when one is due and none is in flight, and never waits,
 * so reading the model never waits on DynamoDB; ``cancelled`` is the last answer.
 * When a read finds the flag set, ``onCancel`` runs at once (the producer aborts
 * the model request there, even while the model is silent).
 */
export class CancelWatch {
  /**
   * @param {{isCancelRequested(id: string): Promise<boolean>}} store
   * @param {string} streamId
   * @param {number} intervalMs
   * @param {{now?: () => number, onCancel?: () => void, onError?: (err: unknown) => void}} [options]
   */
  constructor(store, streamId, intervalMs, options = {}) {
    this._store = store;
    this._streamId = streamId;
    this._intervalMs = intervalMs;
    this._now = options.now ?? (() => performance.now());
    this._onCancel = options.onCancel;
    this._onError = options.onError;
    /** @type {number|null} */
    this._checkedAt = null;
    this._inFlight = false;
    this.cancelled = false;
    this.reads = 0;
  }

  poke() {
    if (this.cancelled || this._inFlight) return;
    const now = this._now();
    if (this._checkedAt !== null && now - this._checkedAt < this._intervalMs) return;
    this._checkedAt = now;
    this._inFlight = true;
    this.reads += 1;
    this._store.isCancelRequested(this._streamId).then(
      (flag) => {
        this._inFlight = false;
        if (flag && !this.cancelled) {
          this.cancelled = true;
          this._onCancel?.();
        }
      },
      (err) => {
        // A failed read is not a cancel; the next interval reads again.
        this._inFlight = false;
        this._onError?.(err);
      },
    );
  }
}
