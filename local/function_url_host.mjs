// A local Lambda Function URL (auth NONE, InvokeMode RESPONSE_STREAM) for one Node.js handler.
//
//   node local/function_url_host.mjs --handler node_function/index.mjs [--export handler]
//        [--port 0] [--host 127.0.0.1] [--cors-origins 'https://a.example,https://b.example' | '*']
//        [--timeout-s 900] [--function-name NAME] [--memory-mb 128] [--exit-with-stdin]
//        [--cors-allow-methods GET,POST] [--cors-allow-headers authorization,content-type,last-event-id]
//        [--cors-max-age 600] [--invoke-port 0]
//
// Prints one line {"listening": "http://HOST:PORT/"} on stdout when ready (with
// "invoke": "http://HOST:PORT2/" when --invoke-port is given); logs JSON lines
// ({"time","level","event",...}) on stderr; stops on SIGTERM/SIGINT. Only Node's stdlib.
//
// What it reproduces, because the application depends on it (docs/local-cloud.md; Lambda never tells a streaming function that its client left):
// - `awslambda.streamifyResponse` / `awslambda.HttpResponseStream.from` as the Node runtime
//   defines them, installed before the handler module is imported;
// - every chunk the handler writes is written to the HTTP response at once (chunked);
// - the handler is NOT told when the client goes away: it runs on, later writes are dropped;
// - payload format 2.0 events; a context with getRemainingTimeInMillis();
// - 502 {"message":"Internal Server Error"} for a failure before the first byte, a cut
//   response after it; the function timeout; the 6 MB request limit; CORS done by the URL.
//
// With --invoke-port, a second listener is Lambda's InvokeWithResponseStream for the same
// function, as API Gateway's streaming integration calls it (local/rest_stream.py):
//   POST /2021-11-15/functions/{name}/response-streaming-invocations  body = the event
//        -> the prelude's status and headers (CORS headers kept: a REST proxy integration
//           passes them), the payload chunk by chunk as written; a failure before the
//           first byte is 502 with X-Amz-Function-Error: Unhandled, after it a cut.
//   GET  /_local/invocations -> {"functionUrl": n, "streaming": n} (invocations so far)

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

// Function URLs take at most 6 MB per request (the synchronous invocation payload limit).
const MAX_REQUEST_BYTES = 6 * 1024 * 1024;
// The Node runtime marks streaming handlers with these global symbols.
const HANDLER_STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const HANDLER_HIGHWATERMARK = Symbol.for("aws.lambda.runtime.handler.streaming.highWaterMark");
const STREAM_RESPONSE = "response";
const SET_PRELUDE = Symbol("setPrelude");
const INTERNAL_ERROR = JSON.stringify({ message: "Internal Server Error" });
const ACCOUNT_ID = "123456789012";
// Headers that describe the framing the host owns; a handler's value would break it.
const FRAMING_HEADERS = new Set(["content-length", "transfer-encoding", "connection", "keep-alive"]);
// Function URLs pass these request bodies as text; every other content type as base64.
const TEXT_TYPES = [
  /^text\//,
  /^application\/json$/,
  /^application\/[^;]*\+json$/,
  /^application\/javascript$/,
  /^application\/xml$/,
  /^application\/[^;]*\+xml$/,
];

