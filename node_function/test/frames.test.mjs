// Frame building, encoding and SSE framing beyond the shared vectors.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, StreamError } from '../src/errors.mjs';
import { encode, FrameBuilder, FrameError, maxTextChars, rejection, validateFrame } from '../src/frames.mjs';
import { HEARTBEAT, sseEvent } from '../src/sse.mjs';
import { asciiJson } from '../src/store.mjs';
import { parseSse } from '../testing/fakes.mjs';

test('the builder numbers transcript frames from 0 and every frame validates', () => {
  const b = new FrameBuilder('s-1');
  const frames = [
    b.start('m'),
    b.delta('Hello'),
    b.delta(' 🚀'),
    b.done('end_turn', { inputTokens: 1, outputTokens: 2 }, { modelFirstTokenMs: 3 }),
  ];
  assert.deepEqual(frames.map((f) => f.seq), [0, 1, 2, 3]);
  assert.equal(b.lastSeq, 3);
  for (const f of frames) validateFrame(f);
  assert.deepEqual(frames[0], { v: 1, streamId: 's-1', seq: 0, type: 'start', model: 'm' });
  const hb = b.heartbeat();
  assert.deepEqual(hb, { v: 1, streamId: 's-1', type: 'heartbeat' });
  validateFrame(hb);
  assert.equal(b.lastSeq, 3, 'heartbeats take no seq');
});

test('the builder refuses what the protocol forbids', () => {
  const b = new FrameBuilder('s');
  assert.throws(() => b.delta('x') && b.start('m'), FrameError);
  assert.throws(() => new FrameBuilder('s').delta(''), FrameError);
  assert.throws(() => new FrameBuilder('s').done('tool_use'), /unknown stopReason 'tool_use'/);
});

test('error frames and rejections carry code, message and retryable', () => {
  const err = new StreamError(ErrorCode.THROTTLED, 'The model is busy.');
  const f = new FrameBuilder('s', 4).error(err);
  assert.deepEqual(f.error, { code: 'THROTTLED', message: 'The model is busy.', retryable: true });
  validateFrame(f);
  const r = rejection(new StreamError(ErrorCode.INTERNAL, 'x'), 's');
  assert.deepEqual(r, { v: 1, type: 'error', error: { code: 'INTERNAL', message: 'x', retryable: false }, streamId: 's' });
  validateFrame(r);
  assert.equal(new StreamError(ErrorCode.FORBIDDEN, 'no').httpStatus, 403);
});

test('encode is compact UTF-8 JSON and enforces a byte limit', () => {
  const frame = { v: 1, streamId: 's', seq: 1, type: 'delta', text: 'é🚀' };
  assert.equal(encode(frame), '{"v":1,"streamId":"s","seq":1,"type":"delta","text":"é🚀"}');
  assert.throws(() => encode(frame, 10), /transport limit is 10/);
  assert.equal(maxTextChars(32 * 1024), Math.floor((32 * 1024 - 256) / 6));
});

test('SSE: id, event and one data line per frame; heartbeats are comments', () => {
  const frame = { v: 1, streamId: 's', seq: 7, type: 'delta', text: 'two\nlines\r\nand \u2028 🚀' };
  const text = sseEvent(frame);
  assert.equal(text, `id: 7\nevent: delta\ndata: ${JSON.stringify(frame)}\n\n`);
  assert.equal(text.split('\n').length, 5, 'the JSON has no raw line break');
  const [ev] = parseSse(text);
  assert.equal(ev.id, '7');
  assert.equal(ev.event, 'delta');
  assert.deepEqual(JSON.parse(ev.data), frame);
  assert.equal(sseEvent({ v: 1, streamId: 's', type: 'heartbeat' }), ': heartbeat\n\n');
  assert.equal(HEARTBEAT, ': heartbeat\n\n');
  const rej = sseEvent(rejection(new StreamError(ErrorCode.INTERNAL, 'x'), 's'));
  assert.ok(rej.startsWith('event: error\n'), 'a frame without seq has no id line');
});

test('stored frame JSON is byte-identical to Python json.dumps(separators=(",", ":"))', () => {
  // Output of the Python line, copied: json.dumps({"v":1,"text":"é 漢字 🚀\n\x7f\u2028\"\\"}, separators=(",", ":"))
  const python = String.raw`{"v":1,"text":"\u00e9 \u6f22\u5b57 \ud83d\ude80\n\u007f\u2028\"\\"}`;
  assert.equal(asciiJson({ v: 1, text: 'é 漢字 🚀\n\x7f\u2028"\\' }), python);
  assert.deepEqual(JSON.parse(python), { v: 1, text: 'é 漢字 🚀\n\x7f\u2028"\\' });
});
