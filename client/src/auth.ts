/**
 * Sign-in with Amplify Auth (user-password flow). Tokens live in Amplify's store;
 * `idToken()` returns a valid ID token, refreshed by Amplify when it is about to expire,
 * and a timer refreshes it ahead of expiry so long-lived connections always have a
 * fresh one to reconnect with.
 */

import { Amplify } from 'aws-amplify';
import {
  fetchAuthSession,
  getCurrentUser,
  signIn as amplifySignIn,
  signOut as amplifySignOut,
} from 'aws-amplify/auth';
import { Hub } from 'aws-amplify/utils';

import type { AppConfig } from './config';

// Refresh this long before the ID token expires (Amplify itself waits until 5 s before).
const REFRESH_AHEAD_MS = 120_000;
const MIN_REFRESH_DELAY_MS = 5_000;

export function configureAmplify(config: AppConfig): void {
  Amplify.configure({
    Auth: {
      Cognito: {
        userPoolId: config.cognito.userPoolId,
        userPoolClientId: config.cognito.userPoolClientId,
        // Empty on AWS (Cognito's regional endpoint); the local Cognito otherwise.
        ...(config.cognito.endpoint ? { userPoolEndpoint: config.cognito.endpoint } : {}),
      },
    },
    API: {
      GraphQL: {
        endpoint: config.endpoints.appsync.graphql,
        region: config.region,
        defaultAuthMode: 'userPool',
      },
    },
  });
}

export interface SignedInUser {
  username: string;
}

export class SignInError extends Error {
  override name = 'SignInError';
}

export async function currentUser(): Promise<SignedInUser | null> {
  try {
    const user = await getCurrentUser();
    // A stored session whose refresh fails counts as signed out.
    await idToken();
    return { username: user.username };
  } catch {
    return null;
  }
}

export async function signIn(username: string, password: string): Promise<SignedInUser> {
  let result;
  try {
    result = await amplifySignIn({
      username,
      password,
      options: { authFlowType: 'USER_PASSWORD_AUTH' },
    });
  } catch (err) {
    const e = err as { name?: string; message?: string };
    throw new SignInError(e.message || e.name || 'Sign-in failed.');
  }
  if (!result.isSignedIn) {
    // MFA, a new password or another challenge: this client has no UI for them.
    throw new SignInError(
      `Sign-in needs another step (${result.nextStep.signInStep}), which this client does not support.`,
    );
  }
  const user = await getCurrentUser();
  return { username: user.username };
}

export async function signOut(): Promise<void> {
  await amplifySignOut();
}

/** A valid ID token (Amplify refreshes it first when it is about to expire). */
export async function idToken(forceRefresh = false): Promise<string> {
  const session = await fetchAuthSession({ forceRefresh });
  const token = session.tokens?.idToken?.toString();
  if (!token) throw new SignInError('Not signed in.');
  return token;
}

/**
 * When to refresh a token with lifetime `exp - iat` (seconds) first seen at `seenAt`
 * (ms, local clock): `REFRESH_AHEAD_MS` before its end. Measured from when it was seen
 * rather than from `exp`, so a local clock that differs from the issuer's does not matter.
 */
export function refreshDelayMs(iat: number, exp: number, seenAt: number, at: number): number {
  const lifetimeMs = (exp - iat) * 1000;
  return Math.max(MIN_REFRESH_DELAY_MS, lifetimeMs - REFRESH_AHEAD_MS - (at - seenAt));
}

/** Keeps tokens fresh while signed in; calls `onExpired` if a refresh fails. Returns a stop function. */
export function keepTokensFresh(onExpired: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const seen = new Map<number, number>(); // iat -> when this client first saw that token
  const schedule = async (force: boolean) => {
    try {
      const session = await fetchAuthSession({ forceRefresh: force });
      const { iat, exp } = session.tokens?.idToken?.payload ?? {};
      if (stopped || typeof exp !== 'number' || typeof iat !== 'number') return;
      if (!seen.has(iat)) seen.set(iat, Date.now());
      timer = setTimeout(() => void schedule(true), refreshDelayMs(iat, exp, seen.get(iat)!, Date.now()));
    } catch {
      if (!stopped) onExpired();
    }
  };
  const unlisten = Hub.listen('auth', ({ payload }) => {
    if (payload.event === 'tokenRefresh_failure') onExpired();
  });
  void schedule(false);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    unlisten();
  };
}
