// The streamifyResponse handler end to end with in-memory doubles: statuses,
// headers, SSE, the producer (order, coalescing, cancel, heartbeats, a gone
// client) and resume.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import { END } from '../src/bedrock.mjs';
import { ErrorCode, StreamError } from '../src/errors.mjs';
import { validateFrame } from '../src/frames.mjs';
import { createStreamHandler } from '../src/handler.mjs';
import { silentLog } from '../src/log.mjs';
import { runStream } from '../src/producer.mjs';
import {
  deferred,
  FakeResponseStream,
  fakeVerifier,
  framesOf,
  httpResponseStreamFrom,
  lambdaContext,
  MemoryStore,
  ScriptedModel,
  testSettings,
  urlEvent,
} from '../testing/fakes.mjs';

const T = { timeout: 10_000 };

function setup(env = {}) {
  const settings = testSettings(env);
  const store = new MemoryStore(settings);
  const model = new ScriptedModel();
  const logs = [];
  const handler = createStreamHandler({
    settings,
    verifier: fakeVerifier,
    store,
    model,
    httpResponseStreamFrom,
    log: (level, msg, fields) => logs.push({ level, msg, ...fields }),
  });
  const call = async (event, res = new FakeResponseStream(), context = lambdaContext()) => {
    await handler(event, res, context);
    return { res, context };
  };
  return { settings, store, model, handler, call, logs };
}

function errorBody(res) {
  assert.equal(res.prelude.headers['Content-Type'], 'application/json');
  assert.ok(res.ended);
  const body = JSON.parse(res.body);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
  return body.error;
}

