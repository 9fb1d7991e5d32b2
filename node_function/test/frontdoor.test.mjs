// The REST API front door (REST proxy events, API Gateway response streaming): event
// parsing, the prelude, and the same frames as the Function URL from the same handler.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import { validateFrame } from '../src/frames.mjs';
import { frontDoor, isRestProxyEvent } from '../src/frontdoor.mjs';
import { createStreamHandler } from '../src/handler.mjs';
import {
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

function setup(env = {}, corsAllowOrigin = undefined) {
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
    ...(corsAllowOrigin === undefined ? {} : { corsAllowOrigin }),
  });
  const call = async (event, res = new FakeResponseStream()) => {
    await handler(event, res, lambdaContext());
    return { res };
  };
  return { store, model, call, logs };
}

/** A REST API proxy event (v1) as API Gateway sends it after a TOKEN authorizer. */
function restEvent({ method = 'POST', resource, path, pathParameters = null, body, token, headers = {}, query, sub } = {}) {
  const h = { 'Content-Type': 'application/json', ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const raw = body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body);
  return {
    resource,
    path,
    httpMethod: method,
    headers: h,
    multiValueHeaders: Object.fromEntries(Object.entries(h).map(([k, v]) => [k, [v]])),
    queryStringParameters: query ?? null,
    multiValueQueryStringParameters: query ? Object.fromEntries(Object.entries(query).map(([k, v]) => [k, [v]])) : null,
    pathParameters,
    stageVariables: null,
    requestContext: {
      resourcePath: resource,
      httpMethod: method,
      path: `/api${path}`,
      stage: 'api',
      requestId: 'rest-1',
      identity: { sourceIp: '127.0.0.1' },
      authorizer: sub === undefined ? undefined : { principalId: sub, sub, username: sub, integrationLatency: 3 },
    },
    body: raw,
    isBase64Encoded: false,
  };
}

const startEvent = (opts) => restEvent({ method: 'POST', resource: '/streams', path: '/streams', ...opts });
const eventsEvent = (streamId, opts) =>
  restEvent({
    method: 'GET',
    resource: '/streams/{stream_id}/events',
    path: `/streams/${streamId}/events`,
    pathParameters: { stream_id: streamId },
    ...opts,
  });

describe('frontDoor', () => {
  test('tells a REST proxy event from a Function URL event', () => {
    assert.equal(isRestProxyEvent(startEvent({ token: 'good-a' })), true);
    assert.equal(isRestProxyEvent(urlEvent({ token: 'good-a' })), false);
    assert.equal(isRestProxyEvent(null), false);
  });

  test('a Function URL event passes through untouched, prelude and all', () => {
    const event = urlEvent({ token: 'good-a', body: { prompt: 'hi' } });
    const door = frontDoor(event, { corsAllowOrigin: '*' });
    assert.equal(door.event, event);
    assert.equal(door.transport, 'function_url');
    assert.equal(door.gatewaySub, null);
    const prelude = { statusCode: 200, headers: { 'Content-Type': 'text/event-stream' } };
    assert.deepEqual(door.prelude(prelude), prelude);
  });

  test('a REST start: headers lower-cased from multiValueHeaders, known route at /', () => {
    const door = frontDoor(
      startEvent({ token: 'good-a', body: { prompt: 'hi' }, sub: 'a', headers: { 'X-Twice': 'one' } }),
      { corsAllowOrigin: 'https://app.example' },
    );
    assert.equal(door.transport, 'rest_stream');
    assert.equal(door.gatewaySub, 'a');
    assert.equal(door.event.rawPath, '/');
    assert.equal(door.event.requestContext.http.method, 'POST');
    assert.equal(door.event.headers.authorization, 'Bearer good-a');
    assert.equal(door.event.headers['x-twice'], 'one');
    assert.deepEqual(JSON.parse(door.event.body), { prompt: 'hi' });
    assert.deepEqual(door.prelude({ statusCode: 401, headers: { 'Content-Type': 'application/json' } }), {
      statusCode: 401,
      headers: { 'Content-Type': 'application/json', 'Access-Control-Allow-Origin': 'https://app.example' },
    });
  });

  test('repeated headers are joined as payload 2.0 joins them', () => {
    const event = startEvent({ token: 'good-a' });
    event.multiValueHeaders['X-Forwarded-For'] = ['1.1.1.1', '2.2.2.2'];
    event.headers['X-Forwarded-For'] = '2.2.2.2';
    assert.equal(frontDoor(event).event.headers['x-forwarded-for'], '1.1.1.1,2.2.2.2');
  });

  test('a REST resume: the path id and afterSeq become streamId and lastEventId', () => {
    const id = randomUUID();
    const door = frontDoor(eventsEvent(id, { token: 'good-a', query: { afterSeq: '4', lastEventId: '9' } }));
    assert.equal(door.event.rawPath, '/');
    assert.equal(door.event.requestContext.http.method, 'GET');
    assert.deepEqual(door.event.queryStringParameters, { afterSeq: '4', lastEventId: '4', streamId: id });
    const plain = frontDoor(eventsEvent(id, { token: 'good-a', query: { streamId: 'other', lastEventId: '9' } }));
    assert.deepEqual(plain.event.queryStringParameters, { streamId: id }, 'only afterSeq names the position');
  });

  test('no CORS header when CORS is off', () => {
    const door = frontDoor(startEvent({ token: 'good-a' }), { corsAllowOrigin: 'none' });
    assert.deepEqual(door.prelude({ statusCode: 200, headers: { A: 'b' } }), { statusCode: 200, headers: { A: 'b' } });
  });
});

