// StreamStore against DynamoDB's API (moto server, as the local cloud runs it),
// cross-checked with chalicelib/stream_store.py on the same tables: the item
// shapes are the contract between this function and the Python REST API.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';

import { loadSettings } from '../src/settings.mjs';
import { CancelWatch, StreamStore } from '../src/store.mjs';
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
    assert.equal(await store.finish(id, 'carol', 'cancelled', { lastSeq: 3 }), true);
    assert.equal(await store.finish(id, 'carol', 'done', { lastSeq: 3 }), false, 'only the first finish counts');
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
});