describe('POST / starts a stream', () => {
  test('200 SSE: start, coalesced deltas, done; stored as sent; record finished', T, async () => {
    const { store, model, call } = setup();
    model.onOpen = (s) => s.answer(['Hello', ' wor', 'ld 🚀']);
    const streamId = randomUUID();
    const { res, context } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }));
    assert.equal(context.callbackWaitsForEmptyEventLoop, false);
    assert.deepEqual(res.prelude, {
      statusCode: 200,
      headers: { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' },
    });
    assert.ok(res.ended);
    const events = res.events;
    const frames = framesOf(res);
    for (const f of frames) validateFrame(f);
    assert.deepEqual(frames.map((f) => f.seq), frames.map((_, i) => i));
    assert.deepEqual(events.map((e) => e.id), frames.map((f) => String(f.seq)));
    assert.deepEqual(events.map((e) => e.event), frames.map((f) => f.type));
    assert.deepEqual(frames[0], { v: 1, streamId, seq: 0, type: 'start', model: 'test-model' });
    assert.equal(frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''), 'Hello world 🚀');
    const done = frames.at(-1);
    assert.equal(done.type, 'done');
    assert.equal(done.stopReason, 'end_turn');
    assert.deepEqual(done.usage, { inputTokens: 3, outputTokens: 3 });
    assert.deepEqual(store.storedFrames(streamId), frames);
    const rec = await store.get(streamId);
    assert.equal(rec.status, 'done');
    assert.equal(rec.lastSeq, done.seq);
    assert.equal(rec.transport, 'function_url');
    assert.equal(rec.owner, 'alice');
    assert.equal(store.running.get('alice').size, 0, 'the slot is released');
    assert.deepEqual(model.streams[0].request, { streamId, prompt: 'hi', maxTokens: 1024 });
  });

  test('a base64 body is decoded', T, async () => {
    const { model, call } = setup();
    model.onOpen = (s) => s.answer(['ok']);
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' }, base64: true }));
    assert.equal(res.prelude.statusCode, 200);
    assert.equal(framesOf(res).at(-1).type, 'done');
  });

  test('a model error after the headers is an error frame and an error record', T, async () => {
    const { store, model, call } = setup();
    model.onOpen = (s) =>
      s.push({ type: 'text', text: 'par' }, new StreamError(ErrorCode.MODEL_ERROR, 'The model failed while answering.'));
    const streamId = randomUUID();
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }));
    assert.equal(res.prelude.statusCode, 200);
    const last = framesOf(res).at(-1);
    assert.equal(last.type, 'error');
    assert.deepEqual(last.error, { code: 'MODEL_ERROR', message: 'The model failed while answering.', retryable: false });
    const rec = await store.get(streamId);
    assert.equal(rec.status, 'error');
    assert.equal(rec.errorCode, 'MODEL_ERROR');
  });

  test('an unexpected model failure is INTERNAL without its text', T, async () => {
    const { model, call, logs } = setup();
    model.onOpen = (s) => s.push(new Error('arn:aws:secret internals'));
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }));
    const last = framesOf(res).at(-1);
    assert.deepEqual(last.error, { code: 'INTERNAL', message: 'The stream failed.', retryable: false });
    assert.ok(!res.body.includes('arn:'));
    assert.ok(!JSON.stringify(logs).includes('arn:'), 'logs carry the error class, not its text');
  });

  test('cancel (the store flag) aborts the model and ends with done/cancelled', T, async () => {
    const { store, model, call } = setup({ FLUSH_INTERVAL_MS: '20' });
    const streamId = randomUUID();
    model.onOpen = (s) => s.push({ type: 'text', text: 'Hello' }); // then silence: only a cancel ends it
    const res = new FakeResponseStream();
    const running = call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }), res);
    await res.until(() => framesOf(res).some((f) => f.type === 'delta'));
    store.requestCancel(streamId);
    await running;
    assert.equal(model.streams[0].closed, true, 'the model request was aborted');
    const last = framesOf(res).at(-1);
    assert.equal(last.type, 'done');
    assert.equal(last.stopReason, 'cancelled');
    assert.equal((await store.get(streamId)).status, 'cancelled');
    assert.ok(store.calls.isCancelRequested >= 1);
  });

  test('a client that went away does not stop the generation: every frame is stored', T, async () => {
    const { store, model, call, logs } = setup({ FLUSH_INTERVAL_MS: '1' });
    const streamId = randomUUID();
    const texts = Array.from({ length: 30 }, (_, i) => `t${i} `);
    model.onOpen = (s) => s.answer(texts);
    const res = new FakeResponseStream({ failAfter: 2 }); // start and one delta reach the client
    await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }), res);
    assert.equal(res.writes.length, 2);
    assert.ok(res.failedWrites >= 1);
    const stored = store.storedFrames(streamId);
    assert.deepEqual(stored.map((f) => f.seq), stored.map((_, i) => i));
    assert.equal(stored.at(-1).type, 'done');
    assert.equal(stored.filter((f) => f.type === 'delta').map((f) => f.text).join(''), texts.join(''));
    assert.equal((await store.get(streamId)).status, 'done');
    assert.ok(logs.some((l) => l.msg === 'client gone'));
  });

  test('heartbeats are SSE comments after the heartbeat interval of silence', T, async () => {
    const { model, call } = setup({ HEARTBEAT_INTERVAL_S: '0.02' });
    const res = new FakeResponseStream();
    const opened = deferred();
    model.onOpen = (s) => opened.resolve(s);
    const running = call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }), res);
    const stream = await opened.promise;
    await res.until(() => res.writes.includes(': heartbeat\n\n'));
    stream.answer(['late']);
    await running;
    const hb = res.events.filter((e) => e.comment === 'heartbeat');
    assert.ok(hb.length >= 1);
    assert.ok(hb.every((e) => e.id === null && e.data === null), 'no id, no data: not a transcript frame');
    assert.equal(framesOf(res).at(-1).type, 'done');
  });

  test('the same owner retrying a start follows the existing stream, no second generation', T, async () => {
    const { store, model, call } = setup();
    const streamId = randomUUID();
    model.onOpen = (s) => s.answer(['once']);
    const first = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }));
    const again = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }));
    assert.equal(model.streams.length, 1);
    assert.equal(again.res.prelude.statusCode, 200);
    assert.deepEqual(framesOf(again.res), framesOf(first.res));
    assert.equal(store.calls.create, 2);
  });

  test('text never splits a code point, whatever FLUSH_MAX_CHARS is', T, async () => {
    const { model, call } = setup({ FLUSH_MAX_CHARS: '3', FLUSH_INTERVAL_MS: '10000' });
    model.onOpen = (s) => s.answer(['🚀é漢🚀🚀', '🚀']);
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }));
    const deltas = framesOf(res).filter((f) => f.type === 'delta').map((f) => f.text);
    assert.equal(deltas.join(''), '🚀é漢🚀🚀🚀');
    for (const d of deltas) {
      assert.ok(Array.from(d).length <= 3);
      assert.ok(!/[\ud800-\udbff]$/.test(d) && !/^[\udc00-\udfff]/.test(d));
    }
  });
});

