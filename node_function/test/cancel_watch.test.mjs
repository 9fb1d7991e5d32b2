// CancelWatch with a claim: the semantics of chalicelib/store/cancel.py CancelWatch
// (tests/unit/test_appsync_flow.py, tests/unit/test_drain.py test the Python one the same way).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ClaimLost, CancelWatch } from '../src/store.mjs';

class Flags {
  constructor() {
    this.cancel = false;
    this.lost = false;
    this.reads = 0;
    this.renewals = [];
  }

  async isCancelRequested() {
    this.reads += 1;
    return this.cancel;
  }

  async renewClaim(id, workerId, leaseS) {
    this.renewals.push({ id, workerId, leaseS });
    if (this.lost) throw new ClaimLost(id);
    return this.cancel;
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('reads the flag at most once per interval', async () => {
  const flags = new Flags();
  let now = 0;
  const watch = new CancelWatch(flags, 's', 10, { now: () => now });
  watch.poke();
  watch.poke();
  await settle();
  assert.equal(flags.reads, 1);
  now = 10;
  watch.poke();
  await settle();
  assert.equal(flags.reads, 2);
});

test('a read becomes a renewal every third of the lease, and its answer carries the flag', async () => {
  const flags = new Flags();
  let now = 0;
  let cancels = 0;
  const watch = new CancelWatch(flags, 's', 10, { now: () => now, claim: { workerId: 'w1', leaseS: 30 }, onCancel: () => (cancels += 1) });
  now = 10_000; // a third of 30 s
  watch.poke();
  await settle();
  assert.deepEqual(flags.renewals, [{ id: 's', workerId: 'w1', leaseS: 30 }]);
  assert.equal(flags.reads, 0, 'the renewal replaced the read');
  now = 10_020;
  watch.poke();
  await settle();
  assert.equal(flags.reads, 1, 'not due again: a plain read');
  flags.cancel = true;
  now = 20_020;
  watch.poke();
  await settle();
  assert.equal(watch.cancelled, true);
  assert.equal(watch.claimLost, false);
  assert.equal(cancels, 1);
});

test('a lost claim is noticed at the next renewal and counts as a cancel', async () => {
  const flags = new Flags();
  let now = 0;
  let cancels = 0;
  const watch = new CancelWatch(flags, 's', 10, { now: () => now, claim: { workerId: 'w1', leaseS: 30 }, onCancel: () => (cancels += 1) });
  now = 10_000;
  assert.equal(watch.keepClaim(), true); // renewed
  await settle();
  assert.equal(watch.claimLost, false);
  flags.lost = true; // a reader took the producer for dead and ended the stream
  now = 20_000;
  watch.keepClaim();
  await settle();
  assert.equal(watch.claimLost, true);
  assert.equal(watch.cancelled, true);
  assert.equal(watch.keepClaim(), false);
  assert.equal(cancels, 1);
});

test('a failed read or renewal is not a cancel', async () => {
  const errors = [];
  const store = {
    isCancelRequested: async () => {
      throw new Error('throttled');
    },
    renewClaim: async () => {
      throw new Error('throttled');
    },
  };
  let now = 0;
  const watch = new CancelWatch(store, 's', 10, { now: () => now, claim: { workerId: 'w1', leaseS: 30 }, onError: (e) => errors.push(e) });
  watch.poke();
  await settle();
  now = 10_000;
  watch.poke();
  await settle();
  assert.equal(watch.cancelled, false);
  assert.equal(watch.claimLost, false);
  assert.equal(errors.length, 2);
});