function log(level, event, fields = {}) {
  // Pipes are written synchronously on Linux, so a line is never lost at exit.
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...fields })}\n`);
}

function fatal(event, message, fields = {}) {
  log("error", event, { message, ...fields });
  process.exit(1);
}

function errorFields(err) {
  if (err instanceof Error) {
    return { errorType: err.name, errorMessage: err.message, stack: (err.stack ?? "").split("\n") };
  }
  return { errorType: typeof err, errorMessage: String(err) };
}

// -- options ---------------------------------------------------------------------------

function readOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        handler: { type: "string" },
        export: { type: "string", default: "handler" },
        port: { type: "string", default: "0" },
        host: { type: "string", default: "127.0.0.1" },
        "cors-origins": { type: "string", default: "" },
        // Mirror the CDK stack's Function URL CORS config.
        "cors-allow-methods": { type: "string", default: "GET,POST" },
        "cors-allow-headers": { type: "string", default: "authorization,content-type,last-event-id" },
        "cors-max-age": { type: "string", default: "600" },
        "invoke-port": { type: "string", default: "" },
        "timeout-s": { type: "string", default: "900" },
        "function-name": {
          type: "string",
          default: process.env.AWS_LAMBDA_FUNCTION_NAME ?? "function-url-local",
        },
        "memory-mb": { type: "string", default: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ?? "128" },
        // The parent holds our stdin: when it dies without stopping us, we stop too.
        "exit-with-stdin": { type: "boolean", default: false },
      },
    }));
  } catch (err) {
    fatal("bad_arguments", err.message);
  }
  if (!values.handler) fatal("bad_arguments", "--handler <path to the handler module> is required");
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fatal("bad_arguments", `bad --port ${values.port}`);
  const invokePort = values["invoke-port"] === "" ? null : Number(values["invoke-port"]);
  if (invokePort !== null && (!Number.isInteger(invokePort) || invokePort < 0 || invokePort > 65535)) {
    fatal("bad_arguments", `bad --invoke-port ${values["invoke-port"]}`);
  }
  const timeoutS = Number(values["timeout-s"]);
  if (!(timeoutS > 0)) fatal("bad_arguments", `bad --timeout-s ${values["timeout-s"]}`);
  return {
    handlerPath: path.resolve(values.handler),
    exportName: values.export,
    port,
    invokePort,
    host: values.host,
    corsOrigins: values["cors-origins"].split(",").map((o) => o.trim()).filter(Boolean),
    corsAllowMethods: values["cors-allow-methods"],
    corsAllowHeaders: values["cors-allow-headers"],
    corsMaxAge: values["cors-max-age"],
    timeoutMs: Math.round(timeoutS * 1000),
    functionName: values["function-name"],
    memoryMb: values["memory-mb"],
    exitWithStdin: values["exit-with-stdin"],
  };
}

// -- the runtime's globals ---------------------------------------------------------------

class HttpResponseStream {
  // Like the runtime: the prelude goes out before the first write; the same stream is returned.
  static from(underlyingStream, prelude) {
    if (typeof underlyingStream?.[SET_PRELUDE] !== "function") {
      throw new TypeError("HttpResponseStream.from expects the responseStream the handler was given");
    }
    underlyingStream[SET_PRELUDE](prelude);
    return underlyingStream;
  }
}

function installGlobals() {
  globalThis.awslambda = {
    ...globalThis.awslambda,
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === "number") {
        handler[HANDLER_HIGHWATERMARK] = Math.trunc(options.highWaterMark);
      }
      return handler;
    },
    HttpResponseStream,
  };
}

// The runtime JSON-encodes anything that is not a string or bytes.
function asChunk(chunk) {
  if (typeof chunk === "string" || chunk instanceof Uint8Array) return chunk;
  return JSON.stringify(chunk);
}

// The `responseStream` a handler gets. It never errors or closes because of the client:
// Lambda does not tell the function that the client left.
class ResponseStream extends Writable {
  #invocation;
  #writeCalled = false;

  constructor(invocation, highWaterMark) {
    super(highWaterMark === undefined ? {} : { highWaterMark });
    this.#invocation = invocation;
  }

  setContentType(contentType) {
    if (this.#writeCalled) throw new Error("Cannot set content-type, too late.");
    this.#invocation.contentType = String(contentType);
  }

  [SET_PRELUDE](prelude) {
    // HttpResponseStream.from sets the content type too, so it fails the same way when late.
    if (this.#writeCalled) throw new Error("Cannot set content-type, too late.");
    this.#invocation.prelude = JSON.parse(JSON.stringify(prelude ?? {}));
  }

  write(chunk, encoding, callback) {
    this.#writeCalled = true;
    return super.write(asChunk(chunk), encoding, callback);
  }

  end(chunk, encoding, callback) {
    if (typeof chunk === "function") [chunk, encoding, callback] = [undefined, undefined, chunk];
    else if (typeof encoding === "function") [encoding, callback] = [undefined, encoding];
    if (!this.#writeCalled && !this.writableEnded && this.#invocation.prelude) {
      // The runtime sends the prelude from write() only: end(...) without a write() loses it
      // (aws/aws-lambda-nodejs-runtime-interface-client#97). Reproduced, so it shows up locally.
      this.#invocation.preludeLost = chunk == null ? "empty" : "data";
    }
    this.#writeCalled = true;
    this.#invocation.endCalled = true;
    return super.end(chunk == null ? undefined : asChunk(chunk), encoding, callback);
  }

  _write(chunk, _encoding, callback) {
    this.#invocation.send(chunk, callback);
  }

  _final(callback) {
    this.#invocation.finish();
    callback();
  }
}

// -- one invocation --------------------------------------------------------------------

class Invocation {
  constructor({ res, requestId, timeoutMs, corsHeaders, path: rawPath, streamingInvoke = false }) {
    this.res = res;
    // InvokeWithResponseStream (a REST API's streaming integration): the handler's CORS
    // headers are the response's, and a failure says so in X-Amz-Function-Error.
    this.streamingInvoke = streamingInvoke;
    this.requestId = requestId;
    this.corsHeaders = corsHeaders;
    this.path = rawPath;
    this.contentType = "application/octet-stream";
    this.prelude = null;
    this.preludeLost = null;
    this.status = null;
    this.headersSent = false;
    this.cut = false; // the host ended the response (failure or timeout)
    this.clientGone = false;
    this.endCalled = false; // end() was called; streamEnded: everything was flushed
    this.streamEnded = false;
    this.handlerSettled = false;
    this.reported = false;
    this.outcome = "ok";
    this.bytes = 0;
    this.droppedBytes = 0;
    this.pending = new Set();
    this.started = Date.now();
    this.deadline = this.started + timeoutMs;
    this.timer = setTimeout(() => this.timeout(timeoutMs), timeoutMs);
    res.on("error", (err) => log("debug", "response_error", { requestId, ...errorFields(err) }));
    res.on("close", () => {
      if (!res.writableFinished && !this.cut) {
        this.clientGone = true;
        log("info", "client_disconnected", { requestId, bytesSent: this.bytes });
      }
      // Writes waiting for the socket complete (as dropped) instead of hanging the handler.
      for (const done of [...this.pending]) done();
    });
  }

  get open() {
    return !this.cut && !this.clientGone && !this.res.destroyed;
  }

  send(chunk, callback) {
    if (!this.headersSent) {
      if (this.preludeLost === "data") {
        log("warn", "prelude_lost", {
          requestId: this.requestId,
          message:
            "end(data) after HttpResponseStream.from without a write(): on AWS the prelude is " +
            "lost and the Function URL answers 502. Call write(data), then end().",
        });
        this.abort("prelude_lost");
      } else {
        this.sendHead();
      }
    }
    if (!this.open) {
      this.droppedBytes += chunk.length;
      callback();
      return;
    }
    if (chunk.length === 0) {
      callback();
      return;
    }
    this.bytes += chunk.length;
    let called = false;
    const done = () => {
      if (called) return;
      called = true;
      this.pending.delete(done);
      callback(); // never an error: the handler must not learn about the client
    };
    this.pending.add(done);
    this.res.write(chunk, done);
  }

  responseHead() {
    let status = 200;
    const headers = {};
    const prelude = this.preludeLost ? null : this.prelude;
    if (prelude) {
      status = Number(prelude.statusCode ?? 200);
      const dropped = [];
      for (const [name, value] of Object.entries(prelude.headers ?? {})) {
        const lower = name.toLowerCase();
        if (lower.startsWith("access-control-") && !this.streamingInvoke) dropped.push(name);
        else if (!FRAMING_HEADERS.has(lower) && value != null) headers[lower] = String(value);
      }
      for (const [name, values] of Object.entries(prelude.multiValueHeaders ?? {})) {
        const lower = name.toLowerCase();
        if (this.streamingInvoke && Array.isArray(values) && !FRAMING_HEADERS.has(lower)) {
          headers[lower] = values.map(String);
        }
      }
      if (dropped.length) {
        // A Function URL with CORS config plus handler CORS headers sends them twice
        // (browsers refuse duplicated CORS headers); keep only the URL's.
        log("warn", "cors_header_dropped", {
          requestId: this.requestId,
          headers: dropped,
          message: "CORS headers belong to the Function URL's CORS config, not the handler",
        });
      }
      if (Array.isArray(prelude.cookies) && prelude.cookies.length) {
        headers["set-cookie"] = prelude.cookies.map(String);
      }
      headers["content-type"] ??= "application/octet-stream";
    } else {
      headers["content-type"] = this.contentType;
    }
    if (this.corsHeaders) {
      Object.assign(headers, this.corsHeaders);
      headers.vary = headers.vary ? `${headers.vary}, Origin` : "Origin";
    }
    headers["x-amzn-requestid"] = this.requestId;
    return { status, headers };
  }

  sendHead() {
    if (this.preludeLost === "empty") {
      log("warn", "prelude_lost", {
        requestId: this.requestId,
        message:
          "end() after HttpResponseStream.from without a write(): on AWS the status and " +
          "headers are ignored (200, no headers). Call write(...) before end().",
      });
    }
    const { status, headers } = this.responseHead();
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      log("error", "bad_status_code", { requestId: this.requestId, statusCode: this.prelude?.statusCode });
      this.abort("bad_status_code");
      return;
    }
    this.headersSent = true;
    this.status = status;
    if (!this.open) return;
    this.res.writeHead(status, headers);
    this.res.flushHeaders(); // the prelude goes out with the first write, not later
  }

  finish() {
    this.streamEnded = true;
    if (!this.headersSent) this.sendHead();
    if (this.open) this.res.end();
    this.maybeDone();
  }

  // Function URL's answer to a failed invocation: 502 before the first byte, else a cut.
  abort(outcome) {
    if (this.cut) return;
    this.outcome = outcome;
    if (!this.headersSent && !this.clientGone && !this.res.destroyed) {
      this.headersSent = true;
      this.status = 502;
      this.res.writeHead(502, {
        "content-type": "application/json",
        ...(this.corsHeaders ? { ...this.corsHeaders, vary: "Origin" } : {}),
        ...(this.streamingInvoke ? { "x-amz-function-error": "Unhandled" } : {}),
        "x-amzn-requestid": this.requestId,
      });
      this.res.end(INTERNAL_ERROR);
    } else {
      this.res.destroy();
    }
    this.cut = true;
  }

  handlerResolved(value) {
    this.handlerSettled = true;
    if (value !== undefined) {
      log("warn", "return_value_ignored", { requestId: this.requestId, message: "Streaming handlers ignore return values." });
    }
    if (!this.endCalled && !this.cut) {
      log("warn", "stream_not_ended", {
        requestId: this.requestId,
        message: "the handler resolved but did not end() the response stream; like Lambda, " +
          "the invocation stays open until end() or the timeout",
      });
    }
    this.maybeDone();
  }

  handlerFailed(err) {
    this.handlerSettled = true;
    if (this.reported) {
      log("info", "handler_failed_after_timeout", { requestId: this.requestId, ...errorFields(err) });
      return;
    }
    log("error", "handler_error", { requestId: this.requestId, ...errorFields(err) });
    this.abort("error");
    this.maybeDone();
  }

  timeout(timeoutMs) {
    if (this.reported) return;
    log("warn", "invoke_timeout", {
      requestId: this.requestId,
      message: `Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds`,
    });
    // Lambda would freeze the function here; in-process it runs on with its writes dropped.
    this.abort("timeout");
    this.report();
  }

  maybeDone() {
    if (this.reported) {
      if (this.handlerSettled) log("debug", "handler_settled_after_timeout", { requestId: this.requestId });
      return;
    }
    if (this.handlerSettled && (this.streamEnded || this.cut)) this.report();
  }

  report() {
    this.reported = true;
    clearTimeout(this.timer);
    log(this.outcome === "ok" ? "info" : "warn", "invoke_end", {
      requestId: this.requestId,
      path: this.path,
      status: this.status,
      outcome: this.outcome,
      durationMs: Date.now() - this.started,
      bytes: this.bytes,
      droppedBytes: this.droppedBytes,
      clientGone: this.clientGone,
    });
  }
}

// -- event and context ---------------------------------------------------------------

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function requestTime(date) {
  const p = (n) => String(n).padStart(2, "0");
  return (
    `${p(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/${date.getUTCFullYear()}:` +
    `${p(date.getUTCHours())}:${p(date.getUTCMinutes())}:${p(date.getUTCSeconds())} +0000`
  );
}

function isText(contentType) {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return TEXT_TYPES.some((re) => re.test(type));
}

function clientIp(req) {
  const ip = req.socket.remoteAddress ?? "";
  return ip.startsWith("::ffff:") ? ip.slice(7) : ip;
}

function makeEvent(req, body, requestId, now, urlId, region) {
  // Lower-case names, duplicates joined with "," (payload 2.0); cookies get their own field.
  const headers = {};
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    headers[name] = name in headers ? `${headers[name]},${raw[i + 1]}` : raw[i + 1];
  }
  const cookies = (headers.cookie ?? "").split(";").map((c) => c.trim()).filter(Boolean);
  delete headers.cookie;
  const sourceIp = clientIp(req);
  headers["x-forwarded-for"] = headers["x-forwarded-for"] ? `${headers["x-forwarded-for"]}, ${sourceIp}` : sourceIp;
  headers["x-forwarded-proto"] = "http";
  headers["x-forwarded-port"] = String(req.socket.localPort);
  headers["x-amzn-trace-id"] ??= `Root=1-${Math.floor(now.getTime() / 1000).toString(16)}-${randomBytes(12).toString("hex")}`;

  const target = req.url ?? "/";
  const q = target.indexOf("?");
  const rawPath = q === -1 ? target : target.slice(0, q);
  const rawQueryString = q === -1 ? "" : target.slice(q + 1);
  const event = {
    version: "2.0",
    routeKey: "$default",
    rawPath,
    rawQueryString,
  };
  // Absent, not empty, when there are none: as on AWS.
  if (cookies.length) event.cookies = cookies;
  event.headers = headers;
  if (rawQueryString) {
    const params = {};
    for (const [key, value] of new URLSearchParams(rawQueryString)) {
      params[key] = key in params ? `${params[key]},${value}` : value;
    }
    event.queryStringParameters = params;
  }
  event.requestContext = {
    accountId: "anonymous", // auth type NONE
    apiId: urlId,
    domainName: headers.host ?? `${urlId}.lambda-url.${region}.on.aws`,
    domainPrefix: urlId,
    http: {
      method: req.method,
      path: rawPath,
      protocol: `HTTP/${req.httpVersion}`,
      sourceIp,
      userAgent: headers["user-agent"] ?? "",
    },
    requestId,
    routeKey: "$default",
    stage: "$default",
    time: requestTime(now),
    timeEpoch: now.getTime(),
  };
  if (body.length) {
    const text = isText(headers["content-type"]);
    event.body = text ? body.toString("utf8") : body.toString("base64");
    event.isBase64Encoded = !text;
  } else {
    event.isBase64Encoded = false;
  }
  return event;
}

function makeContext(opts, requestId, deadline, region) {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: opts.functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:${region}:${ACCOUNT_ID}:function:${opts.functionName}`,
    memoryLimitInMB: opts.memoryMb,
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/${opts.functionName}`,
    logStreamName: `local/[$LATEST]${requestId.replaceAll("-", "")}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// -- HTTP ------------------------------------------------------------------------------

class TooLarge extends Error {}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      // Keep reading past the limit so the client can finish sending and read the 413.
      if (size <= MAX_REQUEST_BYTES) chunks.push(chunk);
    });
    req.on("end", () => (size > MAX_REQUEST_BYTES ? reject(new TooLarge(String(size))) : resolve(Buffer.concat(chunks))));
    req.on("error", reject);
    req.on("close", () => req.complete || reject(new Error("the client closed the request")));
  });
}

