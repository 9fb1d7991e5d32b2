// StreamStore against DynamoDB's API (moto server, as the local cloud runs it),
// cross-checked with chalicelib/stream_store.py on the same tables: the item
// shapes are the contract between this function and the Python REST API.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { DeleteItemCommand, DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';

import { loadSettings } from '../src/settings.mjs';
import { CancelWatch, ClaimLost, StreamStore } from '../src/store.mjs';
import { deferred } from '../testing/fakes.mjs';
import { runPython, startMoto } from '../testing/python.mjs';

const T = { timeout: 60_000 };


// One entry point into chalicelib.stream_store for the checks below.
const PY_STORE = `
import dataclasses, json, sys
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
args = json.loads(sys.argv[1])
settings = Settings.from_env()
store = StreamStore(settings)
op = args["op"]
if op == "provision":
    from local.provision import create_tables
    create_tables(store.client, settings)
    out = True
elif op == "get":
    rec = store.get(args["id"])
    out = None if rec is None else dataclasses.asdict(rec)
elif op == "frames":
    out = store.frames_after(args["id"], args["after"])
elif op == "raw_frames":
    resp = store.client.query(TableName=settings.frames_table, KeyConditionExpression="streamId = :s",
                              ExpressionAttributeValues={":s": {"S": args["id"]}}, ConsistentRead=True)
    out = [item["frame"]["S"] for item in resp["Items"]]
    assert all(json.dumps(json.loads(s), separators=(",", ":")) == s for s in out), "not Python's encoding"
elif op == "cancel":
    out = store.request_cancel(args["id"], args["owner"]).public()
elif op == "running":
    out = store.running_count(args["owner"])
elif op == "create":
    rec, created = store.create(args["id"], args["owner"], args["transport"])
    out = created
elif op == "create_record":
    rec, created = store.create(args["id"], args["owner"], args["transport"])
    out = dataclasses.asdict(rec)
elif op == "append":
    store.append_frames(args["id"], args["frames"])
    out = True
elif op == "finish":
    out = store.finish(args["id"], args["owner"], args["status"], last_seq=args["lastSeq"]) is not None
elif op == "claim":
    rec = store.claim(args["id"], args["worker"], args["lease"])
    out = rec is not None
elif op == "follow":
    from chalicelib.errors import StreamError
    try:
        store.acquire_follower(args["owner"], args["id"], args["follower"], args["lease"])
        out = "ok"
    except StreamError as err:
        out = err.code.value
elif op == "followers":
    out = store.followers_of(stream_id=args["id"]) if "id" in args else store.followers_of(args["owner"])
print(json.dumps(out))
`;

