/**
 * Structured JSON log lines (one object per line, CloudWatch-friendly).
 * Callers pass ids, codes and counts only: never tokens, passwords, prompts or
 * model text.
 */

/**
 * @typedef {(level: 'debug'|'info'|'warn'|'error', msg: string, fields?: Record<string, unknown>) => void} Logger
 */

/** @type {Logger} */
export function jsonLog(level, msg, fields = {}) {
  const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields });
  if (level === 'error' || level === 'warn') console.error(line);
  else console.log(line);
}

/** A logger that drops everything (tests). @type {Logger} */
export function silentLog() {}

/** A safe description of an unexpected error for logs: its class and code only. */
export function errorKind(/** @type {unknown} */ err) {
  if (err && typeof err === 'object') {
    const e = /** @type {{name?: unknown, code?: unknown}} */ (err);
    return { errorName: String(e.name ?? 'Error'), ...(typeof e.code === 'string' ? { errorCode: e.code } : {}) };
  }
  return { errorName: typeof err };
}
