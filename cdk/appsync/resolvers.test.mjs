// The APPSYNC_JS resolvers of cdk/appsync/, run under Node with a fake '@aws-appsync/utils'
// (`node --test cdk/appsync/`). Each file is loaded as it is deployed, except that its import of
// '@aws-appsync/utils' is pointed at the fake; util.error and util.unauthorized end the
// resolver, as in AppSync, by throwing.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const HERE = new URL('./', import.meta.url);
const UTILS_IMPORT = /^import \{([^}]*)\} from '@aws-appsync\/utils';$/m;

class ResolverError extends Error {
  constructor(message, errorType, data, errorInfo) {
    super(message);
    Object.assign(this, { errorType, data, errorInfo });
  }
}

// Records what a resolver did; fresh per test.
function fakeUtils() {
  const calls = { filters: [], transformed: [] };
  const util = {
    error(message, errorType, data, errorInfo) {
      throw new ResolverError(message, errorType, data, errorInfo);
    },
    unauthorized() {
      throw new ResolverError('Unauthorized', 'Unauthorized');
    },
    transform: {
      // AppSync's shape: one filter group whose filters are ANDed.
      toSubscriptionFilter(spec) {
        calls.transformed.push(spec);
        const filters = Object.entries(spec).flatMap(([fieldName, ops]) =>
          Object.entries(ops).map(([operator, value]) => ({ fieldName, operator, value })),
        );
        return { filterGroup: [{ filters }] };
      },
    },
  };
  const extensions = {
    setSubscriptionFilter(filter) {
      calls.filters.push(filter);
    },
  };
  return { util, extensions, calls };
}

let loads = 0;
async function load(file) {
  const source = readFileSync(new URL(file, HERE), 'utf8');
  const fakes = fakeUtils();
  const key = `__appsyncUtils${(loads += 1)}`;
  globalThis[key] = fakes;
  const match = source.match(UTILS_IMPORT);
  const code = match
    ? source.replace(UTILS_IMPORT, `const {${match[1]}} = globalThis.${key};`)
    : source;
  const module = await import(`data:text/javascript,${encodeURIComponent(code)}`);
  return { module, calls: fakes.calls };
}

function identity(tokenUse, sub = 'user-sub-1') {
  return { sub, username: 'alice', claims: { sub, token_use: tokenUse } };
}

// -- the deployable code stays within APPSYNC_JS -----------------------------------------------

const FILES = ['stream_operation.js', 'publish_frames.js', 'on_stream_frame.js'];

