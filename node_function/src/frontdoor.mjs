/**
 * The two front doors of the streaming function (docs/architecture.md):
 *
 * - the Function URL (payload format 2.0): ``POST /`` starts, ``GET /?streamId=``
 *   resumes; CORS is the URL's job, so the prelude carries none;
 * - API Gateway's REST API with response streaming (a REST proxy event, v1):
 *   ``POST /streams`` starts, ``GET /streams/{stream_id}/events`` resumes (with
 *   ``Last-Event-ID`` or ``?afterSeq=``). The gateway's authorizer has already run;
 *   its claims are in ``requestContext.authorizer``. A proxy integration adds no CORS
 *   headers, so the prelude carries ``Access-Control-Allow-Origin`` when configured.
 *
 * Each door turns its event into the same request view (payload 2.0's shape:
 * lower-case ``headers``, ``queryStringParameters``, ``body``, ``rawPath`` ``/`` for a
 * known route) so the handler behind it is one and the same.
 */

export const FUNCTION_URL_TRANSPORT = 'function_url';
export const REST_STREAM_TRANSPORT = 'rest_stream';

/**
 * @typedef {object} FrontDoor
 * @property {string} transport the stream record's ``transport``
 * @property {any} event the request in payload 2.0's shape
 * @property {string|null} gatewaySub the ``sub`` the gateway's authorizer vouched for, if any
 * @property {(prelude: {statusCode: number, headers: Record<string, string>}) => any} prelude
 */

/** Is this a REST API proxy event (v1) rather than a Function URL's payload 2.0? */
export function isRestProxyEvent(/** @type {any} */ event) {
  return typeof event?.httpMethod === 'string' && event?.requestContext?.http === undefined;
}

/**
 * The front door an event came through.
 * @param {any} event
 * @param {{corsAllowOrigin?: string}} [options] ``none`` (or empty): no CORS header
 * @returns {FrontDoor}
 */
export function frontDoor(event, options = {}) {
  if (!isRestProxyEvent(event)) {
    return { transport: FUNCTION_URL_TRANSPORT, event, gatewaySub: null, prelude: (p) => p };
  }
  const origin = options.corsAllowOrigin ?? 'none';
  const cors = origin && origin !== 'none' ? { 'Access-Control-Allow-Origin': origin } : {};
  const sub = event.requestContext?.authorizer?.sub ?? event.requestContext?.authorizer?.claims?.sub;
  return {
    transport: REST_STREAM_TRANSPORT,
    event: restRequest(event),
    gatewaySub: typeof sub === 'string' && sub ? sub : null,
    prelude: (p) => ({ statusCode: p.statusCode, headers: { ...p.headers, ...cors } }),
  };
}

/** Header names lower-cased; repeated headers joined with "," (as payload 2.0 does). */
function lowerHeaders(/** @type {any} */ event) {
  /** @type {Record<string, string>} */
  const out = {};
  const multi = event.multiValueHeaders;
  if (multi && typeof multi === 'object') {
    for (const [name, values] of Object.entries(multi)) {
      if (Array.isArray(values) && values.length) out[name.toLowerCase()] = values.map(String).join(',');
    }
  }
  for (const [name, value] of Object.entries(event.headers ?? {})) {
    const lower = name.toLowerCase();
    if (value != null && out[lower] === undefined) out[lower] = String(value);
  }
  return out;
}

/** The last value of each query parameter (what ``queryStringParameters`` holds). */
function queryOf(/** @type {any} */ event) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [name, value] of Object.entries(event.queryStringParameters ?? {})) {
    if (value != null) out[name] = String(value);
  }
  return out;
}

const EVENTS_PATH = /^\/streams\/([^/]+)\/events\/?$/;

/** The path of the resource, without a stage prefix (``event.path`` may carry one). */
function resourcePath(/** @type {any} */ event) {
  if (typeof event.resource === 'string' && event.resource.startsWith('/')) {
    if (event.resource === '/streams') return '/streams';
    if (event.resource === '/streams/{stream_id}/events') {
      const id = event.pathParameters?.stream_id;
      return typeof id === 'string' ? `/streams/${encodeURIComponent(id)}/events` : '/streams/{stream_id}/events';
    }
  }
  return typeof event.path === 'string' ? event.path : '';
}

/** A REST proxy event as the request view: a known route maps to ``/``. */
function restRequest(/** @type {any} */ event) {
  const method = String(event.httpMethod).toUpperCase();
  const headers = lowerHeaders(event);
  const query = queryOf(event);
  const path = resourcePath(event).replace(/\/+$/, '') || '/';
  let rawPath = path;
  if (method === 'POST' && path === '/streams') {
    rawPath = '/';
  } else if (method === 'GET' && EVENTS_PATH.test(path)) {
    rawPath = '/';
    const match = /** @type {RegExpMatchArray} */ (path.match(EVENTS_PATH));
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = match[1]; // not valid percent-encoding: the stream id check refuses it
    }
    query.streamId = id;
    // The REST API's reads say ``afterSeq``; the handler's query name is ``lastEventId``
    // (the header still wins over both).
    if (query.afterSeq !== undefined) query.lastEventId = query.afterSeq;
    else delete query.lastEventId;
  }
  return {
    version: '2.0',
    rawPath,
    rawQueryString: new URLSearchParams(query).toString(),
    queryStringParameters: Object.keys(query).length ? query : undefined,
    headers,
    requestContext: {
      http: { method, path, sourceIp: event.requestContext?.identity?.sourceIp ?? '' },
      requestId: event.requestContext?.requestId,
    },
    body: event.body ?? undefined,
    isBase64Encoded: Boolean(event.isBase64Encoded),
  };
}
