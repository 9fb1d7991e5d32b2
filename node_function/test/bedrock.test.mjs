// ModelStream with a fake SDK client: normalization, error mapping, bounded
// retries, timeouts and aborting the request.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AccessDeniedException,
  ModelStreamErrorException,
  ThrottlingException,
  ValidationException,
} from '@aws-sdk/client-bedrock-runtime';

import {
  backoffDelayMs,
  BedrockModel,
  buildConverseRequest,
  classifyError,
  END,
  mapStopReason,
  ModelStream,
} from '../src/bedrock.mjs';
import { StreamError } from '../src/errors.mjs';
import { deferred, testSettings } from '../testing/fakes.mjs';

const T = { timeout: 10_000 };
const meta = { $metadata: {} };

/**
 * A fake BedrockRuntimeClient. Each call takes the next script: an Error (the
 * call fails), or a list of raw events / Errors / 'hang' for the event stream.
 * 'hang' (or a script of 'hang') waits until the request is aborted.
 */
class FakeClient {
  constructor(scripts) {
    this.scripts = [...scripts];
    this.calls = [];
  }

  async send(command, { abortSignal } = {}) {
    const call = { input: command.input, aborted: false };
    this.calls.push(call);
    const aborted = new Promise((_, reject) => {
      abortSignal?.addEventListener('abort', () => {
        call.aborted = true;
        reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
      });
    });
    aborted.catch(() => {});
    const script = this.scripts.shift();
    if (script instanceof Error) throw script;
    if (script === 'hang') return aborted;
    return {
      stream: (async function* events() {
        for (const item of script) {
          if (item === 'hang') await aborted;
          else if (item instanceof Error) throw item;
          else yield item;
        }
      })(),
    };
  }
}

const answer = (texts, stopReason = 'end_turn') => [
  { messageStart: { role: 'assistant' } },
  { contentBlockStart: { start: {}, contentBlockIndex: 0 } },
  ...texts.map((text) => ({ contentBlockDelta: { delta: { text }, contentBlockIndex: 0 } })),
  { contentBlockStop: { contentBlockIndex: 0 } },
  { messageStop: { stopReason } },
  { metadata: { usage: { inputTokens: 5, outputTokens: texts.length, totalTokens: 5 + texts.length }, metrics: { latencyMs: 42 } } },
];

function open(scripts, env = {}) {
  const client = new FakeClient(scripts);
  const settings = testSettings({ MODEL_RETRY_BASE_MS: '1', MODEL_RETRY_MAX_MS: '2', ...env });
  const stream = new ModelStream(client, { modelId: 'm' }, settings, { rng: () => 0 });
  return { client, stream };
}

async function drain(stream) {
  const events = [];
  for (;;) {
    const e = await stream.nextEvent(1000);
    if (e === END) return events;
    if (e) events.push(e);
  }
}

test('events are normalized: text, stop reason, usage and metrics', T, async () => {
  const { stream, client } = open([answer(['Hel', 'lo'], 'model_context_window_exceeded')]);
  const events = await drain(stream);
  assert.deepEqual(events.slice(0, 3), [
    { type: 'text', text: 'Hel' },
    { type: 'text', text: 'lo' },
    { type: 'stop', stopReason: 'max_tokens' },
  ]);
  assert.equal(events[3].type, 'metadata');
  assert.deepEqual(events[3].usage, { inputTokens: 5, outputTokens: 2 });
  assert.equal(events[3].metrics.modelLatencyMs, 42);
  assert.equal(typeof events[3].metrics.modelFirstTokenMs, 'number');
  assert.equal(client.calls.length, 1);
  assert.equal(client.calls[0].aborted, false, 'a finished response is not aborted');
});

test('stop reasons map to the protocol', () => {
  assert.equal(mapStopReason('end_turn'), 'end_turn');
  assert.equal(mapStopReason('guardrail_intervened'), 'guardrail_intervened');
  assert.equal(mapStopReason('tool_use'), 'end_turn');
  assert.equal(mapStopReason(undefined), 'end_turn');
});

