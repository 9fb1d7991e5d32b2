"""One client per entry point, with the same shape, so every case of the fault and security
suite can run on every transport: start a stream (or be refused), read its frames as they
arrive, drop the connection, resume, cancel, read the store.

* ``Refused`` is what an entry point answers before anything is streamed: the HTTP status
  (None on a WebSocket message), the protocol's error code and message.
* ``Live`` is a started stream: ``next()`` returns its frames one by one as they arrive
  (heartbeats dropped), ``rest()`` everything up to the terminal frame, ``drop()`` closes
  the connection abruptly.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.sync.client import ClientConnection, connect

from tests.support.appsync import CANCEL, FRAMES, START, Realtime, graphql
from tests.support.cloud import Cloud
from tests.support.sse import SseEvent, events

TERMINAL = ("done", "error")
RECV_TIMEOUT_S = 20.0


@dataclass
class User:
    """A signed-in user of the local pool, with every token Cognito gave them."""

    name: str
    password: str
    sub: str
    id_token: str
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class Refused(Exception):
    """The entry point refused the request before streaming anything."""

    status: int | None
    code: str | None
    message: str
    body: str = ""

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def is_terminal(frame: dict[str, Any]) -> bool:
    return frame.get("type") in TERMINAL


class Live:
    """A started stream's frames as the client receives them."""

    transport = ""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.received: list[dict[str, Any]] = []  # every frame of this stream, in arrival order
        self.arrivals: list[float] = []
        self._buffer: list[dict[str, Any]] = []

    def _pull(self, timeout: float) -> list[dict[str, Any]]:
        """The next frames the transport delivers (raises TimeoutError)."""
        raise NotImplementedError

    def next(self, timeout: float = RECV_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame of {self.stream_id} within {timeout} s")
            self._buffer += [
                f
                for f in self._pull(remaining)
                if f.get("type") != "heartbeat" and f.get("streamId") == self.stream_id
            ]
        frame = self._buffer.pop(0)
        self.received.append(frame)
        self.arrivals.append(time.time())
        return frame

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = RECV_TIMEOUT_S):
        """Frames up to and including the first one for which ``predicate`` holds."""
        got = []
        while True:
            frame = self.next(timeout)
            got.append(frame)
            if predicate(frame):
                return got

    def rest(self, timeout: float = RECV_TIMEOUT_S) -> list[dict[str, Any]]:
        """Frames up to and including the terminal one."""
        return self.until(is_terminal, timeout)

    def drop(self) -> None:
        """Close the connection abruptly (no close handshake), as a lost network would."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abort(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- REST ----------------------------------------------------------------------------------


def http_call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = _body_bytes(body)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _body_bytes(body: Any) -> bytes | None:
    """An object as JSON; text and bytes as they are (to send malformed bodies)."""
    if body is None or isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Rest:
    """The REST API (Chalice routes)."""

    def __init__(self, cloud: Cloud) -> None:
        self.url = cloud.ep["rest"]

    def read(self, token: str | None, stream_id: str, after_seq: Any = None) -> tuple[int, dict]:
        query = "" if after_seq is None else f"?afterSeq={after_seq}"
        status, _, raw = http_call(f"{self.url}streams/{stream_id}{query}", headers=bearer(token))
        return status, _json_or_empty(raw)

    def cancel(self, token: str | None, stream_id: str) -> tuple[int, dict]:
        status, _, raw = http_call(
            f"{self.url}streams/{stream_id}/cancel", "POST", b"", headers=bearer(token)
        )
        return status, _json_or_empty(raw)


# -- Function URL ------------------------------------------------------------------------


class SseLive(Live):
    transport = "function_url"

    def __init__(self, stream_id: str, conn: http.client.HTTPConnection, resp: Any) -> None:
        super().__init__(stream_id)
        self.conn = conn
        self.resp = resp
        self._events = events(resp)

    def _pull(self, timeout: float) -> list[dict[str, Any]]:
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        try:
            ev: SseEvent = next(self._events)
        except TimeoutError:
            raise TimeoutError("no SSE event in time") from None
        except StopIteration:
            raise AssertionError("the SSE response ended without a terminal frame") from None
        if ev.data is None:
            return []  # a heartbeat comment
        frame = ev.frame()
        # The SSE fields must agree with the frame they carry.
        assert ev.event == frame["type"], (ev, frame)
        assert ev.id == (str(frame["seq"]) if "seq" in frame else None), (ev, frame)
        return [frame]

    def drop(self) -> None:
        _abort(self.conn.sock)
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


class FunctionUrl:
    name = "function_url"

    def __init__(self, cloud: Cloud) -> None:
        self.url = cloud.ep["functionUrl"]

    def _request(
        self, method: str, url: str, body: Any, headers: dict[str, str], stream_id: str
    ) -> SseLive:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=_body_bytes(body), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raw = resp.read()
            conn.close()
            error = _json_or_empty(raw).get("error") or {}
            raise Refused(
                resp.status, error.get("code"), str(error.get("message", "")), raw.decode()
            )
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        return SseLive(stream_id, conn, resp)

    def open(self, token: str | None, body: Any) -> SseLive:
        stream_id = body.get("streamId", "") if isinstance(body, dict) else ""
        headers = {"Content-Type": "application/json", **bearer(token)}
        return self._request("POST", self.url, body, headers, stream_id)

    def resume(self, token: str | None, stream_id: str, after_seq: int) -> SseLive:
        headers = {**bearer(token), "Last-Event-ID": str(after_seq)}
        return self._request("GET", f"{self.url}?streamId={stream_id}", None, headers, stream_id)


class RestStreamLive(SseLive):
    transport = "rest_stream"


class RestStream(FunctionUrl):
    """The REST API's streaming routes (architecture 4): the gateway's authorizer first.

    A refusal by the gateway has API Gateway's body (``{"message": ...}``, in ``code``
    as ``None``); a refusal by the function behind it the protocol's ``{"error": ...}``."""

    name = "rest_stream"

    def __init__(self, cloud: Cloud) -> None:
        self.url = cloud.ep["restStream"]
        self.invoke_url = cloud.ep["functionInvoke"]

    def _request(
        self, method: str, url: str, body: Any, headers: dict[str, str], stream_id: str
    ) -> SseLive:
        try:
            live = super()._request(method, url, body, headers, stream_id)
        except Refused as refused:
            gateway = _json_or_empty(refused.body.encode()).get("message")
            if refused.code is None and isinstance(gateway, str):
                raise Refused(refused.status, None, gateway, refused.body) from None
            raise
        return RestStreamLive(stream_id, live.conn, live.resp)

    def events_url(self, stream_id: str) -> str:
        return f"{self.url}/{stream_id}/events"

    def resume(self, token: str | None, stream_id: str, after_seq: int) -> SseLive:
        headers = {**bearer(token), "Last-Event-ID": str(after_seq)}
        return self._request("GET", self.events_url(stream_id), None, headers, stream_id)

    def invocations(self) -> int:
        """Invocations of the streaming function through the REST API's integration."""
        status, _, raw = http_call(f"{self.invoke_url}_local/invocations")
        assert status == 200, raw
        return int(json.loads(raw)["streaming"])


