/**
 * The order of "Run N times": N rounds, each running every architecture once, one at a
 * time. Round r (0-based) starts with the architecture at index r mod n of the panel
 * order and goes on from there, wrapping around: with Function URL (F), WebSocket (W)
 * and AppSync (A), the rounds are F W A, W A F, A F W, F W A, ... so over every three
 * rounds each architecture runs first, second and third once: none is favoured by a
 * warm path left by the one before it or by going first.
 */

export interface PlannedRun<K> {
  /** 0-based round. */
  round: number;
  /** 0-based position within the round. */
  position: number;
  transport: K;
}

export const MAX_ROUNDS = 50;

export function roundOrder<K>(names: readonly K[], round: number): K[] {
  const n = names.length;
  if (n === 0) return [];
  const start = ((round % n) + n) % n;
  return [...names.slice(start), ...names.slice(0, start)];
}

/** Every run of `rounds` rounds, in the order they run. */
export function plan<K>(names: readonly K[], rounds: number): PlannedRun<K>[] {
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) {
    throw new RangeError(`The number of runs must be a whole number from 1 to ${MAX_ROUNDS}, got ${rounds}.`);
  }
  const out: PlannedRun<K>[] = [];
  for (let round = 0; round < rounds; round++) {
    roundOrder(names, round).forEach((transport, position) => out.push({ round, position, transport }));
  }
  return out;
}