test('throttling before the first text is retried with backoff, then succeeds', T, async () => {
  const throttle = () => new ThrottlingException({ message: 'Too many requests', ...meta });
  const { stream, client } = open([throttle(), throttle(), answer(['ok'])]);
  const events = await drain(stream);
  assert.deepEqual(events[0], { type: 'text', text: 'ok' });
  assert.equal(stream.attempts, 3);
  assert.equal(client.calls.length, 3);
});

test('throttling beyond MODEL_THROTTLE_RETRIES is THROTTLED, retryable, with a safe message', T, async () => {
  const throttle = () => new ThrottlingException({ message: 'Too many tokens, arn:aws:bedrock:x', ...meta });
  const { stream } = open([throttle(), throttle()], { MODEL_THROTTLE_RETRIES: '1' });
  await assert.rejects(drain(stream), (err) => {
    assert.ok(err instanceof StreamError);
    assert.equal(err.code, 'THROTTLED');
    assert.equal(err.retryable, true);
    assert.ok(!err.message.includes('arn:'));
    return true;
  });
  assert.equal(stream.attempts, 2);
});

test('in-stream throttling after text is not retried (it would duplicate text)', T, async () => {
  const { stream, client } = open([
    [{ contentBlockDelta: { delta: { text: 'par' } } }, new ThrottlingException({ message: 'x', ...meta })],
    answer(['never']),
  ]);
  const seen = [];
  await assert.rejects(
    (async () => {
      for (;;) {
        const e = await stream.nextEvent(1000);
        if (e === END) return;
        if (e) seen.push(e);
      }
    })(),
    (err) => err.code === 'THROTTLED',
  );
  assert.deepEqual(seen, [{ type: 'text', text: 'par' }]);
  assert.equal(client.calls.length, 1);
});

test('in-stream modelStreamErrorException is MODEL_ERROR', T, async () => {
  const { stream } = open([[{ contentBlockDelta: { delta: { text: 'a' } } }, new ModelStreamErrorException({ message: 'boom', ...meta })]]);
  await assert.rejects(drain(stream), (err) => err.code === 'MODEL_ERROR' && err.message === 'The model failed while answering.');
});

test('an exception yielded as a stream member is mapped the same way', T, async () => {
  const { stream } = open([[{ modelStreamErrorException: { message: 'boom' } }]]);
  await assert.rejects(drain(stream), (err) => err.code === 'MODEL_ERROR');
});

test('HTTP-level errors map like the Python side', () => {
  const [validation, r1] = classifyError(new ValidationException({ message: 'bad', ...meta }), false);
  assert.equal(validation.code, 'BAD_REQUEST');
  assert.equal(validation.message, 'The model rejected the request.');
  assert.equal(r1, false);
  const [denied] = classifyError(new AccessDeniedException({ message: 'no access to arn:...', ...meta }), false);
  assert.equal(denied.code, 'MODEL_ERROR');
  assert.equal(denied.message, 'The model is not available.');
  const [, retryable] = classifyError(new ThrottlingException({ message: 'x', ...meta }), false);
  assert.equal(retryable, true);
  assert.equal(classifyError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), false)[0].message, 'The model is not available.');
  assert.equal(classifyError(Object.assign(new Error('x'), { name: 'TimeoutError' }), true)[0].code, 'MODEL_TIMEOUT');
});

test('no first event within MODEL_FIRST_EVENT_TIMEOUT_S: MODEL_TIMEOUT and the request is aborted', T, async () => {
  const { stream, client } = open(['hang'], { MODEL_FIRST_EVENT_TIMEOUT_S: '0.05' });
  await assert.rejects(drain(stream), (err) => err.code === 'MODEL_TIMEOUT');
  assert.equal(client.calls[0].aborted, true);
});

test('silence beyond MODEL_IDLE_TIMEOUT_S after an event: MODEL_TIMEOUT and aborted', T, async () => {
  const { stream, client } = open([[{ messageStart: {} }, { contentBlockDelta: { delta: { text: 'a' } } }, 'hang']], {
    MODEL_IDLE_TIMEOUT_S: '0.05',
  });
  await assert.rejects(drain(stream), (err) => err.code === 'MODEL_TIMEOUT');
  assert.equal(client.calls[0].aborted, true);
});

