import { describe, expect, it } from 'vitest';

import { charCount, FrameParseError, parseFrame } from './frames';

describe('parseFrame', () => {
  it('parses a JSON frame', () => {
    expect(parseFrame('{"v":1,"streamId":"s","seq":1,"type":"delta","text":"Hi"}')).toMatchObject({
      seq: 1,
      type: 'delta',
      text: 'Hi',
    });
  });

  it("parses a reasoning model's reasoning frame", () => {
    expect(parseFrame({ v: 1, streamId: 's', seq: 2, type: 'reasoning', text: 'Let me think.' })).toMatchObject({
      type: 'reasoning',
      text: 'Let me think.',
    });
  });

  it.each([
    ['not json', 'valid JSON'],
    ['[1]', 'JSON object'],
    ['{"type":"fly"}', 'unknown frame type'],
    ['{"type":"delta","seq":-1,"text":""}', 'seq must be'],
    ['{"type":"delta","seq":1}', 'text string'],
    ['{"type":"reasoning","seq":1}', 'a reasoning frame needs a text string'],
    ['{"type":"error","seq":1}', 'error.code'],
  ])('refuses %s, naming the problem', (raw, problem) => {
    expect(() => parseFrame(raw)).toThrow(FrameParseError);
    expect(() => parseFrame(raw)).toThrow(problem);
  });
});

describe('charCount', () => {
  it('counts code points, so an emoji is one character', () => {
    expect(charCount('café 🚀')).toBe(6);
    expect(charCount(undefined)).toBe(0);
  });
});