describe('errors before streaming get real statuses', () => {
  for (const [name, token] of [
    ['no Authorization header', undefined],
    ['a bad token', 'forged'],
  ]) {
    test(`401 for ${name}; nothing streamed, nothing stored`, T, async () => {
      const { store, model, call } = setup();
      const { res } = await call(urlEvent({ token, body: { prompt: 'hi', streamId: randomUUID() } }));
      assert.equal(res.prelude.statusCode, 401);
      assert.equal(res.prelude.headers['WWW-Authenticate'], 'Bearer');
      // The same answer as API Gateway's for a failed authorizer, whatever the reason.
      assert.deepEqual(JSON.parse(res.body), { message: 'Unauthorized' });
      assert.equal(store.calls.create, 0);
      assert.equal(store.streams.size, 0);
      assert.equal(model.streams.length, 0);
    });
  }

  test('401 on GET too', T, async () => {
    const { call } = setup();
    const { res } = await call(urlEvent({ method: 'GET', token: 'nope', query: { streamId: randomUUID() } }));
    assert.equal(res.prelude.statusCode, 401);
  });

  test('the reason of a refused token is logged, never answered', T, async () => {
    const { call, logs } = setup();
    const { res } = await call(urlEvent({ token: 'forged', body: { prompt: 'hi' } }));
    assert.deepEqual(JSON.parse(res.body), { message: 'Unauthorized' });
    assert.ok(logs.some((l) => l.msg === 'token rejected' && typeof l.reason === 'string' && l.reason.length > 0));
  });

  const badBodies = [
    ['not JSON', '{not json', 'JSON'],
    ['JSON nested 33 levels deep', `{"prompt":"hi","system":${'['.repeat(32)}${']'.repeat(32)}}`, 'the JSON is nested deeper than the limit of 32 levels'],
    ['JSON nested 100000 levels deep', '['.repeat(100_000) + ']'.repeat(100_000), 'the JSON is nested deeper than the limit of 32 levels'],
    ['an empty body', '', 'JSON'],
    ['maxTokens over the limit', { prompt: 'hi', maxTokens: 5000 }, 'maxTokens must be an integer from 1 to 4096'],
    ['both prompt and messages', { prompt: 'hi', messages: [{ role: 'user', content: 'x' }] }, 'exactly one'],
    ['input over 32,000 characters', { prompt: 'x'.repeat(32_001) }, 'the limit is 32,000'],
    ['an unknown field', { prompt: 'hi', topP: 1 }, "unknown field 'topP'"],
    ['a bad streamId', { prompt: 'hi', streamId: 'abc' }, 'streamId must be a UUID'],
  ];
  for (const [name, body, needle] of badBodies) {
    test(`400 for ${name}, naming the problem`, T, async () => {
      const { store, call } = setup();
      const { res } = await call(urlEvent({ token: 'good-alice', body }));
      assert.equal(res.prelude.statusCode, 400);
      const error = errorBody(res);
      assert.equal(error.code, 'BAD_REQUEST');
      assert.ok(error.message.includes(needle), error.message);
      assert.equal(store.calls.create, 0);
    });
  }

  test('limits come from the environment', T, async () => {
    const { call } = setup({ MAX_INPUT_CHARS: '10', MAX_TOKENS_LIMIT: '100', DEFAULT_MAX_TOKENS: '50' });
    const long = await call(urlEvent({ token: 'good-alice', body: { prompt: 'x'.repeat(11) } }));
    assert.ok(errorBody(long.res).message.includes('the limit is 10'));
    const tokens = await call(urlEvent({ token: 'good-alice', body: { prompt: 'x', maxTokens: 101 } }));
    assert.ok(errorBody(tokens.res).message.includes('from 1 to 100'));
  });

  test("403 for a streamId that is another user's", T, async () => {
    const { store, model, call } = setup();
    const streamId = randomUUID();
    await store.create(streamId, 'bob', 'function_url');
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId } }));
    assert.equal(res.prelude.statusCode, 403);
    assert.equal(errorBody(res).code, 'FORBIDDEN');
    assert.equal(model.streams.length, 0);
  });

  test('429 TOO_MANY_STREAMS at the per-user cap', T, async () => {
    const { store, model, call } = setup({ MAX_STREAMS_PER_USER: '2' });
    await store.create(randomUUID(), 'alice', 'websocket');
    await store.create(randomUUID(), 'alice', 'function_url');
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.statusCode, 429);
    const error = errorBody(res);
    assert.equal(error.code, 'TOO_MANY_STREAMS');
    assert.ok(error.message.includes('At most 2 streams'));
    assert.equal(model.streams.length, 0);
  });

  test('500 INTERNAL when the store fails, without its text', T, async () => {
    const { store, call } = setup();
    store.create = async () => {
      throw new Error('ResourceNotFoundException: arn:aws:dynamodb:secret');
    };
    const { res } = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.statusCode, 500);
    assert.deepEqual(errorBody(res), { code: 'INTERNAL', message: 'Internal error.' });
  });

  test('404 for another path', T, async () => {
    const { call } = setup();
    const { res } = await call(urlEvent({ token: 'good-alice', path: '/other', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.statusCode, 404);
    assert.equal(errorBody(res).code, 'NOT_FOUND');
  });

  test('another method is refused with Allow', T, async () => {
    const { call } = setup();
    const { res } = await call(urlEvent({ method: 'PUT', token: 'good-alice', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.statusCode, 400);
    assert.equal(res.prelude.headers.Allow, 'GET, POST');
  });

  test('no CORS headers on any answer (the Function URL adds them)', T, async () => {
    const { model, call } = setup();
    model.onOpen = (s) => s.answer(['x']);
    for (const event of [urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }), urlEvent({ body: { prompt: 'hi' } })]) {
      const { res } = await call(event);
      assert.ok(Object.keys(res.prelude.headers).every((h) => !h.toLowerCase().startsWith('access-control-')));
    }
  });
});

