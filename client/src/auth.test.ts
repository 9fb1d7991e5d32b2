import { describe, expect, it } from 'vitest';

import { refreshDelayMs } from './auth';

describe('refreshDelayMs', () => {
  it('refreshes two minutes before the end of a fresh token', () => {
    expect(refreshDelayMs(1000, 1000 + 3600, 50_000, 50_000)).toBe(3_480_000);
  });

  it('counts the time since the token was first seen, whatever the local clock says', () => {
    // The local clock is an hour ahead of the issuer: only the lifetime and age matter.
    const seenAt = (1000 + 3600) * 1000 + 10_000;
    expect(refreshDelayMs(1000, 1000 + 3600, seenAt, seenAt + 60_000)).toBe(3_420_000);
  });

  it('never schedules sooner than five seconds', () => {
    expect(refreshDelayMs(0, 300, 0, 10_000_000)).toBe(5_000);
  });
});
