// The shared vectors (tests/vectors/*.json) that the Python suite runs too.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { StreamError } from '../src/errors.mjs';
import { FlushPolicy } from '../src/flush.mjs';
import { FrameError, parseStartRequest, validateFrame } from '../src/frames.mjs';
import { jsonDepth, MAX_JSON_DEPTH, parseJson } from '../src/json_input.mjs';

const vectors = (/** @type {string} */ name) =>
  JSON.parse(readFileSync(new URL(`../../tests/vectors/${name}`, import.meta.url), 'utf8'));

describe('frames.json', () => {
  const { valid, invalid } = vectors('frames.json');
  for (const c of valid) {
    test(`valid: ${c.name}`, () => {
      assert.deepEqual(validateFrame(c.frame), c.frame);
    });
  }
  for (const c of invalid) {
    test(`invalid: ${c.name}`, () => {
      assert.throws(
        () => validateFrame(c.frame),
        (err) => err instanceof FrameError && err.message.includes(c.error),
      );
    });
  }
});

describe('start_requests.json', () => {
  const { limits: raw, cases } = vectors('start_requests.json');
  const limits = { maxStreamsPerUser: 3, ...raw };
  for (const c of cases) {
    test(c.name, () => {
      if (c.ok) {
        const req = parseStartRequest(c.request, limits);
        const expected = { ...c.normalized };
        if (!('streamId' in expected)) {
          assert.match(req.streamId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
          expected.streamId = req.streamId;
        }
        assert.deepEqual(req, expected);
      } else {
        assert.throws(
          () => parseStartRequest(c.request, limits),
          (err) => err instanceof StreamError && err.code === 'BAD_REQUEST' && err.message.includes(c.error),
        );
      }
    });
  }
});

describe('flush.json', () => {
  for (const c of vectors('flush.json').cases) {
    test(c.name, () => {
      const policy = new FlushPolicy(c.intervalMs, c.maxChars);
      for (const step of c.steps) {
        let out;
        if (step.drain) out = policy.drain();
        else if (step.tick) out = policy.due(step.t);
        else out = policy.add(step.text, step.t);
        assert.deepEqual(out, step.out, JSON.stringify(step));
      }
    });
  }

  test('a long text of emoji is chunked by code points, never splitting a pair', () => {
    const policy = new FlushPolicy(50, 3);
    const out = policy.add('🚀'.repeat(7), 0);
    assert.deepEqual(out, ['🚀🚀🚀', '🚀🚀🚀', '🚀']);
  });
});

describe('json_nesting.json', () => {
  const { limit, error, notJsonError, cases } = vectors('json_nesting.json');
  const textOf = (c) => c.text ?? c.repeat.open.repeat(c.repeat.times) + (c.repeat.inner ?? '') + c.repeat.close.repeat(c.repeat.times);
  test('the limit is the protocol limit', () => assert.equal(MAX_JSON_DEPTH, limit));
  for (const c of cases) {
    test(c.name, () => {
      const text = textOf(c);
      assert.equal(jsonDepth(text), c.depth);
      if (c.ok) assert.deepEqual(parseJson(text), JSON.parse(text));
      else {
        assert.throws(
          () => parseJson(text),
          (err) => err instanceof StreamError && err.code === 'BAD_REQUEST' && err.message.includes(c.notJson ? notJsonError : error),
        );
      }
    });
  }
});
