"""The REST API's streaming routes (architecture 4), as API Gateway serves them.

On AWS these are methods of the project's REST API whose AWS_PROXY integration has
response transfer mode STREAM (cdk/stacks/rest_stream.py). Chalice's local server
buffers every response, so locally they get their own listener::

    POST /streams                      start a stream  (body: the start request)
    GET  /streams/{stream_id}/events   follow / resume (Last-Event-ID or ?afterSeq=)
    OPTIONS on both                    CORS preflight (API Gateway's mock integration)
    anything else                      403 {"message":"Missing Authentication Token"}

Each request goes as on API Gateway:

1. the payload limit (10 MB): 413 ``{"message":"Request Too Long"}``;
2. the TOKEN authorizer (the app's ``jwt_auth``, invoked through the local Lambdas):
   no ``Authorization`` header is 401 without invoking it; its "Unauthorized" failure
   401 ``{"message":"Unauthorized"}``; a Deny (or a policy not covering the method) 403
   ``{"message":"User is not authorized to access this resource..."}``; any other
   failure 500. In all of these the streaming function is NOT invoked;
3. the integration: a REST proxy event (v1, the authorizer's context in
   ``requestContext.authorizer``) sent to the Node function through the local host's
   InvokeWithResponseStream (``local/function_url_host.mjs``), and its response relayed
   chunk by chunk as it is written: the prelude's status and headers, then the body.
   A function failure before the first byte is 502 ``{"message": "Internal server
   error"}``, after it a cut connection.

Limits (:class:`RestStreamLimits`, shortened by tests): the integration timeout (15 min
for streaming; 504 before the first byte, a cut after it) and the idle timeout (no byte
for 5 min on a REGIONAL endpoint, 30 s on an edge-optimized one: the connection is cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from chalice.local import ARNMatcher

from local.http_service import Served

log = logging.getLogger("local.rest_stream")

ACCOUNT_ID = "123456789012"
API_ID = "reststream"
STAGE = "api"
ALLOW_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID")
# Hop-by-hop and framing headers: this server frames its own response.
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))
_UNAUTHORIZED = {"message": "Unauthorized"}
_DENIED_EXPLICIT = {
    "message": "User is not authorized to access this resource with an explicit deny"
}
_DENIED = {"message": "User is not authorized to access this resource"}


@dataclass(frozen=True)
class RestStreamLimits:
    """API Gateway's limits on a streaming REST method (REGIONAL endpoint)."""

    integration_timeout_s: float = 900.0
    idle_timeout_s: float = 300.0
    max_request_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RestStreamLimits:
        """``LOCAL_REST_STREAM_<FIELD>`` (e.g. ``LOCAL_REST_STREAM_IDLE_TIMEOUT_S``)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"LOCAL_REST_STREAM_{f.name.upper()}"
            raw = env.get(name)
            if raw:
                try:
                    values[f.name] = type(f.default)(raw)
                except ValueError:
                    raise SystemExit(f"{name} must be a number, got {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class _Route:
    method: str
    resource: str
    path_parameters: dict[str, str] | None


def _route(method: str, path: str) -> _Route | None:
    parts = path.strip("/").split("/")
    if method == "POST" and parts == ["streams"]:
        return _Route(method, "/streams", None)
    if method == "GET" and len(parts) == 3 and parts[0] == "streams" and parts[2] == "events":
        return _Route(method, "/streams/{stream_id}/events", {"stream_id": parts[1]})
    return None


def _known_resource(path: str) -> bool:
    return _route("POST", path) is not None or _route("GET", path) is not None


def _json(status: int, body: Any, request_id: str, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": request_id}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


class RestStreamApi:
    """The streaming routes of the local REST API (see the module docstring)."""

    def __init__(
        self,
        lambdas: Any,
        function_host: Any,
        *,
        authorizer: str = "jwt_auth",
        region: str = "us-east-1",
        limits: RestStreamLimits | None = None,
        cors_allow_origin: str = "*",
    ) -> None:
        self._lambdas = lambdas
        self._host = function_host
        self._authorizer = authorizer
        self._region = region
        self.limits = limits or RestStreamLimits()
        self._cors = cors_allow_origin if cors_allow_origin != "none" else None
        self._served = Served("REST streaming API")
        self._session: aiohttp.ClientSession | None = None
        self._app = web.Application(client_max_size=self.limits.max_request_bytes + 1)
        self._app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        """The start URL (``POST``); follows are ``{url}/{stream_id}/events``."""
        return f"{self._served.endpoint}streams"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        return await self._served.start(self._app, host, port)

    async def stop(self) -> None:
        await self._served.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- a request ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        path = request.path
        if request.method == "OPTIONS" and _known_resource(path):
            return self._preflight(request_id)
        route = _route(request.method, path)
        if route is None:
            return _json(
                403,
                {"message": "Missing Authentication Token"},
                request_id,
                "MissingAuthenticationTokenException",
            )
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self.limits.max_request_bytes:
                break
        if len(body) > self.limits.max_request_bytes:
            log.info("request too large", extra={"requestId": request_id, "bytes": len(body)})
            return _json(413, {"message": "Request Too Long"}, request_id)

        method_arn = (
            f"arn:aws:execute-api:{self._region}:{ACCOUNT_ID}:{API_ID}/{STAGE}/{route.method}{path}"
        )
        decision = await self._authorize(request, method_arn, request_id)
        if isinstance(decision, web.Response):
            return self._with_cors(decision)
        event = self._event(request, route, bytes(body), request_id, decision)
        return await self._integrate(request, event, request_id)

    def _preflight(self, request_id: str) -> web.Response:
        headers = {"x-amzn-RequestId": request_id}
        if self._cors:
            headers.update(
                {
                    "Access-Control-Allow-Origin": self._cors,
                    "Access-Control-Allow-Methods": "GET,POST,OPTIONS",
                    "Access-Control-Allow-Headers": ",".join(ALLOW_HEADERS),
                    "Access-Control-Max-Age": "600",
                }
            )
        return web.Response(status=200, headers=headers)

    def _with_cors(self, response: web.Response) -> web.Response:
        # The stack's gateway responses carry CORS too, so a browser can read a 401.
        if self._cors:
            response.headers["Access-Control-Allow-Origin"] = self._cors
        return response

    async def _authorize(
        self, request: web.Request, method_arn: str, request_id: str
    ) -> dict[str, Any] | web.Response:
        """The authorizer's context, or the gateway's refusal."""
        token = request.headers.get("Authorization", "")
        if not token.strip():
            # The identity source is missing: API Gateway refuses without invoking.
            log.info("refused: no identity source", extra={"requestId": request_id})
            return _json(401, _UNAUTHORIZED, request_id, "UnauthorizedException")
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        try:
            answer = await self._lambdas.run(self._authorizer, event, timeout=10.0)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                log.info("refused by the authorizer", extra={"requestId": request_id})
                return _json(401, _UNAUTHORIZED, request_id, "UnauthorizedException")
            log.warning(
                "the authorizer failed",
                extra={"requestId": request_id, "errorType": type(exc).__name__},
            )
            return _json(500, {"message": None}, request_id, "AuthorizerConfigurationException")
        statements = (answer or {}).get("policyDocument", {}).get("Statement", [])
        matcher = ARNMatcher(method_arn)

        def covered(effect: str) -> bool:
            for statement in statements:
                if statement.get("Effect") != effect:
                    continue
                resources = statement.get("Resource", [])
                if matcher.does_any_resource_match(
                    [resources] if isinstance(resources, str) else list(resources)
                ):
                    return True
            return False

        if covered("Deny"):
            return _json(403, _DENIED_EXPLICIT, request_id, "AccessDeniedException")
        if not covered("Allow"):
            return _json(403, _DENIED, request_id, "AccessDeniedException")
        context = {str(k): v for k, v in (answer.get("context") or {}).items()}
        return {"principalId": answer.get("principalId"), **context, "integrationLatency": 0}

    def _event(
        self,
        request: web.Request,
        route: _Route,
        body: bytes,
        request_id: str,
        authorizer: dict[str, Any],
    ) -> dict[str, Any]:
        """The REST proxy event (v1) API Gateway sends a Lambda proxy integration."""
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            multi_headers.setdefault(name, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            multi_query.setdefault(name, []).append(value)
        now = datetime.now(UTC)
        peer = request.remote or ""
        return {
            "resource": route.resource,
            "path": request.path,
            "httpMethod": route.method,
            "headers": {k: v[-1] for k, v in multi_headers.items()},
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": route.path_parameters,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": route.resource,
                "httpMethod": route.method,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{STAGE}{request.path}",
                "accountId": ACCOUNT_ID,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "stage": STAGE,
                "domainPrefix": API_ID,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {"sourceIp": peer, "userAgent": request.headers.get("User-Agent")},
                "domainName": request.host,
                "apiId": API_ID,
                "authorizer": authorizer,
            },
            "body": body.decode("utf-8", errors="replace") if body else None,
            "isBase64Encoded": False,
        }

    async def _integrate(
        self, request: web.Request, event: dict[str, Any], request_id: str
    ) -> web.StreamResponse:
        """Invoke the function with response streaming and relay what it writes."""
        assert self._session is not None
        started = time.monotonic()
        deadline = started + self.limits.integration_timeout_s
        invoke = (
            f"{self._host.invoke_url}2021-11-15/functions/{self._host.function_name}"
            "/response-streaming-invocations"
        )
        fields_ = {"requestId": request_id, "route": f"{event['httpMethod']} {event['resource']}"}
        upstream: aiohttp.ClientResponse | None = None
        try:
            try:
                upstream = await asyncio.wait_for(
                    self._session.post(invoke, data=json.dumps(event).encode()),
                    timeout=max(0.0, deadline - time.monotonic()),
                )
            except TimeoutError:
                log.warning("integration timeout before the first byte", extra=fields_)
                return _json(504, {"message": "Endpoint request timed out"}, request_id)
            except aiohttp.ClientError as exc:
                error = {**fields_, "errorType": type(exc).__name__}
                log.warning("integration failed", extra=error)
                return _json(502, {"message": "Internal server error"}, request_id)
            if upstream.headers.get("X-Amz-Function-Error"):
                await upstream.read()
                log.warning("the function failed before the first byte", extra=fields_)
                return _json(502, {"message": "Internal server error"}, request_id)
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _FRAMING and name.lower() != "x-amzn-requestid":
                    response.headers.add(name, value)
            response.headers["x-amzn-RequestId"] = request_id
            await response.prepare(request)
            outcome = await self._relay(upstream, response, deadline)
            log.info(
                "integration ended",
                extra={
                    **fields_,
                    "status": upstream.status,
                    "outcome": outcome,
                    "durationMs": round((time.monotonic() - started) * 1000),
                },
            )
            if outcome != "ok":
                # API Gateway closes the connection: the client sees a cut stream.
                if request.transport is not None:
                    request.transport.close()
                return response
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
            return response
        finally:
            if upstream is not None:
                upstream.release()

    async def _relay(
        self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, deadline: float
    ) -> str:
        idle = self.limits.idle_timeout_s
        while True:
            wait = min(idle, deadline - time.monotonic())
            if wait <= 0:
                return "integration_timeout"
            try:
                chunk = await asyncio.wait_for(upstream.content.readany(), timeout=wait)
            except TimeoutError:
                return "integration_timeout" if time.monotonic() >= deadline else "idle_timeout"
            except aiohttp.ClientError:
                return "function_cut"
            if not chunk:
                return "ok" if upstream.content.is_eof() else "function_cut"
            try:
                await response.write(chunk)
            except ConnectionError:
                return "client_gone"
