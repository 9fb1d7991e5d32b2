// The shared Bedrock vectors (tests/vectors/bedrock.json), which the Python suite runs too.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { classifyError, mapStopReason } from '../src/bedrock.mjs';

const VECTORS = JSON.parse(readFileSync(new URL('../../tests/vectors/bedrock.json', import.meta.url), 'utf8'));

/** The error as the JS SDK (or Node's networking) raises it, and whether it came in-stream. */
function exception(c) {
  if (c.where === 'http' || c.where === 'stream') {
    const err = new Error('x');
    err.name = c.code; // modelled service exceptions: PascalCase names, $fault and $metadata
    Object.assign(err, { $fault: 'server', $metadata: { httpStatusCode: 400 } });
    return [err, c.where === 'stream'];
  }
  if (c.where === 'timeout') return [Object.assign(new Error('timed out'), { name: 'TimeoutError' }), false];
  if (c.where === 'unreachable') return [Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), false];
  return [new Error('something else'), false];
}

describe('bedrock.json: errors', () => {
  for (const c of VECTORS.errors) {
    test(c.name, () => {
      const [error, retryBeforeText] = classifyError(...exception(c));
      assert.deepEqual(error.toJSON(), { code: c.expect.code, message: c.expect.message, retryable: c.expect.retryable });
      assert.equal(retryBeforeText, c.expect.retryBeforeText);
    });
  }
});

describe('bedrock.json: stop reasons', () => {
  for (const c of VECTORS.stopReasons) {
    test(String(c.raw), () => assert.equal(mapStopReason(c.raw ?? undefined), c.stopReason));
  }
});
