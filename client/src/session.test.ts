import { describe, expect, it } from 'vitest';

import type { AppConfig } from './config';
import { FORM_KEY, inputChars, loadForm, saveForm, type FormState } from './formStore';
import { isLocalDeployment, isUnauthorized, mayBeAuthFailure, sessionEndedMessage } from './session';
import { errorFromBody } from './transports/rest';

const base = { cognito: { userPoolId: 'p', userPoolClientId: 'c', endpoint: '' } } as AppConfig;

describe('session', () => {
  it('says "local cloud" only when /config says the deployment is local', () => {
    const local = { ...base, cognito: { ...base.cognito, endpoint: 'http://127.0.0.1:4512' } };
    expect(isLocalDeployment(local)).toBe(true);
    expect(isLocalDeployment(base)).toBe(false);
    expect(isLocalDeployment({ ...local, deployment: 'aws' } as AppConfig)).toBe(false);
    expect(isLocalDeployment({ ...base, deployment: 'local' } as AppConfig)).toBe(true);
    expect(sessionEndedMessage(local)).toMatch(/local cloud was restarted/);
    expect(sessionEndedMessage(base)).toBe('Your session is no longer valid. Sign in again.');
  });

  it('treats a refused token on any transport as worth a check, and only REST 401 as proof', () => {
    expect(mayBeAuthFailure('UNAUTHORIZED', 'Unauthorized')).toBe(true);
    expect(mayBeAuthFailure('CONNECTION_FAILED', 'close code 1006')).toBe(true);
    expect(mayBeAuthFailure('GRAPHQL_ERROR', 'Connection failed: UnauthorizedException')).toBe(true);
    expect(mayBeAuthFailure('TOO_MANY_STREAMS', 'At most 3 streams')).toBe(false);
    expect(mayBeAuthFailure('MODEL_ERROR', 'The model failed')).toBe(false);
    expect(isUnauthorized(errorFromBody(401, { message: 'Unauthorized' }))).toBe(true);
    expect(isUnauthorized(errorFromBody(403, { message: 'Forbidden' }))).toBe(false);
    expect(isUnauthorized(new Error('Failed to fetch'))).toBe(false);
  });
});

class MemoryStorage {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
}

describe('formStore', () => {
  const defaults: FormState = {
    prompt: 'default',
    system: '',
    maxTokens: '512',
    temperature: '',
    conversation: false,
    rounds: '10',
    history: {},
  };

  it('brings back the prompt, options and conversation after a reload', () => {
    const storage = new MemoryStorage() as unknown as Storage;
    const form: FormState = {
      ...defaults,
      prompt: 'My own prompt',
      temperature: '0.3',
      conversation: true,
      history: { websocket: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] },
    };
    saveForm(form, storage);
    expect(loadForm(defaults, storage)).toEqual(form);
  });

  it('falls back to the defaults for anything missing or malformed', () => {
    const storage = new MemoryStorage() as unknown as Storage;
    expect(loadForm(defaults, storage)).toEqual(defaults);
    storage.setItem(FORM_KEY, JSON.stringify({ prompt: 5, history: { appsync: [{ role: 'x', content: 1 }] } }));
    expect(loadForm(defaults, storage)).toEqual(defaults);
    storage.setItem(FORM_KEY, '{oops');
    expect(loadForm(defaults, storage)).toEqual(defaults);
  });

  it('counts input characters as the server does (code points)', () => {
    expect(inputChars(['😀é', undefined, 'ab'])).toBe(4);
    expect(inputChars(['x'.repeat(32_001)])).toBe(32_001);
  });
});
