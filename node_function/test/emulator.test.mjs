// The real AWS SDK for JavaScript parsing a real application/vnd.amazon.eventstream
// response: the project's Bedrock emulator (local/bedrock.py) in a child process,
// called through src/bedrock.mjs with NodeHttpHandler, and the whole handler on top.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { BedrockModel, createBedrockClient, END } from '../src/bedrock.mjs';
import { createStreamHandler } from '../src/handler.mjs';
import { silentLog } from '../src/log.mjs';
import {
  FakeResponseStream,
  fakeVerifier,
  framesOf,
  httpResponseStreamFrom,
  lambdaContext,
  MemoryStore,
  testSettings,
  urlEvent,
} from '../testing/fakes.mjs';
import { runPython, startBedrockEmulator } from '../testing/python.mjs';

const T = { timeout: 30_000 };

describe('Bedrock emulator through the JS SDK', () => {
  let emulator;
  let endpoint;
  let settings;
  let model;

  const control = async (method, path, body) => {
    const resp = await fetch(`${endpoint}_emulator/${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.equal(resp.status, 200);
    return resp.json();
  };

  /** The emulator's deterministic answer for a prompt, computed by local/simulated_model.py. */
  const expectedAnswer = (prompt) =>
    runPython(
      'import json, sys\nfrom local.simulated_model import answer_text, request_for_prompt\n' +
        'print(json.dumps(answer_text(request_for_prompt(json.loads(sys.argv[1])))))',
      prompt,
    );

  const read = async (stream) => {
    let text = '';
    const events = [];
    for (;;) {
      const e = await stream.nextEvent(1000);
      if (e === END) return { text, events };
      if (e?.type === 'text') text += e.text;
      else if (e) events.push(e);
    }
  };

  before(async () => {
    emulator = await startBedrockEmulator();
    ({ endpoint } = emulator);
    // What the local cloud sets; the SDK reads it (no local-only code path).
    process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = endpoint;
    process.env.AWS_ACCESS_KEY_ID = 'test';
    process.env.AWS_SECRET_ACCESS_KEY = 'test';
    delete process.env.AWS_PROFILE;
    settings = testSettings({ MODEL_ID: 'anthropic.test-model-v1:0', MODEL_RETRY_BASE_MS: '5' });
    model = new BedrockModel(settings, () => createBedrockClient(settings));
  });

  after(async () => {
    await emulator?.stop();
  });

  test('the text, stop reason and usage are what the emulator sent', T, async () => {
    await control('POST', 'faults', { reset: true });
    const prompt = `Explain streaming ${randomUUID()} [tokens=40]`;
    const { text, events } = await read(model.open({ streamId: 'x', prompt, maxTokens: 1024 }));
    assert.equal(text, await expectedAnswer(prompt));
    assert.deepEqual(events[0], { type: 'stop', stopReason: 'end_turn' });
    assert.equal(events[1].type, 'metadata');
    assert.equal(events[1].usage.outputTokens, 40);
    assert.ok(events[1].usage.inputTokens > 0);
    assert.ok(events[1].metrics.modelFirstTokenMs >= 0);
    const { streams } = await control('GET', 'streams');
    const record = streams.at(-1);
    assert.equal(record.tokensSent, 40);
    assert.equal(record.closedBy, 'complete');
  });

  test('maxTokens truncates: stop reason max_tokens', T, async () => {
    await control('POST', 'faults', { reset: true });
    const { events } = await read(model.open({ streamId: 'x', prompt: 'Long [tokens=50]', maxTokens: 5 }));
    assert.equal(events[0].stopReason, 'max_tokens');
    assert.equal(events[1].usage.outputTokens, 5);
  });

  test('an in-stream modelStreamErrorException is MODEL_ERROR after the text before it', T, async () => {
    await control('POST', 'faults', { reset: true });
    await control('POST', 'faults', { failAfterTokens: 3 });
    const stream = model.open({ streamId: 'x', prompt: `Fail ${randomUUID()} [tokens=30]`, maxTokens: 100 });
    let texts = 0;
    await assert.rejects(
      (async () => {
        for (;;) {
          const e = await stream.nextEvent(1000);
          if (e === END) return;
          if (e?.type === 'text') texts += 1;
        }
      })(),
      (err) => err.code === 'MODEL_ERROR' && err.message === 'The model failed while answering.',
    );
    assert.equal(texts, 3);
  });

  test('HTTP 429 throttling before the first text is retried', T, async () => {
    await control('POST', 'faults', { reset: true });
    await control('POST', 'faults', { throttle: 2 });
    const stream = model.open({ streamId: 'x', prompt: 'Retry me [tokens=5]', maxTokens: 100 });
    const { text } = await read(stream);
    assert.ok(text.length > 0);
    assert.equal(stream.attempts, 3);
  });

  test('in-stream throttling beyond the retries is THROTTLED', T, async () => {
    await control('POST', 'faults', { reset: true });
    await control('POST', 'faults', { throttleInStream: 5 });
    const stream = model.open({ streamId: 'x', prompt: 'Busy [tokens=5]', maxTokens: 100 });
    await assert.rejects(read(stream), (err) => err.code === 'THROTTLED' && err.retryable === true);
    assert.equal(stream.attempts, settings.modelThrottleRetries + 1);
  });

  test('close() aborts the HTTP request: the emulator sees the client leave', T, async () => {
    await control('POST', 'faults', { reset: true });
    await control('DELETE', 'streams');
    const stream = model.open({ streamId: 'x', prompt: `Abort ${randomUUID()} [tokens=5000]`, maxTokens: 4096 });
    for (let got = 0; got < 3; ) {
      const e = await stream.nextEvent(1000);
      if (e?.type === 'text') got += 1;
    }
    stream.close();
    // Wait for the emulator to record the close (it notices the socket at once).
    let record;
    for (let i = 0; i < 200; i += 1) {
      [record] = (await control('GET', 'streams')).streams;
      if (record?.closedBy) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(record.closedBy, 'client');
    assert.ok(record.tokensSent < 5000);
  });

  test('the handler streams the emulator answer as SSE, stored frame by frame', T, async () => {
    await control('POST', 'faults', { reset: true });
    const store = new MemoryStore(settings);
    const handler = createStreamHandler({
      settings,
      verifier: fakeVerifier,
      store,
      model,
      httpResponseStreamFrom,
      log: silentLog,
    });
    const prompt = `Whole path ${randomUUID()} [tokens=60]`;
    const streamId = randomUUID();
    const res = new FakeResponseStream();
    await handler(urlEvent({ token: 'good-carol', body: { prompt, streamId } }), res, lambdaContext());
    assert.equal(res.prelude.statusCode, 200);
    const frames = framesOf(res);
    assert.equal(frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''), await expectedAnswer(prompt));
    assert.equal(frames.at(-1).type, 'done');
    assert.equal(frames.at(-1).usage.outputTokens, 60);
    assert.deepEqual(store.storedFrames(streamId), frames);
    assert.equal((await store.get(streamId)).status, 'done');
  });
});