# -- WebSocket --------------------------------------------------------------------------


class WsConnection:
    """One WebSocket connection; frames of any stream, in arrival order."""

    def __init__(self, url: str, token: str) -> None:
        self._exit = contextlib.ExitStack()
        self.ws: ClientConnection = self._exit.enter_context(
            connect(url, subprotocols=["llm-stream.v1", f"auth.{token}"], open_timeout=10)
        )

    def send(self, message: dict[str, Any] | str) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self, timeout: float = RECV_TIMEOUT_S) -> dict[str, Any]:
        """The next message that is not a heartbeat."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            frame = json.loads(raw)
            if frame.get("type") != "heartbeat":
                return frame

    def answer(self, message: dict[str, Any] | str, timeout: float = RECV_TIMEOUT_S) -> dict:
        """Send a message and return the next frame (an error frame for a bad one)."""
        self.send(message)
        return self.recv(timeout)

    def close(self) -> None:
        self._exit.close()

    def drop(self) -> None:
        _abort(self.ws.socket)
        with contextlib.suppress(Exception):
            self._exit.close()


class WsLive(Live):
    transport = "websocket"

    def __init__(self, stream_id: str, conn: WsConnection, owned: bool = True) -> None:
        super().__init__(stream_id)
        self.conn = conn
        self._owned = owned

    def _pull(self, timeout: float) -> list[dict[str, Any]]:
        frame = self.conn.recv(timeout)
        if frame.get("type") == "error" and "seq" not in frame:
            error = frame["error"]
            raise Refused(None, error["code"], error["message"])
        return [frame]

    def drop(self) -> None:
        self.conn.drop()

    def close(self) -> None:
        if self._owned:
            self.conn.close()


class WebSocket:
    name = "websocket"

    def __init__(self, cloud: Cloud) -> None:
        self.url = cloud.ep["websocket"]

    def connect(self, token: str) -> WsConnection:
        return WsConnection(self.url, token)

    def _first(self, live: WsLive) -> WsLive:
        """Wait for the stream's first frame: a refusal raises Refused, else it is kept."""
        try:
            first = live._pull(RECV_TIMEOUT_S)[0]
        except Refused:
            live.close()
            raise
        live._buffer.append(first)
        return live

    def open(self, token: str, body: Any, conn: WsConnection | None = None) -> WsLive:
        stream_id = body.get("streamId", "") if isinstance(body, dict) else ""
        owned = conn is None
        conn = conn or self.connect(token)
        message = {"action": "stream", **body} if isinstance(body, dict) else body
        conn.send(message)
        return self._first(WsLive(stream_id, conn, owned))

    def resume(
        self, token: str, stream_id: str, after_seq: int, conn: WsConnection | None = None
    ) -> WsLive:
        owned = conn is None
        conn = conn or self.connect(token)
        conn.send({"action": "resume", "streamId": stream_id, "afterSeq": after_seq})
        return self._first(WsLive(stream_id, conn, owned))

    def cancel(self, token: str, stream_id: str) -> dict[str, Any] | None:
        """Cancel from a connection of its own; an error frame if refused, else None."""
        conn = self.connect(token)
        try:
            conn.send({"action": "cancel", "streamId": stream_id})
            try:
                return conn.recv(timeout=0.5)  # a refusal comes at once; success is silent
            except TimeoutError:
                return None
        finally:
            conn.close()


