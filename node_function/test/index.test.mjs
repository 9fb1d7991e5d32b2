// index.mjs as Lambda loads it: the awslambda global defined first, settings from
// the environment, real clients. Everything local: the Bedrock emulator and moto
// in child processes, a JWKS served over http here.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { FakeResponseStream, framesOf, httpResponseStreamFrom, lambdaContext, urlEvent } from '../testing/fakes.mjs';
import { runPython, startBedrockEmulator, startMoto } from '../testing/python.mjs';
import { idClaims, SigningKey, signJwt, startJwksServer } from '../testing/tokens.mjs';

const T = { timeout: 60_000 };
const CLIENT = 'local-client-1';


const PY_READ = `
import dataclasses, json, sys
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
args = json.loads(sys.argv[1])
settings = Settings.from_env()
store = StreamStore(settings)
if args["op"] == "provision":
    from local.provision import create_tables
    create_tables(store.client, settings)
    print("true")
else:
    rec = store.get(args["id"])
    print(json.dumps({"record": rec and dataclasses.asdict(rec), "frames": store.frames_after(args["id"], -1)}))
`;

describe('index.mjs under an emulated Lambda streaming runtime', () => {
  const key = new SigningKey();
  let moto;
  let emulator;
  let jwks;
  let handler;
  let wrapped = 0;
  const pyEnv = {};

  before(async () => {
    [moto, emulator, jwks] = await Promise.all([
      startMoto(),
      startBedrockEmulator({ firstTokenDelayMs: 10, tokensPerSecond: 500 }),
      startJwksServer([key]),
    ]);
    Object.assign(process.env, {
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_ENDPOINT_URL_DYNAMODB: moto.endpoint,
      AWS_ENDPOINT_URL_BEDROCK_RUNTIME: emulator.endpoint,
      STREAMS_TABLE: 'idx-streams',
      FRAMES_TABLE: 'idx-frames',
      USER_POOL_ID: 'us-east-1_TestPool',
      USER_POOL_CLIENT_ID: CLIENT,
      JWT_ISSUER: jwks.issuer,
      JWKS_URL: jwks.jwksUrl,
      MODEL_ID: 'anthropic.local-v1:0',
      FLUSH_INTERVAL_MS: '20',
    });
    for (const k of ['AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_ENDPOINT_URL_DYNAMODB', 'STREAMS_TABLE', 'FRAMES_TABLE', 'USER_POOL_ID', 'USER_POOL_CLIENT_ID']) {
      pyEnv[k] = process.env[k];
    }
    await runPython(PY_READ, { op: 'provision' }, pyEnv);
    // What Lambda's Node.js runtime (and the local Function URL host) defines before import.
    globalThis.awslambda = {
      streamifyResponse: (fn) => {
        wrapped += 1;
        return fn;
      },
      HttpResponseStream: { from: httpResponseStreamFrom },
    };
    ({ handler } = await import('../index.mjs'));
  });

  after(async () => {
    delete globalThis.awslambda;
    await Promise.all([moto?.stop(), emulator?.stop(), jwks?.close()]);
  });

  const token = (sub = 'alice') => signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT, sub }), key);

  test('the handler is wrapped by awslambda.streamifyResponse at import', () => {
    assert.equal(wrapped, 1);
    assert.equal(typeof handler, 'function');
  });

  test('POST streams the model as SSE and leaves the transcript for the Python REST API', T, async () => {
    const streamId = randomUUID();
    const res = new FakeResponseStream();
    const context = lambdaContext();
    await handler(urlEvent({ token: token(), body: { prompt: 'Hello [tokens=25]', streamId } }), res, context);
    assert.equal(context.callbackWaitsForEmptyEventLoop, false);
    assert.equal(res.prelude.statusCode, 200);
    const frames = framesOf(res);
    assert.equal(frames[0].model, 'anthropic.local-v1:0');
    assert.equal(frames.at(-1).type, 'done');
    assert.equal(frames.at(-1).usage.outputTokens, 25);
    const seen = await runPython(PY_READ, { op: 'read', id: streamId }, pyEnv);
    assert.equal(seen.record.status, 'done');
    assert.equal(seen.record.transport, 'function_url');
    assert.equal(seen.record.owner, 'alice');
    assert.equal(seen.record.last_seq, frames.at(-1).seq);
    assert.deepEqual(seen.frames, frames);

    const resumed = new FakeResponseStream();
    await handler(
      urlEvent({ method: 'GET', token: token(), query: { streamId }, headers: { 'last-event-id': '2' } }),
      resumed,
      lambdaContext(),
    );
    assert.deepEqual(framesOf(resumed), frames.slice(3));

    const stranger = new FakeResponseStream();
    await handler(urlEvent({ method: 'GET', token: token('eve'), query: { streamId } }), stranger, lambdaContext());
    assert.equal(stranger.prelude.statusCode, 404);
  });

  test('a forged token is 401 and writes nothing to the store', T, async () => {
    const streamId = randomUUID();
    const forged = signJwt(idClaims({ issuer: jwks.issuer, aud: CLIENT }), new SigningKey(key.kid));
    const res = new FakeResponseStream();
    await handler(urlEvent({ token: forged, body: { prompt: 'hi', streamId } }), res, lambdaContext());
    assert.equal(res.prelude.statusCode, 401);
    assert.deepEqual(JSON.parse(res.body), { message: 'Unauthorized' });
    const seen = await runPython(PY_READ, { op: 'read', id: streamId }, pyEnv);
    assert.equal(seen.record, null);
    assert.deepEqual(seen.frames, []);
  });
});