function plainResponse(res, status, body, requestId, corsHeaders) {
  res.writeHead(status, {
    "content-type": "application/json",
    ...(corsHeaders ? { ...corsHeaders, vary: "Origin" } : {}),
    "x-amzn-requestid": requestId,
  });
  res.end(body);
}

// Invocations so far, by way in (GET /_local/invocations on the invoke listener).
const counts = { functionUrl: 0, streaming: 0 };

async function invoke(handler, opts, region, event, { res, requestId, corsHeaders, path: rawPath, method, streamingInvoke = false }) {
  const invocation = new Invocation({ res, requestId, timeoutMs: opts.timeoutMs, corsHeaders, path: rawPath, streamingInvoke });
  const context = makeContext(opts, requestId, invocation.deadline, region);
  log("info", "invoke_start", { requestId, method, path: rawPath, ...(streamingInvoke ? { via: "invoke" } : {}) });
  const stream = new ResponseStream(invocation, handler[HANDLER_HIGHWATERMARK]);
  try {
    const result = handler(event, stream, context);
    if (typeof result?.then !== "function") throw new Error("Streaming does not support non-async handlers.");
    invocation.handlerResolved(await result);
  } catch (err) {
    invocation.handlerFailed(err);
  }
}

const INVOKE_PATH = /^\/2021-11-15\/functions\/([^/]+)\/response-streaming-invocations$/;