describe('GET /?streamId= resumes', () => {
  const transcript = (streamId, n) => [
    { v: 1, streamId, seq: 0, type: 'start', model: 'm' },
    ...Array.from({ length: n }, (_, i) => ({ v: 1, streamId, seq: i + 1, type: 'delta', text: `d${i + 1}` })),
  ];

  test('replays the frames after Last-Event-ID of a finished stream', T, async () => {
    const { store, call } = setup();
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    const frames = [...transcript(streamId, 3), { v: 1, streamId, seq: 4, type: 'done', stopReason: 'end_turn' }];
    store.seed(streamId, frames);
    await store.finish(streamId, 'alice', 'done', { lastSeq: 4 });
    const { res } = await call(
      urlEvent({ method: 'GET', token: 'good-alice', query: { streamId }, headers: { 'last-event-id': '1' } }),
    );
    assert.equal(res.prelude.statusCode, 200);
    assert.equal(res.prelude.headers['Content-Type'], 'text/event-stream');
    assert.deepEqual(framesOf(res), frames.slice(2));
    assert.deepEqual(res.events.map((e) => e.id), ['2', '3', '4']);
  });

  test('204 and no body when the client already holds the terminal frame', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    const frames = [...transcript(streamId, 2), { v: 1, streamId, seq: 3, type: 'done', stopReason: 'end_turn' }];
    store.seed(streamId, frames);
    await store.finish(streamId, 'alice', 'done', { lastSeq: 3 });
    for (const lastEventId of ['3', '7']) {
      const { res } = await call(
        urlEvent({ method: 'GET', token: 'good-alice', query: { streamId }, headers: { 'last-event-id': lastEventId } }),
      );
      assert.equal(res.prelude.statusCode, 204);
      assert.equal(res.body, '');
      // A write, even empty, or Lambda drops the prelude and answers 200.
      assert.deepEqual(res.writes, ['']);
      assert.ok(res.ended);
    }
    // One frame short of the end still replays it.
    const { res } = await call(
      urlEvent({ method: 'GET', token: 'good-alice', query: { streamId }, headers: { 'last-event-id': '2' } }),
    );
    assert.equal(res.prelude.statusCode, 200);
    assert.deepEqual(framesOf(res), frames.slice(3));
  });

  test('follows a running stream through the store until its terminal frame', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    store.seed(streamId, transcript(streamId, 2));
    const res = new FakeResponseStream();
    const following = call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId, lastEventId: '0' } }), res);
    await res.until(() => framesOf(res).length === 2);
    store.seed(streamId, [{ v: 1, streamId, seq: 3, type: 'delta', text: 'd3' }]);
    await res.until(() => framesOf(res).length === 3);
    store.seed(streamId, [{ v: 1, streamId, seq: 4, type: 'done', stopReason: 'end_turn' }]);
    await following;
    assert.deepEqual(framesOf(res).map((f) => f.seq), [1, 2, 3, 4]);
    assert.ok(res.ended);
  });

  test('a stream that ended without a stored terminal frame gets an error event', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    store.seed(streamId, transcript(streamId, 1));
    await store.finish(streamId, 'alice', 'error', { lastSeq: 5, errorCode: 'INTERNAL' });
    const { res } = await call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }));
    const frames = framesOf(res);
    assert.deepEqual(frames.slice(0, 2).map((f) => f.seq), [0, 1]);
    assert.equal(frames[2].type, 'error');
    assert.equal(frames[2].seq, undefined);
  });

  test('a stream whose producer lease lapsed ends with an error event, not a long wait', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'websocket');
    store.seed(streamId, transcript(streamId, 1));
    // Claimed by a Python generator whose Lambda died: its lease ran out a minute ago.
    Object.assign(store.streams.get(streamId), { claimedBy: 'w1', leaseUntil: Date.now() / 1000 - 60 });
    const started = Date.now();
    const { res } = await call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }));
    const frames = framesOf(res);
    assert.deepEqual(frames.slice(0, 2).map((f) => f.seq), [0, 1]);
    assert.equal(frames[2].type, 'error');
    assert.ok(Date.now() - started < 5000);
    // Ended in the store, as a Python reader ends it: one error frame after the stored
    // ones, the record terminal and the owner's slot freed.
    assert.deepEqual(frames[2], store.storedFrames(streamId)[2]);
    assert.equal(frames[2].seq, 2);
    assert.equal(frames[2].error.code, 'INTERNAL');
    assert.equal(frames.length, 3);
    const rec = await store.get(streamId);
    assert.equal(rec.status, 'error');
    assert.equal(rec.lastSeq, 2);
    assert.equal(store.running.get('alice').has(streamId), false);
  });

  test('frames an earlier stream of the same id left behind are never replayed', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5' });
    const streamId = randomUUID();
    await store.create(streamId, 'bob', 'function_url');
    store.seed(streamId, [...transcript(streamId, 3), { v: 1, streamId, seq: 4, type: 'done', stopReason: 'end_turn' }]);
    await store.finish(streamId, 'bob', 'done', { lastSeq: 4 });
    store.expire(streamId); // TTL removed the record; its frames remain
    await store.create(streamId, 'alice', 'function_url');
    store.seed(streamId, transcript(streamId, 0));
    const res = new FakeResponseStream();
    const following = call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }), res);
    await res.until(() => framesOf(res).length === 1);
    store.seed(streamId, [{ v: 1, streamId, seq: 1, type: 'done', stopReason: 'end_turn' }]);
    await following;
    assert.deepEqual(framesOf(res).map((f) => f.text ?? f.type), ['start', 'done']);
  });

  test('followers are bounded per stream: 429 TOO_MANY_FOLLOWERS before the SSE starts', T, async () => {
    const { settings, store, call } = setup({ FLUSH_INTERVAL_MS: '5', MAX_FOLLOWERS_PER_STREAM: '2' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    store.seed(streamId, transcript(streamId, 1));
    const streams = [new FakeResponseStream(), new FakeResponseStream()];
    const followers = streams.map((res) => call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }), res));
    await store.until(() => store.followersOf(streamId) === 2);
    const refused = await call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }));
    assert.equal(refused.res.prelude.statusCode, 429);
    assert.equal(errorBody(refused.res).code, 'TOO_MANY_FOLLOWERS');
    // A start re-posted for the same stream follows it too, so it is counted the same way.
    const again = await call(urlEvent({ token: 'good-alice', body: { prompt: 'p', streamId } }));
    assert.equal(again.res.prelude.statusCode, 429);
    assert.equal(errorBody(again.res).code, 'TOO_MANY_FOLLOWERS');
    // Followers release their slots when they end.
    store.seed(streamId, [{ v: 1, streamId, seq: 2, type: 'done', stopReason: 'end_turn' }]);
    await Promise.all(followers);
    assert.equal(store.followersOf(streamId), 0);
    assert.equal(store.followersOf('user#alice'), 0);
    assert.equal(settings.limits.maxFollowersPerStream, 2);
  });

  test('followers are bounded per user over all streams', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5', MAX_FOLLOWERS_PER_USER: '2' });
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    for (const id of ids) {
      await store.create(id, 'alice', 'function_url');
      store.seed(id, transcript(id, 0));
    }
    const streams = [new FakeResponseStream(), new FakeResponseStream()];
    const followers = ids.slice(0, 2).map((id, i) => call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId: id } }), streams[i]));
    await store.until(() => store.followersOf('user#alice') === 2);
    const refused = await call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId: ids[2] } }));
    assert.equal(refused.res.prelude.statusCode, 429);
    assert.equal(errorBody(refused.res).code, 'TOO_MANY_FOLLOWERS');
    assert.equal(store.followersOf(ids[2]), 0, 'the per-stream slot taken first is given back');
    for (const id of ids.slice(0, 2)) store.seed(id, [{ v: 1, streamId: id, seq: 1, type: 'done', stopReason: 'end_turn' }]);
    await Promise.all(followers);
  });

  test('a follower renews its slot while it follows', T, async () => {
    const { store, call } = setup({ FLUSH_INTERVAL_MS: '5', CLAIM_LEASE_S: '0.06' });
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    store.seed(streamId, transcript(streamId, 0));
    const res = new FakeResponseStream();
    const following = call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId } }), res);
    await store.until(() => store.followersOf(streamId) === 1);
    await new Promise((resolve) => setTimeout(resolve, 200)); // three leases
    assert.equal(store.followersOf(streamId), 1, 'still held: renewed');
    store.seed(streamId, [{ v: 1, streamId, seq: 1, type: 'done', stopReason: 'end_turn' }]);
    await following;
  });

  test("404 for another user's stream and for an unknown one", T, async () => {
    const { store, call } = setup();
    const streamId = randomUUID();
    await store.create(streamId, 'bob', 'function_url');
    for (const id of [streamId, randomUUID()]) {
      const { res } = await call(urlEvent({ method: 'GET', token: 'good-alice', query: { streamId: id } }));
      assert.equal(res.prelude.statusCode, 404);
      assert.equal(errorBody(res).code, 'NOT_FOUND');
    }
  });

  test('400 for a missing streamId or a bad Last-Event-ID', T, async () => {
    const { store, call } = setup();
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'function_url');
    const missing = await call(urlEvent({ method: 'GET', token: 'good-alice' }));
    assert.ok(errorBody(missing.res).message.includes('streamId'));
    const badSeq = await call(
      urlEvent({ method: 'GET', token: 'good-alice', query: { streamId }, headers: { 'last-event-id': 'x' } }),
    );
    assert.equal(badSeq.res.prelude.statusCode, 400);
    assert.ok(errorBody(badSeq.res).message.includes('Last-Event-ID'));
  });
});