test('nextEvent returns null when the model is silent for the given time', T, async () => {
  const { stream } = open(['hang']);
  assert.equal(await stream.nextEvent(5), null);
  stream.close();
});

test('close() aborts the in-flight request and a waiting nextEvent returns END', T, async () => {
  const { stream, client } = open([[{ contentBlockDelta: { delta: { text: 'a' } } }, 'hang']]);
  assert.deepEqual(await stream.nextEvent(1000), { type: 'text', text: 'a' });
  const waiting = stream.nextEvent(60_000);
  stream.close();
  assert.equal(await waiting, END);
  assert.equal(client.calls[0].aborted, true);
  stream.close(); // idempotent
});

test('close() during a retry backoff ends the stream without another call', T, async () => {
  const client = new FakeClient([new ThrottlingException({ message: 'x', ...meta }), answer(['x'])]);
  const settings = testSettings({ MODEL_RETRY_BASE_MS: '60000', MODEL_RETRY_MAX_MS: '60000' });
  const backingOff = deferred();
  const stream = new ModelStream(client, { modelId: 'm' }, settings, {
    rng: () => 1, // a full-length (60 s) backoff
    log: (level, msg) => msg === 'bedrock retry' && backingOff.resolve(),
  });
  const waiting = stream.nextEvent(120_000);
  await backingOff.promise;
  stream.close();
  assert.equal(await waiting, END);
  assert.equal(client.calls.length, 1);
});

test('an end without messageStop is MODEL_ERROR (the answer was cut)', T, async () => {
  const { stream } = open([[{ contentBlockDelta: { delta: { text: 'a' } } }]]);
  await assert.rejects(drain(stream), (err) => err.code === 'MODEL_ERROR');
});

test('backoff is full jitter, bounded by MODEL_RETRY_MAX_MS', () => {
  const s = { modelRetryBaseMs: 250, modelRetryMaxMs: 4000 };
  assert.equal(backoffDelayMs(0, s, () => 1), 250);
  assert.equal(backoffDelayMs(3, s, () => 1), 2000);
  assert.equal(backoffDelayMs(9, s, () => 1), 4000);
  assert.equal(backoffDelayMs(9, s, () => 0), 0);
});

test('the Converse request: prompt or messages, system, inference config', () => {
  const s = { modelId: 'model-x' };
  assert.deepEqual(buildConverseRequest({ streamId: 'x', prompt: 'hi', maxTokens: 9, temperature: 0.5, system: 'sys' }, s), {
    modelId: 'model-x',
    messages: [{ role: 'user', content: [{ text: 'hi' }] }],
    inferenceConfig: { maxTokens: 9, temperature: 0.5 },
    system: [{ text: 'sys' }],
  });
  const conv = buildConverseRequest(
    { streamId: 'x', maxTokens: 1, messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }] },
    s,
  );
  assert.deepEqual(conv.messages.map((m) => [m.role, m.content[0].text]), [['user', 'a'], ['assistant', 'b'], ['user', 'c']]);
  assert.deepEqual(conv.inferenceConfig, { maxTokens: 1 });
  assert.equal('system' in conv, false);
});

test('BedrockModel reuses one client and maps a failing factory to INTERNAL', T, async () => {
  let made = 0;
  const settings = testSettings();
  const model = new BedrockModel(settings, () => {
    made += 1;
    return new FakeClient([answer(['a']), answer(['b'])]);
  });
  await drain(model.open({ streamId: 'x', prompt: 'p', maxTokens: 1 }));
  await drain(model.open({ streamId: 'y', prompt: 'p', maxTokens: 1 }));
  assert.equal(made, 1);
  const broken = new BedrockModel(settings, () => {
    throw new Error('no region');
  });
  assert.throws(() => broken.open({ streamId: 'x', prompt: 'p', maxTokens: 1 }), (err) => err.code === 'INTERNAL');
});
