/**
 * Server-sent events encoding of frames (docs/protocol.md, Function URL transport).
 *
 * Each frame is one event: ``id: <seq>`` (so a reconnecting EventSource sends
 * ``Last-Event-ID``), ``event: <type>`` and ``data: <compact JSON>``. Compact JSON
 * never contains a raw line break, so one data line always suffices. Heartbeats
 * are comment lines, which EventSource ignores but proxies count as traffic.
 */

import { encode } from './frames.mjs';

export const HEARTBEAT = ': heartbeat\n\n';

/** @param {import('./frames.mjs').Frame} frame */
export function sseEvent(frame) {
  if (frame.type === 'heartbeat') return HEARTBEAT;
  const id = typeof frame.seq === 'number' ? `id: ${frame.seq}\n` : '';
  return `${id}event: ${frame.type}\ndata: ${encode(frame)}\n\n`;
}