// Lambda's InvokeWithResponseStream for this one function (see the header comment).
function makeInvokeServer(opts, handler, region) {
  async function onRequest(req, res) {
    const requestId = randomUUID();
    const target = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && target === "/_local/invocations") {
      req.resume();
      plainResponse(res, 200, JSON.stringify(counts), requestId, null);
      return;
    }
    const match = req.method === "POST" ? target.match(INVOKE_PATH) : null;
    if (!match) {
      req.resume();
      plainResponse(res, 404, JSON.stringify({ Type: "User", message: `No route ${req.method} ${target}` }), requestId, null);
      return;
    }
    const name = decodeURIComponent(match[1]).split(":function:").pop().split(":")[0];
    if (name !== opts.functionName) {
      req.resume();
      const message = `Function not found: arn:aws:lambda:${region}:${ACCOUNT_ID}:function:${name}`;
      plainResponse(res, 404, JSON.stringify({ Type: "User", message }), requestId, null);
      return;
    }
    let event;
    try {
      event = JSON.parse((await readBody(req)).toString("utf8") || "{}");
    } catch (err) {
      if (!(err instanceof TooLarge) && !(err instanceof SyntaxError)) {
        log("info", "request_aborted", { requestId, ...errorFields(err) });
        return;
      }
      const type = err instanceof TooLarge ? "RequestTooLargeException" : "InvalidRequestContentException";
      plainResponse(res, err instanceof TooLarge ? 413 : 400, JSON.stringify({ Type: "User", message: type }), requestId, null);
      return;
    }
    counts.streaming += 1;
    const rawPath = typeof event?.path === "string" ? event.path : "";
    await invoke(handler, opts, region, event, {
      res,
      requestId,
      corsHeaders: null,
      path: rawPath,
      method: event?.httpMethod,
      streamingInvoke: true,
    });
  }

  return http.createServer({ noDelay: true }, (req, res) => {
    onRequest(req, res).catch((err) => {
      log("error", "host_error", errorFields(err));
      if (!res.headersSent) plainResponse(res, 500, INTERNAL_ERROR, "-", null);
      else res.destroy();
    });
  });
}

