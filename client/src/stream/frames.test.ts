import { describe, expect, it } from 'vitest';

// The shared frame vectors, which the Python and Node validators run too.
import vectors from '../../../tests/vectors/frames.json';
import { charCount, FrameParseError, parseFrame } from './frames';

describe('frames.json (shared vectors)', () => {
  it.each(vectors.valid.map((c) => [c.name, c.frame] as const))('valid: %s', (_name, frame) => {
    expect(parseFrame(frame)).toEqual(frame);
    expect(parseFrame(JSON.stringify(frame))).toEqual(frame);
  });
  it.each(vectors.invalid.map((c) => [c.name, c.frame, c.error] as const))('invalid: %s', (_name, frame, error) => {
    expect(() => parseFrame(frame)).toThrow(FrameParseError);
    expect(() => parseFrame(frame)).toThrow(error);
  });
});

describe('parseFrame', () => {
  it('parses a JSON frame', () => {
    expect(parseFrame('{"v":1,"streamId":"s","seq":1,"type":"delta","text":"Hi"}')).toMatchObject({
      seq: 1,
      type: 'delta',
      text: 'Hi',
    });
  });

  it.each([
    ['not json', 'valid JSON'],
    ['[1]', 'JSON object'],
    ['{"v":1,"type":"fly"}', 'type must be one of'],
    ['{"v":1,"streamId":"s","type":"delta","seq":-1,"text":""}', 'seq must be'],
    ['{"v":1,"streamId":"s","type":"delta","seq":1}', 'delta.text'],
    ['{"v":1,"streamId":"s","type":"error","seq":1}', 'error.code'],
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
