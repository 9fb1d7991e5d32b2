"""A local API Gateway WebSocket API: real sockets in, API Gateway events out.

Faithful to what the app depends on (docs/security.md, docs/protocol.md, docs/local-cloud.md):

- **Handshake.** A Lambda REQUEST authorizer (``authorizer``) runs first, with
  API Gateway's event. ``raise Exception("Unauthorized")`` refuses the upgrade
  with HTTP 401, an explicit Deny with 403, and anything else (another
  exception, a malformed policy, a timeout) with 500, as API Gateway does for
  authorizer errors. The policy's ``context`` and ``principalId`` become
  ``requestContext.authorizer`` of every event of the connection. Then
  ``$connect`` runs; a non-2xx ``statusCode`` refuses the upgrade with that
  status, and its ``Sec-WebSocket-Protocol`` header selects the subprotocol.
- **Messages.** Every client message becomes a ``$default`` event handled in a
  worker thread; messages run concurrently, also on one connection. A handler
  exception sends the client ``{"message": "Internal server error", ...}``; one
  still running after ``integration_timeout_s`` sends ``{"message": "Endpoint
  request timed out", ...}`` (the handler keeps running). Client frames over
  ``frame_bytes`` or messages over ``message_bytes`` close the socket with 1009
  "Message too big".
- **Disconnect.** Client close, idle timeout, maximum duration, ``@connections``
  DELETE and :meth:`WebSocketGateway.stop` each run ``$disconnect`` exactly once,
  after the connection is gone (a post to it answers 410).
- **@connections** on the same port, as botocore's ``apigatewaymanagementapi``
  client calls it with ``endpoint_url=gateway.management_url``::

      POST   /{stage}/@connections/{id}   body = the message -> 200; 410 GoneException;
                                          413 PayloadTooLargeException over message_bytes
      GET    /{stage}/@connections/{id}   -> {"connectedAt", "lastActiveAt", "identity"}
      DELETE /{stage}/@connections/{id}   -> 204, closes the socket (code 1000)

  Posts larger than ``frame_bytes`` reach the client as a fragmented message.

Control routes (JSON), for tests and benchmarks::

    GET  /_gateway/health
    GET  /_gateway/faults
    POST /_gateway/faults       postLatencyMs: ms added before each POST is delivered, answered
                                limitExceeded: N   the next N POSTs answer 429
                                                   LimitExceededException
                                reset: true        clear both
    GET  /_gateway/connections  {"connections": [{connectionId, connectedAt, lastActiveAt,
                                  messagesIn, postsOut}]} (epoch seconds)

Known differences from API Gateway: identity sources and authorizer caching are
not modelled (the authorizer runs on every connect); a ``$connect`` handler that
raises or times out refuses the upgrade with 502 / 504; a ``$connect`` result
selecting a subprotocol the client did not offer refuses it with 500 (API
Gateway would send it and the client would fail the handshake); pings do not
count as activity; no custom route keys (Chalice has only ``$default``); close
codes and ``disconnectReason`` texts for idle/duration/stop are 1001 "Going away".

Logs never contain message bodies, header values or tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from local.http_service import ControlError, JsonClient, Served, apply_control
from local.lambdas import LocalLambdas

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
_ABNORMAL_CLOSURE = 1006
_TOO_BIG = "Message too big"  # API Gateway's close reason for 1009
_NO_STATUS = 1005


@dataclass(frozen=True)
class GatewayLimits:
    """API Gateway's WebSocket quotas (none adjustable on AWS); shorten them in tests."""

    frame_bytes: int = 32 * 1024
    message_bytes: int = 128 * 1024
    idle_timeout_s: float = 600.0
    max_connection_s: float = 7200.0
    integration_timeout_s: float = 29.0


@dataclass
class GatewayFaults:
    post_latency_ms: float = 0.0
    limit_exceeded: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"postLatencyMs": self.post_latency_ms, "limitExceeded": self.limit_exceeded}


# -- ids and time ----------------------------------------------------------------------------