function makeServer(opts, handler, urlId, region) {
  const anyOrigin = opts.corsOrigins.includes("*");
  const allowed = (origin) => origin !== undefined && (anyOrigin || opts.corsOrigins.includes(origin));

  async function onRequest(req, res) {
    const requestId = randomUUID();
    const origin = req.headers.origin;
    const corsHeaders = allowed(origin) ? { "access-control-allow-origin": origin } : null;

    if (req.method === "OPTIONS" && origin !== undefined && req.headers["access-control-request-method"] !== undefined) {
      // A preflight is the URL's business: answered from the CORS config, no invocation.
      req.resume();
      const headers = { "x-amzn-requestid": requestId };
      if (corsHeaders) {
        Object.assign(headers, corsHeaders, {
          "access-control-allow-methods": opts.corsAllowMethods,
          "access-control-allow-headers": opts.corsAllowHeaders,
          "access-control-max-age": opts.corsMaxAge,
          vary: "Origin",
        });
      }
      res.writeHead(204, headers);
      res.end();
      log("info", "cors_preflight", { requestId, origin, allowed: corsHeaders !== null });
      return;
    }

    let body;
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof TooLarge) {
        log("warn", "request_too_large", { requestId, bytes: Number(err.message), limit: MAX_REQUEST_BYTES });
        plainResponse(res, 413, JSON.stringify({ message: "Request Entity Too Large" }), requestId, corsHeaders);
      } else {
        log("info", "request_aborted", { requestId, ...errorFields(err) });
      }
      return;
    }

    const now = new Date();
    const event = makeEvent(req, body, requestId, now, urlId, region);
    counts.functionUrl += 1;
    await invoke(handler, opts, region, event, { res, requestId, corsHeaders, path: event.rawPath, method: req.method });
  }

  return http.createServer({ noDelay: true }, (req, res) => {
    onRequest(req, res).catch((err) => {
      log("error", "host_error", errorFields(err));
      if (!res.headersSent) plainResponse(res, 500, INTERNAL_ERROR, "-", null);
      else res.destroy();
    });
  });
}