for (const file of FILES) {
  test(`${file} uses only what the APPSYNC_JS runtime supports`, () => {
    const source = readFileSync(new URL(file, HERE), 'utf8');
    const code = source
      .replace(/\/\/.*$/gm, '')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`/g, "''");
    const imports = [...code.matchAll(/^\s*import\b.*?from\s+''/gms)];
    assert.ok(imports.length <= 1, 'at most the one import of @aws-appsync/utils');
    if (imports.length) assert.match(source, UTILS_IMPORT);
    // Unsupported statements and operators (AppSync rejects the code at deploy time).
    for (const pattern of [
      /\b(try|catch|finally|throw|while|do|continue|class|async|await)\b/,
      /\+\+|--/,
      /\bfor\s*\([^)]*;/,
    ]) {
      assert.doesNotMatch(code, pattern, `${file}: ${pattern}`);
    }
    assert.match(code, /export function request\(ctx\)/);
    assert.match(code, /export function response\(ctx\)/);
  });
}

// -- stream_operation.js: the Lambda data source of startStream, cancelStream, streamFrames ----

test('stream_operation invokes the resolver function with field, arguments and identity', async () => {
  const { module } = await load('stream_operation.js');
  const cases = [
    ['startStream', { input: { streamId: 's-1', prompt: 'hi', maxTokens: 10 } }],
    ['cancelStream', { streamId: 's-1' }],
    ['streamFrames', { streamId: 's-1', afterSeq: -1 }],
  ];
  for (const [fieldName, args] of cases) {
    const request = module.request({ args, identity: identity('id'), info: { fieldName } });
    assert.deepEqual(request, {
      operation: 'Invoke',
      payload: {
        field: fieldName,
        arguments: args,
        identity: { sub: 'user-sub-1', tokenUse: 'id' },
      },
    });
  }
});

test('stream_operation passes an access token on for the function to refuse', async () => {
  const { module } = await load('stream_operation.js');
  const request = module.request({
    args: { streamId: 's-1' },
    identity: identity('access'),
    info: { fieldName: 'cancelStream' },
  });
  assert.deepEqual(request.payload.identity, { sub: 'user-sub-1', tokenUse: 'access' });
});

test("stream_operation returns the function's data", async () => {
  const { module } = await load('stream_operation.js');
  const data = { streamId: 's-1', status: 'running', created: true };
  assert.deepEqual(module.response({ result: { data } }), data);
});

test("stream_operation turns the function's error into a GraphQL error of that code", async () => {
  const { module } = await load('stream_operation.js');
  const error = { code: 'TOO_MANY_STREAMS', message: 'At most 3 running streams.', retryable: true };
  assert.throws(
    () => module.response({ result: { error } }),
    (err) => {
      assert.equal(err.message, 'At most 3 running streams.');
      assert.equal(err.errorType, 'TOO_MANY_STREAMS');
      assert.equal(err.data, null);
      assert.deepEqual(err.errorInfo, { retryable: true });
      return true;
    },
  );
});

test('stream_operation hides a failed invocation behind INTERNAL', async () => {
  const { module } = await load('stream_operation.js');
  const ctx = {
    error: { message: 'Task timed out after 10.00 seconds arn:aws:lambda:...', type: 'Lambda:Unhandled' },
    result: null,
  };
  assert.throws(
    () => module.response(ctx),
    (err) => {
      assert.equal(err.errorType, 'INTERNAL');
      assert.equal(err.message, 'Internal error.');
      assert.doesNotMatch(err.message, /arn:|timed out/);
      return true;
    },
  );
});

// -- publish_frames.js: NONE data source, the worker's publish ---------------------------------

test('publish_frames returns its arguments as the published FrameBatch', async () => {
  const { module } = await load('publish_frames.js');
  const args = {
    streamId: 's-1',
    owner: 'user-sub-1',
    frames: [{ v: 1, streamId: 's-1', seq: 1, type: 'delta', text: 'Hello' }],
  };
  const request = module.request({ args, identity: { accountId: '123456789012' } });
  assert.deepEqual(request, { payload: args });
  // The NONE data source hands the payload back as the result.
  assert.deepEqual(module.response({ args, result: request.payload }), args);
});

// -- on_stream_frame.js: the subscription, bound to its owner ----------------------------------

test('on_stream_frame filters on the caller as owner and the requested stream', async () => {
  const { module, calls } = await load('on_stream_frame.js');
  const ctx = { args: { streamId: 's-1' }, identity: identity('id', 'user-sub-1') };
  assert.deepEqual(module.request(ctx), { payload: null });
  assert.equal(module.response(ctx), null);
  assert.deepEqual(calls.transformed, [
    { owner: { eq: 'user-sub-1' }, streamId: { eq: 's-1' } },
  ]);
  assert.deepEqual(calls.filters, [
    {
      filterGroup: [
        {
          filters: [
            { fieldName: 'owner', operator: 'eq', value: 'user-sub-1' },
            { fieldName: 'streamId', operator: 'eq', value: 's-1' },
          ],
        },
      ],
    },
  ]);
});

test("on_stream_frame's owner comes from the token, never from the arguments", async () => {
  const { module, calls } = await load('on_stream_frame.js');
  const ctx = {
    args: { streamId: 's-1', owner: 'someone-else' },
    identity: identity('id', 'user-sub-2'),
  };
  module.response(ctx);
  assert.deepEqual(calls.transformed[0].owner, { eq: 'user-sub-2' });
});

test('on_stream_frame refuses access tokens and sets no filter', async () => {
  const { module, calls } = await load('on_stream_frame.js');
  const ctx = { args: { streamId: 's-1' }, identity: identity('access') };
  assert.throws(() => module.response(ctx), (err) => err.errorType === 'Unauthorized');
  assert.deepEqual(calls.filters, []);
});