def new_id() -> str:
    """A 12-character id ending in '=' (API Gateway's connection ids look like this)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(8)).decode("ascii")


def _request_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _iso(epoch_s: float) -> str:
    return (
        datetime.fromtimestamp(epoch_s, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


# -- frames (sans I/O) -------------------------------------------------------------------------

_DATA_OPCODES = frozenset({0x0, 0x1, 0x2})


def _header_size(header: bytes | bytearray) -> int:
    """Bytes a frame header needs, given its first bytes (at least 2)."""
    if len(header) < 2:
        return 2
    length_flag = header[1] & 0x7F
    extended = 2 if length_flag == 126 else 8 if length_flag == 127 else 0
    return 2 + extended + (4 if header[1] & 0x80 else 0)


class FrameSizeScanner:
    """Follows frame boundaries in a client byte stream and spots oversized data frames.

    aiohttp limits whole messages only; API Gateway also limits each frame.
    """

    def __init__(self, frame_limit: int) -> None:
        self.frame_limit = frame_limit
        self._header = bytearray()
        self._skip = 0  # payload bytes of the current frame still to pass

    def feed(self, data: bytes) -> bool:
        """Scan the next bytes; True as soon as a data frame over the limit starts."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            # The header's size is known only once its first two bytes are in.
            take = min(_header_size(self._header) - len(self._header), end - pos)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) < 2 or len(self._header) < _header_size(self._header):
                continue
            opcode, length = self._header[0] & 0x0F, self._header[1] & 0x7F
            if length == 126:
                length = struct.unpack_from("!H", self._header, 2)[0]
            elif length == 127:
                length = struct.unpack_from("!Q", self._header, 2)[0]
            self._header.clear()
            if opcode in _DATA_OPCODES and length > self.frame_limit:
                return True
            self._skip = length
        return False


def encode_frames(payload: bytes, opcode: int, frame_bytes: int) -> bytes:
    """A server-to-client message as unmasked frames of at most ``frame_bytes`` each."""
    chunks = [payload[i : i + frame_bytes] for i in range(0, len(payload), frame_bytes)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        first = (0x80 if i == len(chunks) - 1 else 0) | (opcode if i == 0 else 0x0)
        n = len(chunk)
        if n < 126:
            out += struct.pack("!BB", first, n)
        elif n < 65536:
            out += struct.pack("!BBH", first, 126, n)
        else:
            out += struct.pack("!BBQ", first, 127, n)
        out += chunk
    return bytes(out)


class _GuardedParser:
    """Sits in front of aiohttp's frame parser and enforces the frame limit."""

    def __init__(self, inner: Any, scanner: FrameSizeScanner, on_violation: Any) -> None:
        self._inner = inner
        self._scanner = scanner
        self._on_violation = on_violation
        self._tripped = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._tripped:
            return True, b""
        if self._scanner.feed(bytes(data)):
            self._tripped = True
            self._on_violation()
            return True, b""  # what aiohttp's parser returns after a protocol error
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _GatewaySocket(web.WebSocketResponse):
    """aiohttp's server socket plus API Gateway's per-frame limit.

    aiohttp enforces ``max_msg_size`` (1009) itself but knows no frame limit, so the
    parser it installs is wrapped. This reaches into two private attributes of
    aiohttp 3.14 (``_post_start``'s parser and the protocol's ``_payload_parser``).
    """

    def __init__(self, limits: GatewayLimits, protocols: tuple[str, ...] = ()) -> None:
        super().__init__(
            protocols=protocols,
            # aiohttp refuses a message of exactly max_msg_size; API Gateway accepts it.
            max_msg_size=limits.message_bytes + 1,
            compress=False,  # API Gateway does not negotiate permessage-deflate
            autoping=True,
            timeout=2.0,  # wait for the client's close reply at most this long
        )
        self._frame_limit = limits.frame_bytes

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        super()._post_start(request, protocol, writer)
        scanner = FrameSizeScanner(self._frame_limit)
        reader = self._reader

        def violation() -> None:
            assert reader is not None
            reader.set_exception(
                WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, "Frame exceeds the size limit")
            )

        request.protocol._payload_parser = _GuardedParser(self._parser, scanner, violation)

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        # aiohttp closes an oversized frame or message with 1009 and no reason; API
        # Gateway's close frame says why ("Message too big"), and clients show it.
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = _TOO_BIG.encode("utf-8")
        return await super().close(code=code, message=message, drain=drain)


