/** The three transports, built from `GET /config`. */

import type { AppConfig } from '../config';
import { AppSyncTransport, type GraphqlApi } from './appsync';
import { FunctionUrlTransport } from './functionUrl';
import { RestApi, type TokenSource } from './rest';
import type { Transport, TransportName } from './types';
import { WebSocketTransport } from './websocket';

export interface TransportInfo {
  name: TransportName;
  title: string;
  path: string;
}

export const TRANSPORTS: readonly TransportInfo[] = [
  { name: 'functionUrl', title: 'Function URL', path: 'Lambda response stream → SSE' },
  { name: 'websocket', title: 'WebSocket', path: 'API Gateway WebSocket → @connections' },
  { name: 'appsync', title: 'AppSync + SQS', path: 'SQS worker → AppSync subscription' },
];

export function buildTransports(
  config: AppConfig,
  token: TokenSource,
  graphql: GraphqlApi,
): { rest: RestApi; transports: Record<TransportName, Transport> } {
  const rest = new RestApi(config.endpoints.rest, token);
  return {
    rest,
    transports: {
      functionUrl: new FunctionUrlTransport(config.endpoints.functionUrl, token, rest),
      websocket: new WebSocketTransport(config.endpoints.websocket, token, rest),
      appsync: new AppSyncTransport(graphql, token),
    },
  };
}

/** A random (version 4) UUID; works outside secure contexts too. */
export function uuid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