describe('the handler behind the REST front door', () => {
  test('POST /streams streams the same frames as the Function URL; transport rest_stream', T, async () => {
    const { store, model, call } = setup({}, 'none');
    model.onOpen = (s) => s.answer(['Hello', ' wor', 'ld']);
    const viaRest = randomUUID();
    const { res } = await call(startEvent({ token: 'good-alice', sub: 'alice', body: { prompt: 'hi', streamId: viaRest } }));
    assert.deepEqual(res.prelude, {
      statusCode: 200,
      headers: { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' },
    });
    const frames = framesOf(res);
    for (const f of frames) validateFrame(f);
    assert.deepEqual(frames.map((f) => f.seq), frames.map((_, i) => i));
    assert.equal(frames.filter((f) => ['done', 'error'].includes(f.type)).length, 1);
    assert.equal(frames.at(-1).type, 'done');
    const rec = await store.get(viaRest);
    assert.equal(rec.transport, 'rest_stream');
    assert.equal(rec.owner, 'alice');

    // The same script through the Function URL: the same frames but for the stream id.
    const viaUrl = randomUUID();
    const url = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi', streamId: viaUrl } }));
    const strip = (fs) => fs.map(({ streamId, ...rest }) => rest);
    assert.deepEqual(strip(framesOf(url.res)), strip(frames));
    assert.equal((await store.get(viaUrl)).transport, 'function_url');
  });

  test('a configured CORS origin is on the REST prelude only', T, async () => {
    const { model, call } = setup({}, '*');
    model.onOpen = (s) => s.answer(['ok']);
    const { res } = await call(startEvent({ token: 'good-alice', sub: 'alice', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.headers['Access-Control-Allow-Origin'], '*');
    // The Function URL's prelude never carries CORS (the URL's own config does).
    const url = await call(urlEvent({ token: 'good-alice', body: { prompt: 'hi' } }));
    assert.equal(url.res.prelude.headers['Access-Control-Allow-Origin'], undefined);
  });

  test('the function checks the token itself (defence in depth): 401 before any model call', T, async () => {
    const { model, call, logs } = setup({}, 'none');
    for (const token of [undefined, 'forged']) {
      const { res } = await call(startEvent({ token, sub: 'alice', body: { prompt: 'hi' } }));
      assert.equal(res.prelude.statusCode, 401);
      assert.equal(res.prelude.headers['WWW-Authenticate'], 'Bearer');
    }
    assert.equal(model.streams.length, 0);
    assert.ok(logs.some((l) => l.msg === 'token rejected' && l.entry === 'rest_stream'));
  });

  test("a token for another user than the gateway's authorizer named is refused", T, async () => {
    const { model, call } = setup({}, 'none');
    const { res } = await call(startEvent({ token: 'good-mallory', sub: 'alice', body: { prompt: 'hi' } }));
    assert.equal(res.prelude.statusCode, 401);
    // The one refusal body of every entry point (the reason is only logged).
    assert.deepEqual(JSON.parse(res.body), { message: 'Unauthorized' });
    assert.equal(model.streams.length, 0);
  });

  test('GET /streams/{id}/events replays after Last-Event-ID or afterSeq; 404 for another user', T, async () => {
    const { store, call } = setup({}, 'none');
    const streamId = randomUUID();
    await store.create(streamId, 'alice', 'rest_stream');
    const frames = [
      { v: 1, streamId, seq: 0, type: 'start', model: 'm' },
      { v: 1, streamId, seq: 1, type: 'delta', text: 'a' },
      { v: 1, streamId, seq: 2, type: 'delta', text: 'b' },
      { v: 1, streamId, seq: 3, type: 'done', stopReason: 'end_turn' },
    ];
    store.seed(streamId, frames);
    await store.finish(streamId, 'alice', 'done', { lastSeq: 3 });

    const byHeader = await call(eventsEvent(streamId, { token: 'good-alice', sub: 'alice', headers: { 'Last-Event-ID': '1' } }));
    assert.equal(byHeader.res.prelude.statusCode, 200);
    assert.deepEqual(framesOf(byHeader.res), frames.slice(2));
    const byQuery = await call(eventsEvent(streamId, { token: 'good-alice', sub: 'alice', query: { afterSeq: '0' } }));
    assert.deepEqual(framesOf(byQuery.res), frames.slice(1));
    const atEnd = await call(eventsEvent(streamId, { token: 'good-alice', sub: 'alice', query: { afterSeq: '3' } }));
    assert.equal(atEnd.res.prelude.statusCode, 204);

    const other = await call(eventsEvent(streamId, { token: 'good-mallory', sub: 'mallory' }));
    assert.equal(other.res.prelude.statusCode, 404);
    assert.equal(JSON.parse(other.res.body).error.code, 'NOT_FOUND');
    const bad = await call(eventsEvent(streamId, { token: 'good-alice', sub: 'alice', query: { afterSeq: 'x' } }));
    assert.equal(bad.res.prelude.statusCode, 400);
    const badId = await call(eventsEvent('not-a-uuid', { token: 'good-alice', sub: 'alice' }));
    assert.equal(badId.res.prelude.statusCode, 400);
  });

  test('routes the REST API does not define are 404, not a start or a resume', T, async () => {
    const { model, call } = setup({}, 'none');
    for (const event of [
      restEvent({ method: 'GET', resource: '/streams', path: '/streams', token: 'good-alice', sub: 'alice' }),
      restEvent({ method: 'POST', resource: '/other', path: '/other', token: 'good-alice', sub: 'alice', body: { prompt: 'hi' } }),
    ]) {
      const { res } = await call(event);
      assert.equal(res.prelude.statusCode, 404);
    }
    assert.equal(model.streams.length, 0);
  });
});