class _DropOfferedProtocolsWarning(logging.Filter):
    """aiohttp warns with the client's subprotocol list, which carries a token here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Client protocols" not in str(record.msg)


_DROP_PROTOCOLS_WARNING = _DropOfferedProtocolsWarning()


# -- connections ------------------------------------------------------------------------------


@dataclass
class _Connection:
    id: str
    ws: _GatewaySocket
    transport: asyncio.Transport
    request_context: dict[str, Any]  # the parts every event of this connection shares
    source_ip: str
    user_agent: str
    connected_at: float
    connected_mono: float
    last_active_at: float
    last_active_mono: float
    subprotocol: str | None
    messages_in: int = 0
    posts_out: int = 0
    # Set when the gateway closes the socket: (close code, disconnectReason).
    closed_by_gateway: tuple[int, str] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_active_at = time.time()
        self.last_active_mono = time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {
            "connectionId": self.id,
            "connectedAt": self.connected_at,
            "lastActiveAt": self.last_active_at,
            "messagesIn": self.messages_in,
            "postsOut": self.posts_out,
            "subprotocol": self.subprotocol,
        }


class _Refused(Exception):
    """Ends a handshake with an HTTP status instead of 101."""

    def __init__(self, status: int, body: str | None = None, error_type: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.error_type = error_type

    def response(self) -> web.Response:
        headers = {"x-amzn-RequestId": new_id()}
        if self.error_type:
            headers["x-amzn-ErrorType"] = self.error_type
        return web.Response(
            status=self.status,
            text=self.body if self.body is not None else "",
            content_type="application/json",
            headers=headers,
        )


def _message(text: str) -> str:
    return json.dumps({"message": text})


def _mgmt_error(status: int, error_type: str, message: str) -> web.Response:
    # botocore's rest-json parser takes the error code from x-amzn-ErrorType.
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": new_id()},
    )


def _offered_protocols(request: web.Request) -> list[str]:
    values = request.headers.getall("Sec-WebSocket-Protocol", [])
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _headers(request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for raw_name, raw_value in request.raw_headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        single[name] = value  # the last one wins, as in API Gateway's ``headers``
        multi.setdefault(name, []).append(value)
    return single, multi


def _query(request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in request.query.items():
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def _resource_matches(pattern: str, arn: str) -> bool:
    # IAM wildcards: '*' any run of characters, '?' one character.
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, arn) is not None


def evaluate_policy(result: Any, method_arn: str) -> tuple[bool, dict[str, Any]]:
    """(allowed, requestContext.authorizer) for an authorizer's result.

    Raises ValueError for a result API Gateway would reject as malformed.
    """
    if not isinstance(result, Mapping) or not result.get("principalId"):
        raise ValueError("authorizer result needs a principalId")
    doc = result.get("policyDocument")
    statements = doc.get("Statement") if isinstance(doc, Mapping) else None
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise ValueError("authorizer result needs policyDocument.Statement")
    allowed = False
    for statement in statements:
        if not isinstance(statement, Mapping) or statement.get("Effect") not in ("Allow", "Deny"):
            raise ValueError("each statement needs an Effect of Allow or Deny")
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if not any(_resource_matches(str(r), method_arn) for r in resources):
            continue
        if statement["Effect"] == "Deny":
            return False, {}
        allowed = True
    context = result.get("context") or {}
    if not isinstance(context, Mapping) or not all(
        isinstance(v, str | int | float | bool) for v in context.values()
    ):
        raise ValueError("authorizer context values must be strings, numbers or booleans")
    return allowed, {**context, "principalId": result["principalId"]}


# -- the gateway -------------------------------------------------------------------------------


class WebSocketGateway:
    """One WebSocket API stage. Handlers are looked up at invoke time, so the gateway
    can start before the app's functions exist (unknown ones behave as failing)."""

    def __init__(
        self,
        lambdas: LocalLambdas,
        *,
        authorizer: str | None = "ws_authorize",
        connect: str | None = "ws_connect",
        message: str | None = "ws_message",
        disconnect: str | None = "ws_disconnect",
        stage: str = "api",
        api_id: str = "localws0001",
        region: str = "us-east-1",
        limits: GatewayLimits = GatewayLimits(),  # frozen, so one default is safe to share
    ) -> None:
        self.lambdas = lambdas
        self.authorizer = authorizer
        self.connect = connect
        self.message = message
        self.disconnect = disconnect
        self.stage = stage
        self.api_id = api_id
        self.region = region
        self.limits = limits
        self.faults = GatewayFaults()
        self._faults_lock = threading.Lock()
        self._connections: dict[str, _Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._served = Served("gateway")
        self._stopping = False

    # -- serving ---------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return self._served.endpoint

    @property
    def port(self) -> int:
        if self._served.port is None:
            raise RuntimeError("The gateway is not serving; start() it first.")
        return self._served.port

    @property
    def url(self) -> str:
        """What clients connect to: ``ws://host:port/``."""
        return "ws://" + self.http_url.removeprefix("http://")

    @property
    def management_url(self) -> str:
        """The ``@connections`` endpoint with the stage (boto3's ``endpoint_url``)."""
        return f"{self.http_url}{self.stage}"

    @property
    def control(self) -> GatewayControl:
        return GatewayControl(self.http_url)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the actual port."""
        logging.getLogger("aiohttp.websocket").addFilter(_DROP_PROTOCOLS_WARNING)
        actual_port = await self._served.start(self._create_app(), host, port, shutdown_timeout=1.0)
        self._stopping = False
        log.info("local WebSocket gateway listening on %s", self.url)
        return actual_port

    async def stop(self, timeout: float = 10.0) -> None:
        """Close every socket (1001) and run its ``$disconnect``, then stop serving."""
        if not self._served.serving:
            return
        self._stopping = True
        conns = list(self._connections.values())
        for conn in conns:
            await self._close(conn, WSCloseCode.GOING_AWAY, "Going away")
        if conns:
            await asyncio.wait(
                [asyncio.ensure_future(c.done.wait()) for c in conns], timeout=timeout
            )
        # Message dispatches still waiting on a handler (their threads run on).
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._served.stop()

    def _create_app(self) -> web.Application:
        # Large enough to read an oversized POST and answer 413 as API Gateway does.
        app = web.Application(client_max_size=max(4 * self.limits.message_bytes, 1 << 20))
        app.router.add_get("/", self._handle_upgrade)
        app.router.add_get(f"/{self.stage}", self._handle_upgrade)
        base = f"/{self.stage}/@connections/{{connection_id}}"
        app.router.add_post(base, self._handle_post)
        app.router.add_get(base, self._handle_get)
        app.router.add_delete(base, self._handle_delete)
        app.router.add_get("/_gateway/health", self._handle_health)
        app.router.add_get("/_gateway/faults", self._handle_get_faults)
        app.router.add_post("/_gateway/faults", self._handle_post_faults)
        app.router.add_get("/_gateway/connections", self._handle_connections)
        return app

    # -- invoking ----------------------------------------------------------------------------

    async def _invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Run a function in a worker thread, waiting at most the integration timeout.

        On timeout the function keeps running; its outcome is dropped, as on AWS.
        """
        return await self.lambdas.run(function, event, timeout=self.limits.integration_timeout_s)

    def _base_context(
        self, request: web.Request, connection_id: str, connected_at: float
    ) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "apiId": self.api_id,
            "domainName": request.host,
            "connectionId": connection_id,
            "connectedAt": _ms(connected_at),
            "messageDirection": "IN",
            "identity": {
                "sourceIp": request.remote or "",
                "userAgent": request.headers.get("User-Agent", ""),
            },
        }

    def _request_context(
        self, base: Mapping[str, Any], route_key: str, event_type: str, **extra: Any
    ) -> dict[str, Any]:
        now = time.time()
        request_id = new_id()
        return {
            **base,
            "routeKey": route_key,
            "eventType": event_type,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "requestTimeEpoch": _ms(now),
            **extra,
        }

    # -- handshake ---------------------------------------------------------------------------

    async def _handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return _Refused(503, _message("Service Unavailable")).response()
        probe = _GatewaySocket(self.limits)
        if not probe.can_prepare(request).ok:
            return _Refused(426, _message("Upgrade Required")).response()
        connection_id = new_id()
        connected_at = time.time()
        base = self._base_context(request, connection_id, connected_at)
        try:
            authorizer = await self._authorize(request, base)
            if authorizer is not None:
                base["authorizer"] = authorizer
            selected = await self._run_connect(request, base)
        except _Refused as refused:
            log.info(
                "handshake refused",
                extra={"connectionId": connection_id, "status": refused.status},
            )
            return refused.response()

        ws = _GatewaySocket(self.limits, (selected,) if selected else ())
        await ws.prepare(request)
        assert request.transport is not None
        conn = _Connection(
            id=connection_id,
            ws=ws,
            transport=request.transport,
            request_context=base,
            source_ip=request.remote or "",
            user_agent=request.headers.get("User-Agent", ""),
            connected_at=connected_at,
            connected_mono=time.monotonic(),
            last_active_at=connected_at,
            last_active_mono=time.monotonic(),
            subprotocol=selected,
        )
        # Registered only now: API Gateway answers 410 for posts during $connect.
        self._connections[connection_id] = conn
        log.info("connected", extra={"connectionId": connection_id})
        watchdog = asyncio.create_task(self._watch(conn))
        code, reason = _ABNORMAL_CLOSURE, "Going away"
        try:
            if self._stopping:
                await self._close(conn, WSCloseCode.GOING_AWAY, "Going away")
            code, reason = await self._receive(conn)
        finally:
            # Whatever ended the connection, $disconnect runs once it is gone.
            watchdog.cancel()
            self._connections.pop(connection_id, None)
            if conn.closed_by_gateway is not None:
                code, reason = conn.closed_by_gateway
            try:
                await self._run_disconnect(conn, code, reason)
            finally:
                conn.done.set()
        return ws

    async def _authorize(
        self, request: web.Request, base: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        if self.authorizer is None:
            return None
        headers, multi_headers = _headers(request)
        query, multi_query = _query(request)
        method_arn = (
            f"arn:aws:execute-api:{self.region}:{ACCOUNT_ID}:{self.api_id}/{self.stage}/$connect"
        )
        event = {
            "type": "REQUEST",
            "methodArn": method_arn,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "stageVariables": {},
            "requestContext": self._request_context(base, "$connect", "CONNECT"),
        }
        try:
            result = await self._invoke(self.authorizer, event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise _Refused(401, _message("Unauthorized"), "UnauthorizedException") from None
            log.warning(
                "authorizer failed",
                extra={"connectionId": base["connectionId"], "errorType": type(exc).__name__},
            )
            raise _Refused(
                500, _message("Internal server error"), "AuthorizerConfigurationException"
            ) from None
        try:
            allowed, context = evaluate_policy(result, method_arn)
        except ValueError:
            log.warning("authorizer result malformed", extra={"connectionId": base["connectionId"]})
            raise _Refused(
                500, _message("Internal server error"), "AuthorizerConfigurationException"
            ) from None
        if not allowed:
            raise _Refused(403, _message("Forbidden"), "AccessDeniedException")
        return context

    async def _run_connect(self, request: web.Request, base: Mapping[str, Any]) -> str | None:
        """Run ``$connect``; returns the subprotocol it selected, if any."""
        if self.connect is None:
            return None
        headers, multi_headers = _headers(request)
        query, multi_query = _query(request)
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "requestContext": self._request_context(base, "$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        if query:  # API Gateway leaves them out when the URL has no query string
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = multi_query
        try:
            result = await self._invoke(self.connect, event)
        except TimeoutError:
            raise _Refused(504, _message("Endpoint request timed out")) from None
        except Exception as exc:
            log.warning(
                "$connect failed",
                extra={"connectionId": base["connectionId"], "errorType": type(exc).__name__},
            )
            raise _Refused(502, _message("Internal server error")) from None
        status = result.get("statusCode") if isinstance(result, Mapping) else None
        if not isinstance(status, int):
            raise _Refused(502, _message("Internal server error"))
        if not 200 <= status < 300:
            body = result.get("body")
            raise _Refused(status, body if isinstance(body, str) else None)
        response_headers = result.get("headers") or {}
        selected = next(
            (str(v) for k, v in response_headers.items() if k.lower() == "sec-websocket-protocol"),
            None,
        )
        if selected is not None and selected not in _offered_protocols(request):
            log.warning(
                "$connect selected a subprotocol the client did not offer",
                extra={"connectionId": base["connectionId"]},
            )
            raise _Refused(500, _message("Internal server error"))
        return selected

    # -- messages ----------------------------------------------------------------------------

    async def _receive(self, conn: _Connection) -> tuple[int, str]:
        """Read until the socket closes; returns (disconnectStatusCode, disconnectReason)."""
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                conn.messages_in += 1
                conn.touch()
                if msg.type is WSMsgType.TEXT:
                    body, is_b64 = msg.data, False
                else:
                    body, is_b64 = base64.b64encode(msg.data).decode("ascii"), True
                task = asyncio.create_task(self._dispatch(conn, body, is_b64))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            if msg.type is WSMsgType.CLOSE:
                code = int(msg.data or 0) or _NO_STATUS
                reason = msg.extra or (
                    "Client-side close frame status not set"
                    if code == _NO_STATUS
                    else "Connection Closed Normally"
                )
                return code, reason  # aiohttp has already answered the close frame
            if msg.type is WSMsgType.ERROR:
                code = getattr(msg.data, "code", WSCloseCode.INTERNAL_ERROR)
                if code == WSCloseCode.MESSAGE_TOO_BIG:
                    log.info("message too big", extra={"connectionId": conn.id})
                    return int(code), _TOO_BIG
                return int(code), "Protocol error"
            # CLOSING (our own close() in progress) or CLOSED (socket gone)
            return _ABNORMAL_CLOSURE, "Going away"

    async def _dispatch(self, conn: _Connection, body: str, is_b64: bool) -> None:
        context = self._request_context(
            conn.request_context, "$default", "MESSAGE", messageId=new_id()
        )
        request_id = context["requestId"]
        if self.message is None:  # no $default route
            await self._notify(conn, "Forbidden", request_id)
            return
        event = {"requestContext": context, "body": body, "isBase64Encoded": is_b64}
        try:
            await self._invoke(self.message, event)
        except TimeoutError:
            await self._notify(conn, "Endpoint request timed out", request_id)
        except Exception as exc:
            log.warning(
                "$default failed",
                extra={
                    "connectionId": conn.id,
                    "requestId": request_id,
                    "errorType": type(exc).__name__,
                },
            )
            await self._notify(conn, "Internal server error", request_id)

    async def _notify(self, conn: _Connection, message: str, request_id: str) -> None:
        if conn.ws.closed:
            return
        payload = {"message": message, "connectionId": conn.id, "requestId": request_id}
        with contextlib.suppress(ConnectionError):  # the client left meanwhile
            await conn.ws.send_str(json.dumps(payload))

    async def _run_disconnect(self, conn: _Connection, code: int, reason: str) -> None:
        log.info("disconnected", extra={"connectionId": conn.id, "code": code})
        if self.disconnect is None:
            return
        host = conn.request_context["domainName"]
        headers = {"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        event = {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": self._request_context(
                conn.request_context,
                "$disconnect",
                "DISCONNECT",
                disconnectStatusCode=code,
                disconnectReason=reason,
            ),
            "isBase64Encoded": False,
        }
        try:
            await self._invoke(self.disconnect, event)
        except Exception as exc:  # TimeoutError included
            log.warning(
                "$disconnect failed",
                extra={"connectionId": conn.id, "errorType": type(exc).__name__},
            )

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        """Close from the gateway's side; the receive loop then runs ``$disconnect``."""
        if conn.closed_by_gateway is not None or conn.ws.closed:
            return
        conn.closed_by_gateway = (int(code), reason)
        self._connections.pop(conn.id, None)  # posts answer 410 from now on
        with contextlib.suppress(ConnectionError):
            await conn.ws.close(code=code, message=reason.encode("utf-8"))

    async def _watch(self, conn: _Connection) -> None:
        """Enforce the idle timeout and the maximum connection duration."""
        limits = self.limits
        while True:
            now = time.monotonic()
            idle_deadline = conn.last_active_mono + limits.idle_timeout_s
            max_deadline = conn.connected_mono + limits.max_connection_s
            if now >= max_deadline or now >= idle_deadline:
                which = "maximum duration" if now >= max_deadline else "idle timeout"
                log.info("closing connection", extra={"connectionId": conn.id, "cause": which})
                await self._close(conn, WSCloseCode.GOING_AWAY, "Going away")
                return
            await asyncio.sleep(min(idle_deadline, max_deadline) - now)

    # -- @connections ------------------------------------------------------------------------

    def _find(self, request: web.Request) -> _Connection | None:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None or conn.ws.closed or conn.transport.is_closing():
            return None
        return conn

    def _take_limit_exceeded(self) -> bool:
        with self._faults_lock:
            if self.faults.limit_exceeded > 0:
                self.faults.limit_exceeded -= 1
                return True
            return False

    async def _handle_post(self, request: web.Request) -> web.Response:
        data = await request.read()
        latency = self.faults.post_latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if self._take_limit_exceeded():
            return _mgmt_error(429, "LimitExceededException", "Rate exceeded")
        if len(data) > self.limits.message_bytes:
            return _mgmt_error(
                413, "PayloadTooLargeException", "Message is larger than the 128 KB limit"
            )
        conn = self._find(request)
        if conn is None:
            return _mgmt_error(410, "GoneException", "The connection is gone.")
        try:
            text: str | None = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            if len(data) <= self.limits.frame_bytes:
                if text is not None:
                    await conn.ws.send_str(text)
                else:
                    await conn.ws.send_bytes(data)
            else:
                # aiohttp always sends one frame per message; API Gateway splits large
                # messages into frames of at most 32 KB. One write keeps the fragments
                # together (no other frame can come between them).
                opcode = 0x1 if text is not None else 0x2
                conn.transport.write(encode_frames(data, opcode, self.limits.frame_bytes))
        except ConnectionError:
            return _mgmt_error(410, "GoneException", "The connection is gone.")
        conn.posts_out += 1
        conn.touch()
        return web.Response(status=200, headers={"x-amzn-RequestId": new_id()})

    async def _handle_get(self, request: web.Request) -> web.Response:
        conn = self._find(request)
        if conn is None:
            return _mgmt_error(410, "GoneException", "The connection is gone.")
        return web.json_response(
            {
                # The wire names (boto3 shows ConnectedAt, LastActiveAt, Identity).
                "connectedAt": _iso(conn.connected_at),
                "lastActiveAt": _iso(conn.last_active_at),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            },
            headers={"x-amzn-RequestId": new_id()},
        )

    async def _handle_delete(self, request: web.Request) -> web.Response:
        conn = self._find(request)
        if conn is None:
            return _mgmt_error(410, "GoneException", "The connection is gone.")
        # Answer at once, as API Gateway does; the close handshake and $disconnect follow.
        task = asyncio.create_task(self._close(conn, WSCloseCode.OK, "Connection Closed Normally"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=204, headers={"x-amzn-RequestId": new_id()})

    # -- control -----------------------------------------------------------------------------

    def apply_faults(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a ``/_gateway/faults`` body; raises ``ControlError`` on bad fields."""
        unknown = set(body) - {"postLatencyMs", "limitExceeded", "reset"}
        if unknown:
            raise ControlError(f"unknown fields: {sorted(unknown)}")
        changes: dict[str, Any] = {}
        for name, attr, kind in (
            ("postLatencyMs", "post_latency_ms", float),
            ("limitExceeded", "limit_exceeded", int),
        ):
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ControlError(f"{name} must be a non-negative number")
            if kind is int and value != int(value):
                raise ControlError(f"{name} must be an integer")
            changes[attr] = kind(value)
        with self._faults_lock:
            if body.get("reset"):
                self.faults = GatewayFaults()
            for attr, value in changes.items():
                setattr(self.faults, attr, value)
            return {"faults": self.faults.to_json()}

    def connections(self) -> list[dict[str, Any]]:
        """The open connections (call on the gateway's loop, or use the control route)."""
        return [c.to_json() for c in self._connections.values()]

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle_get_faults(self, request: web.Request) -> web.Response:
        with self._faults_lock:
            return web.json_response({"faults": self.faults.to_json()})

    async def _handle_post_faults(self, request: web.Request) -> web.Response:
        return await apply_control(request, self.apply_faults)

    async def _handle_connections(self, request: web.Request) -> web.Response:
        return web.json_response({"connections": self.connections()})


class GatewayControl(JsonClient):
    """A small synchronous client for the control routes (tests, bench)."""

    def faults(self, **fields: Any) -> dict[str, Any]:
        """POST /_gateway/faults with wire names, e.g. ``faults(limitExceeded=1)``."""
        return dict(self.call("POST", "/_gateway/faults", fields)["faults"])

    def reset(self) -> dict[str, Any]:
        return self.faults(reset=True)

    def connections(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_gateway/connections")["connections"])
