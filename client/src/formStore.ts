/**
 * The prompt, the options and each architecture's conversation survive a reload
 * (`localStorage`, this browser; the conversation until Clear conversation).
 */

import type { ChatMessage, TransportName } from './transports/types';

export interface FormState {
  prompt: string;
  system: string;
  maxTokens: string;
  temperature: string;
  conversation: boolean;
  rounds: string;
  history: Partial<Record<TransportName, ChatMessage[]>>;
}

export const FORM_KEY = 'llm-stream.form.v1';

function str(v: unknown, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}

function messages(v: unknown): ChatMessage[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const ok = v.filter(
    (m): m is ChatMessage =>
      (m?.role === 'user' || m?.role === 'assistant') && typeof m?.content === 'string',
  );
  return ok.length ? ok : undefined;
}

export function loadForm(defaults: FormState, storage: Storage = localStorage): FormState {
  let raw: Record<string, unknown> = {};
  try {
    const v: unknown = JSON.parse(storage.getItem(FORM_KEY) ?? '{}');
    if (v && typeof v === 'object' && !Array.isArray(v)) raw = v as Record<string, unknown>;
  } catch {
    // Unreadable: start from the defaults.
  }
  const history: FormState['history'] = {};
  const h = (raw.history ?? {}) as Record<string, unknown>;
  for (const [name, value] of Object.entries(h)) {
    const m = messages(value);
    if (m) history[name as TransportName] = m;
  }
  return {
    prompt: str(raw.prompt, defaults.prompt),
    system: str(raw.system, defaults.system),
    maxTokens: str(raw.maxTokens, defaults.maxTokens),
    temperature: str(raw.temperature, defaults.temperature),
    conversation: typeof raw.conversation === 'boolean' ? raw.conversation : defaults.conversation,
    rounds: str(raw.rounds, defaults.rounds),
    history,
  };
}

export function saveForm(form: FormState, storage: Storage = localStorage): void {
  try {
    storage.setItem(FORM_KEY, JSON.stringify(form));
  } catch {
    // Storage full or disabled: nothing survives a reload, everything else works.
  }
}

/** Characters the server counts against its input limit: system + prompt or every message. */
export function inputChars(parts: ReadonlyArray<string | undefined>): number {
  return parts.reduce((n, p) => n + (p ? Array.from(p).length : 0), 0);
}