describe('runStream (the producer)', () => {
  test('reading the model never waits on a slow store: text piles up and leaves coalesced', T, async () => {
    const settings = testSettings({ FLUSH_INTERVAL_MS: '1' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    const gate = deferred();
    let blocked = 0;
    store.beforeAppend = async (frames) => {
      if (frames[0].type === 'delta' && blocked++ === 0) {
        store.notify();
        await gate.promise;
      }
    };
    const model = new ScriptedModel();
    const texts = Array.from({ length: 100 }, (_, i) => `w${i} `);
    let consumed = 0;
    model.onOpen = (s) => {
      s.push({ type: 'text', text: texts[0] });
      // The rest arrive while the first delta's store write is blocked.
      store.until(() => blocked === 1).then(() => s.answer(texts.slice(1)));
    };
    const written = [];
    const done = runStream(
      { settings, store, model, log: silentLog },
      {
        streamId,
        owner: 'alice',
        record,
        workerId: 'w1',
        request: { streamId, prompt: 'p', maxTokens: 10 },
        write: (f) => written.push(f),
        remainingMs: () => 60_000,
      },
    );
    // The model is read to its end while the store is still blocked.
    await model.until(() => model.streams[0]?.closed === true);
    consumed = store.storedFrames(streamId).length;
    gate.resolve();
    const result = await done;
    assert.equal(consumed, 1, 'only the start frame was stored while the model was read to its end');
    assert.equal(result.status, 'done');
    const deltas = store.storedFrames(streamId).filter((f) => f.type === 'delta');
    assert.equal(deltas.map((f) => f.text).join(''), texts.join(''));
    assert.ok(deltas.length <= 3, `coalesced into ${deltas.length} frames`);
    assert.deepEqual(written, store.storedFrames(streamId));
  });

  test('SENDER_MODE=per_token: one frame per token, and the model is read only after each was stored', T, async () => {
    const settings = testSettings({ SENDER_MODE: 'per_token' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    const gate = deferred();
    let blocked = 0;
    store.beforeAppend = async (frames) => {
      if (frames[0].type === 'delta' && blocked++ === 0) {
        store.notify();
        await gate.promise;
      }
    };
    const model = new ScriptedModel();
    const texts = ['Server', 'less', ' stream', 'ing'];
    model.onOpen = (s) => s.answer(texts);
    const written = [];
    const done = runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 10 }, write: (f) => written.push(f), remainingMs: () => 60_000 },
    );
    await store.until(() => blocked === 1);
    // The first token's store write is blocked: the producer waits on it, so the other
    // tokens are still unread (and nothing after the first delta was written).
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(model.streams[0]._items.length, texts.length - 1 + 3);
    assert.deepEqual(written.map((f) => f.text ?? f.type), ['start', 'Server']);
    gate.resolve();
    const result = await done;
    assert.equal(result.status, 'done');
    assert.deepEqual(written.map((f) => f.text ?? f.type), ['start', ...texts, 'done']);
    assert.deepEqual(written, store.storedFrames(streamId));
  });

  test('the Lambda deadline ends a silent model with MODEL_TIMEOUT', T, async () => {
    const settings = testSettings({ FLUSH_INTERVAL_MS: '10' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    const model = new ScriptedModel(); // never answers
    const written = [];
    let remaining = 10_050; // 50 ms beyond the 10 s margin
    const result = await runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 1 }, write: (f) => written.push(f), remainingMs: () => remaining },
    );
    remaining = 0;
    assert.equal(result.status, 'error');
    assert.equal(written.at(-1).error.code, 'MODEL_TIMEOUT');
    assert.equal(model.streams[0].closed, true);
  });

  test('the slot is free by the time the client sees the terminal frame', T, async () => {
    const settings = testSettings();
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    const model = new ScriptedModel();
    model.onOpen = (s) => s.answer(['a', 'b']);
    const atTerminal = [];
    await runStream(
      { settings, store, model, log: silentLog },
      {
        streamId,
        owner: 'alice',
        record,
        workerId: 'w1',
        request: { streamId, prompt: 'p', maxTokens: 1 },
        write: (f) => {
          if (f.type === 'done') {
            atTerminal.push({
              stored: store.storedFrames(streamId).at(-1)?.type,
              status: store.streams.get(streamId).status,
              running: store.running.get('alice').size,
            });
          }
        },
        remainingMs: () => 60_000,
      },
    );
    assert.deepEqual(atTerminal, [{ stored: 'done', status: 'done', running: 0 }]);
  });

  test('the claim is renewed as a lease while the model runs', T, async () => {
    const settings = testSettings({ FLUSH_INTERVAL_MS: '5', CLAIM_LEASE_S: '0.06' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1', leaseS: 0.06 });
    const model = new ScriptedModel();
    model.onOpen = (s) => {
      s.push({ type: 'text', text: 'a' });
      setTimeout(() => s.answer(['b']), 250);
    };
    const result = await runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 1 }, write: () => {}, remainingMs: () => 60_000 },
    );
    assert.equal(result.status, 'done');
    assert.ok(store.calls.renewClaim >= 3, `renewed ${store.calls.renewClaim} times`);
  });

  test('a claim lost to a reader stops deliveries; the client gets the frame the reader stored', T, async () => {
    const settings = testSettings({ FLUSH_INTERVAL_MS: '5', CLAIM_LEASE_S: '0.06' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1', leaseS: 0.06 });
    const model = new ScriptedModel();
    const written = [];
    model.onOpen = (s) => {
      s.push({ type: 'text', text: 'a' });
      // A reader took this producer for dead (its Lambda was frozen) and ended the stream.
      store.until(() => written.some((f) => f.type === 'delta')).then(async () => {
        await store.endWithError(await store.get(streamId), (rec, seq) => ({ v: 1, streamId, seq, type: 'error', error: { code: 'INTERNAL', message: 'gone', retryable: true } }), 'INTERNAL');
        setTimeout(() => s.answer(['late']), 150);
      });
    };
    const result = await runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 1 }, write: (f) => { written.push(f); store.notify(); }, remainingMs: () => 60_000 },
    );
    assert.equal(result.status, 'error');
    const stored = store.storedFrames(streamId);
    assert.deepEqual(stored.map((f) => f.type), ['start', 'delta', 'error']);
    assert.deepEqual(written.filter((f) => f.seq !== undefined), stored, 'nothing after the reader\'s frame');
  });

  test('a sender that cannot drain ends the stream with an error frame after what is stored', T, async () => {
    const settings = testSettings({ FLUSH_INTERVAL_MS: '1' });
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    store.beforeAppend = async (frames) => {
      // A store write slower than what is left of the Lambda's time.
      if (frames[0].type === 'delta') await new Promise((resolve) => setTimeout(resolve, 1500));
    };
    const model = new ScriptedModel();
    let remaining = 11_000;
    model.onOpen = (s) => {
      s.answer(['a']);
      remaining = 6_000; // the drain gets its minimum of 1 s
    };
    const written = [];
    const result = await runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 1 }, write: (f) => written.push(f), remainingMs: () => remaining },
    );
    assert.equal(result.status, 'error');
    const rec = await store.get(streamId);
    assert.equal(rec.status, 'error');
    const stored = store.storedFrames(streamId);
    // Ended after what is stored, not finished as done while the sender still ran.
    assert.deepEqual(stored.map((f) => f.type), ['start', 'delta', 'error']);
    assert.equal(rec.lastSeq, 2);
    assert.equal(written.at(-1).type, 'error');
    assert.deepEqual(written.at(-1), stored.at(-1));
    assert.equal(written.filter((f) => f.type === 'done').length, 0);
    assert.equal(store.running.get('alice').size, 0);
  });

  test('END after the model finished is not mistaken for a cancel', T, async () => {
    const settings = testSettings();
    const store = new MemoryStore(settings);
    const streamId = randomUUID();
    const { record } = await store.create(streamId, 'alice', 'function_url', { claimedBy: 'w1' });
    const model = new ScriptedModel();
    model.onOpen = (s) => s.push({ type: 'text', text: 'x' }, { type: 'stop', stopReason: 'max_tokens' }, END);
    const written = [];
    await runStream(
      { settings, store, model, log: silentLog },
      { streamId, owner: 'alice', record, workerId: 'w1', request: { streamId, prompt: 'p', maxTokens: 1 }, write: (f) => written.push(f), remainingMs: () => 60_000 },
    );
    assert.equal(written.at(-1).stopReason, 'max_tokens');
  });
});
