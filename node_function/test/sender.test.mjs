// The ordered, coalescing background sender.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { FlushPolicy } from '../src/flush.mjs';
import { FrameBuilder, validateFrame } from '../src/frames.mjs';
import { CLOSE, createSender, OrderedSender, PerTokenSender, SenderCore } from '../src/sender.mjs';
import { loadSettings, SettingsError } from '../src/settings.mjs';
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

// -- the per-token baseline (SENDER_MODE=per_token) -----------------------------------------

const senderVectors = JSON.parse(readFileSync(new URL('../../tests/vectors/sender.json', import.meta.url), 'utf8'));

describe('sender.json: perToken', () => {
  for (const c of senderVectors.perToken) {
    test(c.name, async () => {
      const r = recorder();
      const sender = new PerTokenSender(new FrameBuilder('s'), r.deliver, c.maxChars).start();
      for (const step of c.steps) {
        if ('text' in step) await sender.sendText(step.text);
        else await sender.sendFrame((b) => (step.frame === 'start' ? b.start('m') : b.done('end_turn')));
        // Resolved only once everything sent so far was delivered.
        assert.equal(r.frames.length, sender.framesSent);
      }
      await sender.close();
      assert.deepEqual(
        r.frames.map((f) => Object.fromEntries(['seq', 'type', 'text'].filter((k) => k in f).map((k) => [k, f[k]]))),
        c.frames,
      );
      for (const f of r.frames) validateFrame(f);
    });
  }
});

describe('sender.json: senderMode', () => {
  for (const c of senderVectors.senderMode) {
    test(c.name, () => {
      const pool = { USER_POOL_ID: 'us-east-1_TestPool', USER_POOL_CLIENT_ID: 'client-1' };
      const env = c.env === null ? pool : { ...pool, SENDER_MODE: c.env };
      if (c.error) assert.throws(() => loadSettings(env), (err) => err instanceof SettingsError && err.message.includes(c.error));
      else assert.equal(loadSettings(env).senderMode, c.mode);
    });
  }
});

test('per token: sendText resolves only after its frame was delivered', async () => {
  const slow = deferred();
  const r = recorder({ gate: () => slow.promise });
  const sender = new PerTokenSender(new FrameBuilder('s'), r.deliver, 100).start();
  let resolved = false;
  const sent = sender.sendText('one').then(() => {
    resolved = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(resolved, false, 'the producer waits on the slow delivery');
  slow.resolve();
  await sent;
  assert.deepEqual(r.frames.map((f) => f.text), ['one']);
  await sender.close();
});

test('per token: frames queued without waiting still leave in seq order', async () => {
  const r = recorder();
  const sender = new PerTokenSender(new FrameBuilder('s'), r.deliver, 100).start();
  sender.sendFrame((b) => b.start('m'));
  sender.sendText('a');
  sender.sendText('b');
  sender.sendFrame((b) => b.done('end_turn'));
  await sender.close();
  assert.deepEqual(r.frames.map((f) => [f.seq, f.text ?? f.type]), [
    [0, 'start'],
    [1, 'a'],
    [2, 'b'],
    [3, 'done'],
  ]);
});

test('per token: a heartbeat goes out after silence and carries no seq', async () => {
  const r = recorder();
  const sender = new PerTokenSender(new FrameBuilder('s'), r.deliver, 100, { heartbeatIntervalMs: 20 }).start();
  await sender.sendFrame((b) => b.start('m'));
  await r.until((frames) => frames.some((f) => f.type === 'heartbeat'));
  await sender.sendText('after');
  await sender.close();
  assert.deepEqual(r.frames.filter((f) => f.type !== 'heartbeat').map((f) => f.seq), [0, 1]);
  assert.deepEqual(r.frames.find((f) => f.type === 'heartbeat'), { v: 1, streamId: 's', type: 'heartbeat' });
  assert.ok(sender.heartbeatsSent >= 1);
});

test('per token: a failing delivery is recorded and the next frames still go out; closed refuses more', async () => {
  const failures = [];
  const r = recorder({
    gate: async (frame) => {
      if (frame.seq === 1) throw new Error('client gone');
    },
  });
  const sender = new PerTokenSender(new FrameBuilder('s'), r.deliver, 100, { onFailure: (f) => failures.push(f) }).start();
  await sender.sendFrame((b) => b.start('m'));
  await sender.sendText('lost');
  await sender.sendText('kept');
  await sender.sendFrame(() => {
    throw new Error('bad frame');
  });
  await sender.close();
  assert.deepEqual(r.frames.map((f) => f.seq), [0, 2]);
  assert.deepEqual(failures.map((f) => f.frame?.seq ?? null), [1, null]);
  assert.equal(sender.failure.error.message, 'client gone');
  assert.throws(() => sender.sendText('late'), /closed/);
});

test('createSender picks the sender of the mode; an unknown mode is an error', () => {
  const options = { intervalMs: 50, maxChars: 10 };
  assert.ok(createSender('coalesce', new FrameBuilder('s'), () => {}, options) instanceof OrderedSender);
  assert.ok(createSender('per_token', new FrameBuilder('s'), () => {}, options) instanceof PerTokenSender);
  assert.throws(() => createSender('batch', new FrameBuilder('s'), () => {}, options), /unknown sender mode "batch"/);
});

// -- the ordered sender's decision core (shared with chalicelib/sender.py) ---------------------

describe('sender.json: ordered', () => {
  const item = (d) => ('text' in d ? d.text : d.close ? CLOSE : { frame: d.frame }); // a control item
  const decision = (d) => (d.kind === 'delta' ? { delta: d.text } : d.kind === 'heartbeat' ? { heartbeat: true } : { frame: d.item.frame });
  for (const c of senderVectors.ordered) {
    test(c.name, () => {
      const core = new SenderCore(new FlushPolicy(c.intervalMs, c.maxChars), c.heartbeatMs, 0);
      for (const step of c.steps) {
        assert.deepEqual(core.step(step.items.map(item), step.t).map(decision), step.out, JSON.stringify(step));
        assert.equal(core.closed, step.closed ?? false);
        if (!core.closed) assert.ok(Math.abs(core.waitMs(step.t) - step.waitMs) < 1e-6, JSON.stringify(step));
      }
    });
  }
});
