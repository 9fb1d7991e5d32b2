import { describe, expect, it } from 'vitest';

import { isLoopbackHttp, rewriteLoopbackWss } from './loopbackWebSocket';

describe('the loopback WebSocket shim', () => {
  it('switches on only for a plain-HTTP loopback AppSync endpoint', () => {
    expect(isLoopbackHttp('http://127.0.0.1:4517/graphql')).toBe(true);
    expect(isLoopbackHttp('http://localhost:4517/graphql')).toBe(true);
    expect(isLoopbackHttp('https://abc.appsync-api.us-east-1.amazonaws.com/graphql')).toBe(false);
    expect(isLoopbackHttp('https://127.0.0.1:4517/graphql')).toBe(false);
    expect(isLoopbackHttp('not a url')).toBe(false);
  });

  it('rewrites wss:// to ws:// for loopback hosts and leaves other hosts alone', () => {
    expect(rewriteLoopbackWss('wss://127.0.0.1:4517/graphql/realtime?x=1')).toBe(
      'ws://127.0.0.1:4517/graphql/realtime?x=1',
    );
    expect(rewriteLoopbackWss('wss://localhost/graphql/realtime')).toBe('ws://localhost/graphql/realtime');
    const aws = 'wss://abc.appsync-realtime-api.us-east-1.amazonaws.com/graphql';
    expect(rewriteLoopbackWss(aws)).toBe(aws);
    expect(rewriteLoopbackWss('wss://127.0.0.1.example.com/graphql')).toBe('wss://127.0.0.1.example.com/graphql');
  });
});
