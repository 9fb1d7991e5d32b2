import { describe, expect, it } from 'vitest';

import { SseParser, type SseItem } from './sse';

const STREAM =
  'id: 0\nevent: start\ndata: {"seq":0}\n\n' +
  ': heartbeat\n\n' +
  'id: 1\nevent: delta\ndata: {"seq":1,"text":"café 🚀"}\n\n';

function feed(parser: SseParser, chunks: string[]): SseItem[] {
  return chunks.flatMap((c) => parser.push(c));
}

describe('SseParser', () => {
  it('parses events with id, event and data, and reports comments', () => {
    expect(feed(new SseParser(), [STREAM])).toEqual([
      { kind: 'event', event: { id: '0', event: 'start', data: '{"seq":0}' } },
      { kind: 'comment', text: 'heartbeat' },
      { kind: 'event', event: { id: '1', event: 'delta', data: '{"seq":1,"text":"café 🚀"}' } },
    ]);
  });

  it('gives the same events however the stream is split into chunks', () => {
    const whole = feed(new SseParser(), [STREAM]);
    for (let size = 1; size < 12; size++) {
      const chunks: string[] = [];
      for (let i = 0; i < STREAM.length; i += size) chunks.push(STREAM.slice(i, i + size));
      expect(feed(new SseParser(), chunks)).toEqual(whole);
    }
  });

  it('accepts CRLF and CR line endings, even with CRLF split across chunks', () => {
    const crlf = STREAM.replaceAll('\n', '\r\n');
    const cr = STREAM.replaceAll('\n', '\r');
    const whole = feed(new SseParser(), [STREAM]);
    expect(feed(new SseParser(), [crlf])).toEqual(whole);
    expect(feed(new SseParser(), [cr.slice(0, 10), cr.slice(10)])).toEqual(whole);
    const at = crlf.indexOf('\r\n');
    expect(feed(new SseParser(), [crlf.slice(0, at + 1), crlf.slice(at + 1)])).toEqual(whole);
  });

  it('joins multi-line data with newlines and strips one leading space only', () => {
    expect(feed(new SseParser(), ['data:a\ndata:  b\n\n'])).toEqual([
      { kind: 'event', event: { event: 'message', data: 'a\n b' } },
    ]);
  });

  it('skips a leading byte-order mark and ignores unknown fields and events without data', () => {
    expect(feed(new SseParser(), ['\ufeffretry: 10\nfoo: x\n\nevent: x\n\ndata: y\n\n'])).toEqual([
      { kind: 'event', event: { event: 'message', data: 'y' } },
    ]);
  });

  it('discards an unterminated event at the end of the stream', () => {
    const p = new SseParser();
    expect(p.push('data: half')).toEqual([]);
    p.end();
    expect(p.push('\n\n')).toEqual([]);
  });
});
