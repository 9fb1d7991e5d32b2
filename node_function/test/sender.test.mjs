// The ordered, coalescing background sender.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FlushPolicy } from '../src/flush.mjs';
import { FrameBuilder } from '../src/frames.mjs';
import { OrderedSender } from '../src/sender.mjs';
import { deferred, Waitable } from '../testing/fakes.mjs';

function recorder({ gate } = {}) {
  const w = new Waitable();
  const frames = [];
  const deliver = async (frame) => {
    if (gate) await gate(frame);
    frames.push(frame);
    w.notify();
  };
  return { frames, deliver, until: (check) => w.until(() => check(frames)) };
}

test('frames leave in order with seq rising by one, text before the control frame after it', async () => {
  const r = recorder();
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(50, 100)).start();
  sender.sendFrame((b) => b.start('m'));
  sender.sendText('Hel');
  sender.sendText('lo');
  sender.sendFrame((b) => b.done('end_turn'));
  await sender.close();
  assert.deepEqual(
    r.frames.map((f) => [f.seq, f.type, f.text]),
    [
      [0, 'start', undefined],
      [1, 'delta', 'Hello'],
      [2, 'done', undefined],
    ],
  );
  assert.equal(sender.lastSeq, 2);
  assert.equal(sender.failures.length, 0);
});

test('text piling up during a slow delivery leaves as one frame', async () => {
  const slow = deferred();
  let first = true;
  const r = recorder({
    gate: async (frame) => {
      if (frame.type === 'delta' && first) {
        first = false;
        await slow.promise; // the store or the client is slow
      }
    },
  });
  // Interval 0: without the queue's coalescing every text would be its own frame.
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(0, 10_000)).start();
  sender.sendFrame((b) => b.start('m'));
  sender.sendText('first');
  await r.until((frames) => frames.length === 1); // start delivered; 'first' is now blocked
  const tokens = Array.from({ length: 200 }, (_, i) => ` t${i}`);
  for (const t of tokens) sender.sendText(t); // never waits on the blocked delivery
  slow.resolve();
  sender.sendFrame((b) => b.done('end_turn'));
  await sender.close();
  assert.deepEqual(
    r.frames.map((f) => f.text ?? f.type),
    ['start', 'first', tokens.join(''), 'done'],
  );
});

test('within the flush interval text is held, then sent together', async () => {
  const r = recorder();
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(50, 100)).start();
  sender.sendText('A');
  await r.until((frames) => frames.length === 1);
  sender.sendText('B');
  sender.sendText('C');
  await r.until((frames) => frames.length === 2);
  await sender.close();
  assert.deepEqual(r.frames.map((f) => f.text), ['A', 'BC']);
});

test('a failing delivery is recorded and the next frames still go out', async () => {
  const failures = [];
  const r = recorder({
    gate: async (frame) => {
      if (frame.seq === 1) throw new Error('client gone');
    },
  });
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(0, 100), {
    onFailure: (f) => failures.push(f),
  }).start();
  sender.sendFrame((b) => b.start('m'));
  sender.sendText('lost');
  await r.until((frames) => frames.length === 1);
  sender.sendText('kept');
  sender.sendFrame((b) => b.done('end_turn'));
  await sender.close();
  assert.deepEqual(r.frames.map((f) => f.seq), [0, 2, 3]);
  assert.equal(failures.length, 1);
  assert.equal(failures[0].frame.seq, 1);
  assert.equal(sender.failure.error.message, 'client gone');
});

test('a heartbeat goes out after the heartbeat interval of silence', async () => {
  const r = recorder();
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(50, 100), {
    heartbeatIntervalMs: 20,
  }).start();
  sender.sendFrame((b) => b.start('m'));
  await r.until((frames) => frames.some((f) => f.type === 'heartbeat'));
  await sender.close();
  const hb = r.frames.find((f) => f.type === 'heartbeat');
  assert.deepEqual(hb, { v: 1, streamId: 's', type: 'heartbeat' });
  assert.ok(sender.heartbeatsSent >= 1);
});

test('close delivers everything queued and refuses more', async () => {
  const r = recorder();
  const sender = new OrderedSender(new FrameBuilder('s'), r.deliver, new FlushPolicy(10_000, 100));
  sender.start();
  sender.sendText('a');
  sender.sendText('b');
  await sender.close();
  assert.deepEqual(r.frames.map((f) => f.text), ['ab']);
  assert.throws(() => sender.sendText('c'), /closed/);
});
