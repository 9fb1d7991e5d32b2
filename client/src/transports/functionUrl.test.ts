import { afterEach, describe, expect, it, vi } from 'vitest';

import { FunctionUrlTransport } from './functionUrl';
import { RestApi } from './rest';

const URL_ = 'http://127.0.0.1:4516/';

function transport(token: () => Promise<string> = async () => 'id-token') {
  return new FunctionUrlTransport(URL_, token, new RestApi('http://rest.invalid/', token, vi.fn()));
}

describe('FunctionUrlTransport.acceptsToken', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('asks to resume a stream that cannot exist, with the token', async () => {
    const fetchMock = vi.fn(async () => new Response('{"error":{"code":"NOT_FOUND"}}', { status: 404 }));
    vi.stubGlobal('fetch', fetchMock);
    expect(await transport().acceptsToken()).toBe(true);
    const [url, init] = fetchMock.mock.calls[0] as unknown as [URL, RequestInit];
    expect(url.searchParams.get('streamId')).toBe('00000000-0000-4000-8000-000000000000');
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer id-token');
  });

  it('is false on 401 or without a token, unknown without an answer', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('{"error":{"code":"UNAUTHORIZED"}}', { status: 401 })));
    expect(await transport().acceptsToken()).toBe(false);
    expect(
      await transport(async () => {
        throw new Error('Not signed in.');
      }).acceptsToken(),
    ).toBe(false);
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))));
    expect(await transport().acceptsToken()).toBeUndefined();
  });
});

describe('RestApi.running', () => {
  it("lists the user's running streams and keeps the HTTP status of a refusal", async () => {
    const calls: string[] = [];
    const ok = new RestApi('http://rest.invalid/api/', async () => 't', async (input) => {
      calls.push(String(input));
      return new Response(
        JSON.stringify({ streams: [{ streamId: 'a', status: 'running', transport: 'websocket', createdAt: 5 }, { bad: 1 }] }),
      );
    });
    expect(await ok.running()).toEqual([{ streamId: 'a', status: 'running', transport: 'websocket', createdAt: 5 }]);
    expect(calls).toEqual(['http://rest.invalid/api/streams?status=running']);
    const refused = new RestApi('http://rest.invalid/', async () => 't', async () =>
      new Response('{"message":"Unauthorized"}', { status: 401 }),
    );
    await expect(refused.running()).rejects.toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
  });
});