async function loadHandler(opts) {
  if (!fs.existsSync(opts.handlerPath)) fatal("handler_not_found", `no handler module at ${opts.handlerPath}`);
  let mod;
  try {
    mod = await import(pathToFileURL(opts.handlerPath).href);
  } catch (err) {
    fatal("handler_import_failed", `importing ${opts.handlerPath} failed: ${err?.message ?? err}`, errorFields(err));
  }
  const handler = mod[opts.exportName] ?? mod.default?.[opts.exportName];
  if (typeof handler !== "function") {
    fatal("handler_export_missing", `${opts.handlerPath} exports no function named "${opts.exportName}"`);
  }
  if (handler[HANDLER_STREAMING] !== STREAM_RESPONSE) {
    fatal(
      "handler_not_streaming",
      `"${opts.exportName}" is not wrapped in awslambda.streamifyResponse; this host serves ` +
        "Function URLs in RESPONSE_STREAM mode only",
    );
  }
  return handler;
}

async function main() {
  const opts = readOptions();
  const region = process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
  // Set by the Lambda runtime; some libraries read them.
  process.env.AWS_LAMBDA_FUNCTION_NAME ??= opts.functionName;
  process.env.AWS_LAMBDA_FUNCTION_VERSION ??= "$LATEST";
  process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ??= opts.memoryMb;
  // Keep serving after a handler's stray error; Lambda would restart the environment.
  process.on("unhandledRejection", (reason) => log("error", "unhandled_rejection", errorFields(reason)));
  process.on("uncaughtException", (err) => log("error", "uncaught_exception", errorFields(err)));

  installGlobals(); // before the import: handlers call awslambda.streamifyResponse at load
  const handler = await loadHandler(opts);
  const urlId = randomBytes(16).toString("hex"); // 32 characters, like a real url-id

  const server = makeServer(opts, handler, urlId, region);
  const invokeServer = opts.invokePort === null ? null : makeInvokeServer(opts, handler, region);
  let stopping = false;
  const stop = (reason) => {
    if (stopping) return;
    stopping = true;
    log("info", "stopping", { reason });
    server.close();
    server.closeAllConnections();
    invokeServer?.close();
    invokeServer?.closeAllConnections();
    process.exit(0);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  if (opts.exitWithStdin) {
    process.stdin.on("end", () => stop("stdin closed"));
    process.stdin.on("error", () => stop("stdin closed"));
    process.stdin.resume();
  }

  const listen = (srv, port) =>
    new Promise((resolve) => {
      srv.on("error", (err) => fatal("listen_failed", `cannot listen on ${opts.host}:${port}: ${err.message}`));
      srv.listen(port, opts.host, () => resolve(srv.address().port));
    });
  const host = ["", "0.0.0.0", "::"].includes(opts.host) ? "127.0.0.1" : opts.host;
  const urlOf = (port) => `http://${host.includes(":") ? `[${host}]` : host}:${port}/`;
  const invokeUrl = invokeServer === null ? null : urlOf(await listen(invokeServer, opts.invokePort));
  const url = urlOf(await listen(server, opts.port));
  log("info", "listening", {
    url,
    handler: opts.handlerPath,
    export: opts.exportName,
    corsOrigins: opts.corsOrigins,
    timeoutS: opts.timeoutMs / 1000,
    ...(invokeUrl ? { invoke: invokeUrl } : {}),
  });
  process.stdout.write(`${JSON.stringify({ listening: url, ...(invokeUrl ? { invoke: invokeUrl } : {}) })}\n`);
}

await main();