describe('StreamStore on DynamoDB (moto), read and written by the Python store too', () => {
  let moto;
  let env;
  let settings;
  /** @type {StreamStore} */
  let store;
  let client;
  const py = (args) => runPython(PY_STORE, args, env);

  before(async () => {
    moto = await startMoto();
    const { endpoint } = moto;
    env = {
      AWS_ENDPOINT_URL_DYNAMODB: endpoint,
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      STREAMS_TABLE: 'node-test-streams',
      FRAMES_TABLE: 'node-test-frames',
      MAX_STREAMS_PER_USER: '2',
      USER_POOL_ID: 'us-east-1_TestPool',
      USER_POOL_CLIENT_ID: 'client-1',
    };
    settings = loadSettings(env);
    client = new DynamoDBClient({
      region: 'us-east-1',
      endpoint,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    store = new StreamStore(settings, client);
    await py({ op: 'provision' });
  });

  after(async () => {
    client?.destroy();
    await moto?.stop();
  });

  test('a stream created here is the record the Python store reads', T, async () => {
    const id = randomUUID();
    const { record, created } = await store.create(id, 'alice', 'function_url', { model: 'm-1' });
    assert.equal(created, true);
    assert.equal(record.status, 'running');
    const seen = await py({ op: 'get', id });
    assert.equal(seen.stream_id, id);
    assert.equal(seen.owner, 'alice');
    assert.equal(seen.status, 'running');
    assert.equal(seen.transport, 'function_url');
    assert.equal(seen.model, 'm-1');
    assert.equal(seen.cancel_requested, false);
    assert.equal(seen.expires_at, Math.trunc(record.createdAt) + settings.streamTtlS);
    assert.equal(await py({ op: 'running', owner: 'alice' }), 1);
    await store.finish(id, 'alice', 'done', { lastSeq: 0 });
  });

  test('frames stored here read back in Python byte for byte, and here in order', T, async () => {
    const id = randomUUID();
    await store.create(id, 'bob', 'function_url');
    const frames = [
      { v: 1, streamId: id, seq: 0, type: 'start', model: 'm' },
      { v: 1, streamId: id, seq: 1, type: 'delta', text: 'naïve café 🚀 "q" \\ \n' },
      { v: 1, streamId: id, seq: 2, type: 'done', stopReason: 'end_turn', usage: { inputTokens: 1, outputTokens: 2 } },
    ];
    for (const f of frames) await store.appendFrames(id, [f]);
    await store.appendFrames(id, [{ v: 1, streamId: id, type: 'heartbeat' }]); // not stored: no seq
    assert.deepEqual(await py({ op: 'frames', id, after: -1 }), frames);
    await py({ op: 'raw_frames', id }); // asserts Python's own encoding
    assert.deepEqual(await store.framesAfter(id, 0), frames.slice(1));
    assert.deepEqual(await store.framesAfter(id, -1, 2), frames.slice(0, 2));
    await store.finish(id, 'bob', 'done', { lastSeq: 2 });
  });

  test('a cancel set by the Python REST path is seen here; finish frees the slot', T, async () => {
    const id = randomUUID();
    await store.create(id, 'carol', 'function_url');
    assert.equal(await store.isCancelRequested(id), false);
    const cancelled = deferred();
    const watch = new CancelWatch(store, id, 0, { onCancel: () => cancelled.resolve() });
    await py({ op: 'cancel', id, owner: 'carol' });
    watch.poke();
    await cancelled.promise;
    assert.equal(watch.cancelled, true);
    assert.equal((await store.finish(id, 'carol', 'cancelled', { lastSeq: 3 }))?.status, 'cancelled');
    assert.equal(await store.finish(id, 'carol', 'done', { lastSeq: 3 }), null, 'only the first finish counts');
    const seen = await py({ op: 'get', id });
    assert.equal(seen.status, 'cancelled');
    assert.equal(seen.last_seq, 3);
    assert.equal(await py({ op: 'running', owner: 'carol' }), 0);
  });

  test('the per-user cap counts streams of every transport, Python-created ones too', T, async () => {
    const owner = `dave-${randomUUID()}`;
    assert.equal(await py({ op: 'create', id: randomUUID(), owner, transport: 'websocket' }), true);
    await store.create(randomUUID(), owner, 'function_url');
    await assert.rejects(
      store.create(randomUUID(), owner, 'function_url'),
      (err) => err.code === 'TOO_MANY_STREAMS' && err.message.startsWith('At most 2 streams'),
    );
  });

  test('slots of streams that ended without releasing them are reclaimed', T, async () => {
    const owner = `erin-${randomUUID()}`;
    const a = randomUUID();
    await store.create(a, owner, 'function_url');
    await store.create(randomUUID(), owner, 'function_url');
    // A producer that died between its two finishing writes: terminal, slot still held.
    await client.send(
      new UpdateItemCommand({
        TableName: settings.streamsTable,
        Key: { pk: { S: `stream#${a}` } },
        UpdateExpression: 'SET #s = :done',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':done': { S: 'done' } },
      }),
    );
    const { created } = await store.create(randomUUID(), owner, 'function_url');
    assert.equal(created, true);
    const user = await client.send(
      new GetItemCommand({ TableName: settings.streamsTable, Key: { pk: { S: `user#${owner}` } }, ConsistentRead: true }),
    );
    assert.equal(user.Item.running.SS.includes(a), false);
  });

  test('the slot of a stream whose producer lease lapsed (a Python producer died) is reclaimed', T, async () => {
    const owner = `gina-${randomUUID()}`;
    const a = randomUUID();
    await store.create(a, owner, 'websocket');
    await store.create(randomUUID(), owner, 'function_url');
    await client.send(
      new UpdateItemCommand({
        TableName: settings.streamsTable,
        Key: { pk: { S: `stream#${a}` } },
        UpdateExpression: 'SET claimedBy = :w, leaseUntil = :t',
        ExpressionAttributeValues: { ':w': { S: 'w1' }, ':t': { N: String(Date.now() / 1000 - 60) } },
      }),
    );
    const lapsed = await store.get(a);
    assert.equal(lapsed.claimedBy, 'w1');
    const { created } = await store.create(randomUUID(), owner, 'function_url');
    assert.equal(created, true);
  });

  test('the same owner retrying gets the record back; another owner is FORBIDDEN', T, async () => {
    const id = randomUUID();
    await store.create(id, 'frank', 'function_url');
    const again = await store.create(id, 'frank', 'function_url');
    assert.equal(again.created, false);
    assert.equal(again.record.owner, 'frank');
    await assert.rejects(store.create(id, 'mallory', 'function_url'), (err) => err.code === 'FORBIDDEN');
    await assert.rejects(store.getOwned(id, 'mallory'), (err) => err.code === 'NOT_FOUND');
    assert.equal((await store.getOwned(id, 'frank')).streamId, id);
    await store.finish(id, 'frank', 'done', { lastSeq: -1 });
  });

  test('each creation of an id is a new generation: frames of an earlier one are never read', T, async () => {
    const id = randomUUID();
    const first = await store.create(id, 'hana', 'function_url');
    const old = [0, 1, 2].map((seq) => ({ v: 1, streamId: id, seq, type: seq ? 'delta' : 'start', ...(seq ? { text: `old ${seq}` } : { model: 'm' }) }));
    await store.appendFrames(first.record, old);
    await store.finish(id, 'hana', 'done', { lastSeq: 2 });
    // TTL deletes the record (frames outlive it); another user takes the id.
    await client.send(new DeleteItemCommand({ TableName: settings.streamsTable, Key: { pk: { S: `stream#${id}` } } }));
    const second = await store.create(id, 'ivan', 'function_url');
    assert.notEqual(second.record.generation, first.record.generation);
    assert.deepEqual(await store.framesAfter(second.record, -1), []);
    assert.deepEqual(await store.framesAfter(id, -1), []);
    assert.deepEqual(await py({ op: 'frames', id, after: -1 }), [], 'the Python store reads by generation too');
    const fresh = { v: 1, streamId: id, seq: 0, type: 'start', model: 'm' };
    await py({ op: 'append', id, frames: [fresh] });
    assert.deepEqual(await store.framesAfter(id, -1), [fresh], 'Python writes under the same key');
    assert.equal((await py({ op: 'get', id })).generation, second.record.generation);
    await store.finish(id, 'ivan', 'done', { lastSeq: 0 });
  });

  test('an expired record is replaced by a new generation on create', T, async () => {
    const id = randomUUID();
    await store.create(id, 'jay', 'function_url');
    await client.send(
      new UpdateItemCommand({
        TableName: settings.streamsTable,
        Key: { pk: { S: `stream#${id}` } },
        UpdateExpression: 'SET expiresAt = :past',
        ExpressionAttributeValues: { ':past': { N: String(Math.trunc(Date.now() / 1000) - 10) } },
      }),
    );
    const again = await py({ op: 'create_record', id, owner: 'kim', transport: 'websocket' });
    assert.equal(again.owner, 'kim');
    assert.equal((await store.get(id)).generation, again.generation);
  });

  test('follower slots are bounded per stream and per user, on both sides', T, async () => {
    const owner = `lena-${randomUUID()}`;
    const a = randomUUID();
    const b = randomUUID();
    await store.create(a, owner, 'function_url');
    await py({ op: 'create', id: b, owner, transport: 'websocket' });
    const perStream = settings.limits.maxFollowersPerStream;
    for (let i = 0; i < perStream; i += 1) await store.acquireFollower(owner, a, `fa${i}`, 30);
    await assert.rejects(store.acquireFollower(owner, a, 'fa-extra', 30), (err) => err.code === 'TOO_MANY_FOLLOWERS' && err.httpStatus === 429);
    // A finished stream can still be followed (a resume replays it); it frees its running slot.
    await store.finish(a, owner, 'done', { lastSeq: -1 });
    assert.equal(await py({ op: 'follow', owner, id: a, follower: 'py-extra', lease: 30 }), 'TOO_MANY_FOLLOWERS');
    assert.equal(await py({ op: 'followers', id: a }), perStream);
    const perUser = settings.limits.maxFollowersPerUser;
    const c = randomUUID();
    await store.create(c, owner, 'function_url');
    for (let i = perStream; i < perUser; i += 1) {
      const id = i < perStream + 3 ? b : c;
      assert.equal(await py({ op: 'follow', owner, id, follower: `fb${i}`, lease: 30 }), 'ok');
    }
    await assert.rejects(
      store.acquireFollower(owner, c, 'fc-extra', 30),
      (err) => err.code === 'TOO_MANY_FOLLOWERS' && err.message.includes('MAX_FOLLOWERS_PER_USER'),
    );
    assert.equal(await py({ op: 'followers', owner }), perUser);
    await store.releaseFollower(owner, a, 'fa0');
    await store.acquireFollower(owner, c, 'fb-after-release', 30);
    assert.equal(await store.renewFollower(owner, c, 'fb-after-release', 30), true);
    assert.equal(await store.renewFollower(owner, c, 'never-held', 30), false);
  });

  test('a follower slot whose lease lapsed (its Lambda died) is taken over', T, async () => {
    const owner = `mia-${randomUUID()}`;
    const id = randomUUID();
    await store.create(id, owner, 'function_url');
    for (let i = 0; i < settings.limits.maxFollowersPerStream; i += 1) await store.acquireFollower(owner, id, `dead${i}`, 0.05);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await store.acquireFollower(owner, id, 'alive', 30);
    assert.equal(await py({ op: 'followers', id }), 1);
  });

  test('a stream created claimed renews its lease; a reader ends it once the lease lapsed', T, async () => {
    const owner = `nina-${randomUUID()}`;
    const id = randomUUID();
    const { record } = await store.create(id, owner, 'function_url', { claimedBy: 'req-1', leaseS: 30 });
    const seen = await py({ op: 'get', id });
    assert.equal(seen.claimed_by, 'req-1');
    assert.ok(seen.lease_until > Date.now() / 1000);
    assert.equal(await py({ op: 'claim', id, worker: 'py-worker', lease: 30 }), false, 'claimed already');
    assert.equal(await store.renewClaim(id, 'req-1', 0.2), false); // renewed, no cancel
    await store.appendFrames(record, [{ v: 1, streamId: id, seq: 0, type: 'start', model: 'm' }]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const lapsed = await store.get(id);
    assert.equal(store.abandoned(lapsed), true, JSON.stringify(lapsed));
    const ended = await store.endIfAbandoned(lapsed, (rec, seq) => ({ v: 1, streamId: rec.streamId, seq, type: 'error', error: { code: 'INTERNAL', message: 'x', retryable: true } }), 'INTERNAL');
    assert.equal(ended.status, 'error');
    assert.equal(ended.lastSeq, 1);
    assert.deepEqual((await py({ op: 'frames', id, after: -1 })).map((f) => f.type), ['start', 'error']);
    await assert.rejects(store.renewClaim(id, 'req-1', 30), (err) => err instanceof ClaimLost);
    assert.equal(await py({ op: 'running', owner }), 0);
  });
});
