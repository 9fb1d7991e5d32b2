/**
 * The client's settings, all from `GET ./config` (docs/protocol.md): the REST API publishes
 * them, and the page's own origin routes `/config` to it (the local cloud's client host
 * proxies it; on AWS a CloudFront behaviour does). Nothing is baked into the bundle.
 */

export interface AppConfig {
  region: string;
  cognito: { userPoolId: string; userPoolClientId: string; endpoint: string };
  model: { id: string; label: string };
  endpoints: {
    rest: string;
    functionUrl: string;
    websocket: string;
    appsync: { graphql: string; realtime: string };
  };
  limits: {
    maxInputChars: number;
    maxTokens: number;
    defaultMaxTokens: number;
    maxStreamsPerUser: number;
    maxMessages: number;
  };
  flushIntervalMs: number;
  heartbeatIntervalS: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function need(value: unknown, path: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new ConfigError(`GET /config: ${path} is missing`);
  }
  return value;
}

/** Checks the fields the client cannot work without; names the first one missing. */
export function parseConfig(raw: unknown): AppConfig {
  const c = (raw ?? {}) as Partial<AppConfig>;
  need(c.cognito?.userPoolId, 'cognito.userPoolId');
  need(c.cognito?.userPoolClientId, 'cognito.userPoolClientId');
  need(c.endpoints?.rest, 'endpoints.rest');
  need(c.endpoints?.functionUrl, 'endpoints.functionUrl');
  need(c.endpoints?.websocket, 'endpoints.websocket');
  need(c.endpoints?.appsync?.graphql, 'endpoints.appsync.graphql');
  return c as AppConfig;
}

export async function loadConfig(fetchImpl: typeof fetch = fetch): Promise<AppConfig> {
  const resp = await fetchImpl('./config', { headers: { Accept: 'application/json' } });
  if (!resp.ok) throw new ConfigError(`GET /config answered ${resp.status}`);
  return parseConfig(await resp.json());
}

/** `base` + `path` with exactly one slash between them. */
export function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, '') + '/' + path.replace(/^\/+/, '');
}
