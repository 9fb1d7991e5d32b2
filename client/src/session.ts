/**
 * When the session stops being valid under an open tab: a token from a user pool or a
 * signing key that no longer exists (the local cloud restarted, a pool was replaced) is
 * refused everywhere (REST 401, a WebSocket handshake refused, AppSync `connection_error`
 * Unauthorized). A failure that may mean that is confirmed with one REST call before
 * the user is sent back to sign-in.
 */

import type { AppConfig } from './config';
import { StreamRequestError } from './transports/types';

/** Failure codes and messages that a refused token produces on some transport. */
export function mayBeAuthFailure(code: string | undefined, message: string | undefined): boolean {
  if (code === 'UNAUTHORIZED' || code === 'CONNECTION_FAILED') return true;
  return /unauthori[sz]ed|\b401\b|not authorized/i.test(`${code ?? ''} ${message ?? ''}`);
}

/** True when an error is the REST API refusing the token itself. */
export function isUnauthorized(err: unknown): boolean {
  return err instanceof StreamRequestError && err.status === 401;
}

/** `/config` says the deployment is the local cloud: `deployment: "local"`, or a local Cognito endpoint. */
export function isLocalDeployment(config: AppConfig): boolean {
  const declared = (config as { deployment?: unknown }).deployment;
  if (typeof declared === 'string') return declared === 'local';
  return Boolean(config.cognito.endpoint);
}

export function sessionEndedMessage(config: AppConfig): string {
  return isLocalDeployment(config)
    ? 'The local cloud was restarted, so your session no longer exists there. Sign in again.'
    : 'Your session is no longer valid. Sign in again.';
}
