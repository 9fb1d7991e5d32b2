/**
 * The protocol's shared values (error codes with HTTP status and retryability, stop
 * reasons, limits, the settings schema, the default model id), read from protocol.json:
 * a byte-identical copy of chalicelib/protocol.json, so Python, Node and the client
 * share one source (tests/unit/test_protocol_data.py checks the copies).
 */

import { readFileSync } from 'node:fs';

/** @type {any} */
export const PROTOCOL = Object.freeze(JSON.parse(readFileSync(new URL('./protocol.json', import.meta.url), 'utf8')));

/** @type {Readonly<Record<string, {status: number, retryable: boolean}>>} */
export const ERRORS = PROTOCOL.errors;
/** @type {Readonly<Record<string, number>>} */
export const LIMITS = PROTOCOL.limits;
/** @type {ReadonlyArray<{env: string, python: string, node?: string, type: string, default?: any, min?: number, max?: number, choices?: string[], required?: boolean, group?: string}>} */
export const SETTINGS = PROTOCOL.settings;
/** Written once, as the MODEL_ID setting's default. @type {string} */
export const DEFAULT_MODEL_ID = SETTINGS.find((s) => s.env === 'MODEL_ID')?.default;