# -- AppSync -----------------------------------------------------------------------------


def gql_refusal(answer: dict[str, Any]) -> Refused | None:
    """The refusal in a GraphQL answer (401 at the door, or a field error), if any."""
    if answer["status"] != 200 or answer.get("errors"):
        (error, *_) = answer.get("errors") or [{}]
        return Refused(answer["status"], error.get("errorType"), str(error.get("message", "")))
    return None


class AppSyncLive(Live):
    transport = "appsync"

    def __init__(self, stream_id: str, rt: Realtime, backlog: list[dict[str, Any]]) -> None:
        super().__init__(stream_id)
        self.rt = rt
        self._buffer = list(backlog)

    def _pull(self, timeout: float) -> list[dict[str, Any]]:
        message = self.rt.next_message(timeout)
        assert message["type"] == "data", message
        batch = message["payload"]["data"]["onStreamFrame"]
        return [json.loads(f) for f in batch["frames"]]

    def drop(self) -> None:
        _abort(self.rt.ws.socket)
        with contextlib.suppress(Exception):
            self.rt.close()

    def close(self) -> None:
        self.rt.close()


class AppSync:
    name = "appsync"

    def __init__(self, cloud: Cloud) -> None:
        self.graphql_url = cloud.ep["appsync"]["graphql"]
        self.realtime_url = cloud.ep["appsync"]["realtime"]

    def call(self, token: str | None, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.graphql_url, token or "", query, variables)

    def realtime(self, token: str) -> Realtime:
        return Realtime(self.graphql_url, self.realtime_url, token)

    def start(self, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(token, START, input=body)

    def open(self, token: str, body: dict[str, Any]) -> AppSyncLive:
        """Subscribe first, then start (the protocol's order)."""
        stream_id = body.get("streamId") or str(uuid.uuid4())
        rt = self.realtime(token)
        try:
            rt.subscribe(stream_id)
            refusal = gql_refusal(self.start(token, {**body, "streamId": stream_id}))
            if refusal is not None:
                raise refusal
        except BaseException:
            rt.close()
            raise
        return AppSyncLive(stream_id, rt, [])

    def read(self, token: str | None, stream_id: str, after_seq: int = -1) -> dict[str, Any]:
        return self.call(token, FRAMES, streamId=stream_id, afterSeq=after_seq)

    def resume(self, token: str, stream_id: str, after_seq: int) -> AppSyncLive:
        """Resubscribe, then catch up from the store: stored frames after ``after_seq``
        come first; live ones follow (the client drops any seq it already has)."""
        rt = self.realtime(token)
        rt.subscribe(stream_id)
        answer = self.read(token, stream_id, after_seq)
        refusal = gql_refusal(answer)
        if refusal is not None:
            rt.close()
            raise refusal
        backlog = [json.loads(f) for f in answer["data"]["streamFrames"]["frames"]]
        return AppSyncLive(stream_id, rt, backlog)

    def cancel(self, token: str, stream_id: str) -> dict[str, Any]:
        return self.call(token, CANCEL, streamId=stream_id)


def realtime_header(graphql_url: str, token: str) -> str:
    """The ``header-`` subprotocol value AppSync clients send for user-pool auth."""
    auth = {"Authorization": token, "host": urlsplit(graphql_url).netloc}
    return base64.urlsafe_b64encode(json.dumps(auth).encode()).decode().rstrip("=")


# -- the stream store ---------------------------------------------------------------------


@dataclass
class StoreView:
    """What the store holds about one stream."""

    record: Any
    frames: list[dict[str, Any]] = field(default_factory=list)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


class Background:
    """Collects a Live's frames in a thread until its terminal frame (or an error)."""

    def __init__(self, live: Live, timeout: float = 120.0) -> None:
        self.live = live
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.error: BaseException | None = None
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                frame = self.live.next(self._timeout)
                self.frames.put(frame)
                if is_terminal(frame):
                    return
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float) -> list[dict[str, Any]]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end in time"
        if self.error is not None:
            raise self.error
        return list(self.live.received)
