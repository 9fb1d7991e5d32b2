"""The local API Gateway WebSocket API, with a toy Chalice app and real clients.

Clients are the ``websockets`` library (sockets) and boto3's
``apigatewaymanagementapi`` (@connections), so both sides speak exactly what they
speak to AWS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config
from chalice import Chalice
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from local.lambdas import LocalLambdas
from local.loop import LoopThread
from local.ws_gateway import (
    FrameSizeScanner,
    GatewayLimits,
    WebSocketGateway,
    encode_frames,
)

CREDS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
GOOD = ("llm-stream.v1", "auth.good")
WAIT_S = 5.0
# Small limits keep the size tests fast; timeouts stay long unless a test shortens them.
TEST_LIMITS = {"frame_bytes": 1024, "message_bytes": 4096, "integration_timeout_s": 10.0}


@dataclass
class Harness:
    """What the toy handlers share with the test running them."""

    management_url: str = ""
    events: queue.Queue[tuple[str, dict[str, Any]]] = field(default_factory=queue.Queue)
    release: threading.Event = field(default_factory=threading.Event)


H = Harness()

app = Chalice(app_name="toyws")
app.experimental_feature_flags.update(["WEBSOCKETS"])


def management_client(url: str, **config: Any) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        region_name="us-east-1",
        endpoint_url=url,
        config=Config(**config),
        **CREDS,
    )


def _offered(event: dict[str, Any]) -> list[str]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]


@app.lambda_function(name="ws_authorize")
def ws_authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    offered = _offered(event)
    if "auth.crash" in offered:
        raise RuntimeError("the authorizer broke")
    if "auth.good" in offered:
        effect = "Allow"
    elif "auth.deny" in offered:
        effect = "Deny"
    else:
        raise Exception("Unauthorized")
    return {
        "principalId": "user-1",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}
            ],
        },
        "context": {"sub": "user-1", "username": "alice"},
    }


@app.on_ws_connect()
def ws_connect(event: Any) -> dict[str, Any]:
    H.events.put(("$connect", event.to_dict()))
    return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "llm-stream.v1"}}


@app.on_ws_message()
def ws_message(event: Any) -> None:
    H.events.put(("$default", event.to_dict()))
    if event.to_dict()["isBase64Encoded"]:
        return
    body = json.loads(event.body)
    reply = management_client(H.management_url)
    if body["action"] == "echo":
        reply.post_to_connection(
            ConnectionId=event.connection_id, Data=json.dumps({"echo": body["text"]})
        )
    elif body["action"] == "slow":
        H.release.wait(WAIT_S)
        reply.post_to_connection(ConnectionId=event.connection_id, Data=b'{"slow":"finished"}')
    elif body["action"] == "fail":
        raise RuntimeError("the handler broke")


@app.on_ws_disconnect()
def ws_disconnect(event: Any) -> None:
    H.events.put(("$disconnect", event.to_dict()))


# -- fixtures and helpers ----------------------------------------------------------------------


@dataclass
class Running:
    gateway: WebSocketGateway
    lambdas: LocalLambdas
    loop: LoopThread
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.loop.run(self.gateway.stop())
            H.release.set()  # let blocked handlers end before the pool closes
            self.lambdas.close()

    def mgmt(self, **config: Any) -> Any:
        # No retries: each call is one request, so injected faults are seen as they are.
        return management_client(
            self.gateway.management_url, retries={"total_max_attempts": 1}, **config
        )

    def connect(self, protocols: tuple[str, ...] = GOOD) -> ClientConnection:
        return connect(
            self.gateway.url, subprotocols=list(protocols), open_timeout=WAIT_S, close_timeout=2
        )

    def connect_with_id(self) -> tuple[ClientConnection, str]:
        ws = self.connect()
        return ws, next_event("$connect")["requestContext"]["connectionId"]


@pytest.fixture
def make_gateway() -> Iterator[Any]:
    loop = LoopThread().start()
    running: list[Running] = []

    def make(**limits: Any) -> Running:
        global H
        H = Harness()
        lambdas = LocalLambdas(app, env={"AWS_REGION": "us-east-1"})
        gateway = WebSocketGateway(lambdas, limits=GatewayLimits(**{**TEST_LIMITS, **limits}))
        loop.run(gateway.start("127.0.0.1", 0))
        H.management_url = gateway.management_url
        running.append(Running(gateway, lambdas, loop))
        return running[-1]

    yield make
    for r in running:
        r.stop()
    loop.stop()


@pytest.fixture
def gw(make_gateway: Any) -> Running:
    return make_gateway()


def next_event(route_key: str, timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        key, event = H.events.get(timeout=max(0.0, deadline - time.monotonic()))
        if key == route_key:
            return event


def recv_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=WAIT_S))


def close_frame(ws: ClientConnection) -> tuple[int, str]:
    """Wait for the server to close the socket; the close code and reason it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def close_code(ws: ClientConnection) -> int:
    return close_frame(ws)[0]


def refused_status(r: Running, protocols: tuple[str, ...]) -> int:
    with pytest.raises(InvalidStatus) as refused:
        r.connect(protocols)
    return refused.value.response.status_code


# -- handshake -----------------------------------------------------------------------------------


def test_an_allowed_handshake_selects_the_subprotocol_connect_returned(gw):
    with gw.connect() as ws:
        assert ws.subprotocol == "llm-stream.v1"


def test_the_connect_event_is_shaped_like_api_gateways(gw):
    with gw.connect():
        event = next_event("$connect")
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert re.fullmatch(r"[A-Za-z0-9_-]{11}=", ctx["connectionId"])
    assert ctx["apiId"] == gw.gateway.api_id and ctx["stage"] == "api"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["authorizer"] == {"sub": "user-1", "username": "alice", "principalId": "user-1"}
    assert _offered(event) == list(GOOD)
    assert event["isBase64Encoded"] is False


def test_the_authorizer_context_reaches_default_events(gw):
    with gw.connect() as ws:
        ws.send(json.dumps({"action": "echo", "text": "hi"}))
        event = next_event("$default")
    assert event["requestContext"]["authorizer"]["sub"] == "user-1"
    assert event["requestContext"]["eventType"] == "MESSAGE"
    assert json.loads(event["body"]) == {"action": "echo", "text": "hi"}


def test_an_unauthorized_authorizer_refuses_the_handshake_with_401(gw):
    assert refused_status(gw, ("llm-stream.v1", "auth.bad")) == 401


def test_a_deny_policy_refuses_the_handshake_with_403(gw):
    assert refused_status(gw, ("llm-stream.v1", "auth.deny")) == 403


def test_a_handshake_without_subprotocols_is_refused(gw):
    assert refused_status(gw, ()) == 401


def test_a_failing_authorizer_refuses_the_handshake_with_500(gw):
    assert refused_status(gw, ("llm-stream.v1", "auth.crash")) == 500


def test_connect_does_not_run_when_the_authorizer_refuses(gw):
    refused_status(gw, ("llm-stream.v1", "auth.bad"))
    with gw.connect():
        key, _ = H.events.get(timeout=WAIT_S)
    assert key == "$connect"  # the first $connect is the allowed one


def test_the_subprotocol_token_never_reaches_the_logs(gw, caplog):
    for name in ("local", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    with gw.connect(("llm-stream.v1", "auth.good", "auth.s3cret-token")):
        next_event("$connect")
    refused_status(gw, ("llm-stream.v1", "auth.s3cret-token"))
    ours = [r for r in caplog.records if r.name.startswith(("local", "aiohttp"))]
    assert ours  # the gateway did log the handshakes
    assert not any("s3cret" in r.getMessage() or "s3cret" in str(r.__dict__) for r in ours)


# -- messages ------------------------------------------------------------------------------------


def test_a_message_round_trips_through_a_connections_post(gw):
    with gw.connect() as ws:
        ws.send(json.dumps({"action": "echo", "text": "hello"}))
        assert recv_json(ws) == {"echo": "hello"}


def test_a_binary_message_arrives_base64_encoded(gw):
    with gw.connect() as ws:
        ws.send(b"\x00\x01")
        event = next_event("$default")
    assert event["isBase64Encoded"] is True
    assert event["body"] == "AAE="


def test_a_handler_exception_sends_internal_server_error(gw):
    with gw.connect() as ws:
        ws.send(json.dumps({"action": "fail"}))
        event = next_event("$default")
        reply = recv_json(ws)
    assert reply["message"] == "Internal server error"
    assert reply["connectionId"] == event["requestContext"]["connectionId"]
    assert reply["requestId"]


def test_a_slow_handler_times_out_for_the_client_and_still_completes(make_gateway):
    gw = make_gateway(integration_timeout_s=1.0)
    with gw.connect() as ws:
        ws.send(json.dumps({"action": "slow"}))
        assert recv_json(ws)["message"] == "Endpoint request timed out"
        H.release.set()
        assert recv_json(ws) == {"slow": "finished"}


def test_a_frame_over_the_frame_limit_closes_with_1009(gw):
    with gw.connect() as ws:
        ws.send("x" * 2000)  # one frame, under the message limit
        assert close_frame(ws) == (1009, "Message too big")


def test_a_message_over_the_message_limit_closes_with_1009(gw):
    with gw.connect() as ws:
        # Five 1000-byte fragments: every frame fits, the message does not. The
        # gateway may close before the last fragment is written.
        with contextlib.suppress(ConnectionClosed):
            ws.send(iter(["x" * 1000] * 5))
        # API Gateway's reason, as clients report it ("code = 1009 (message too big),
        # reason = Message too big").
        assert close_frame(ws) == (1009, "Message too big")


def test_a_message_of_exactly_the_limit_is_accepted(gw):
    with gw.connect() as ws:
        ws.send(iter(["x" * 1024] * 4))
        assert next_event("$default")["body"] == "x" * 4096


# -- @connections ------------------------------------------------------------------------------


def test_posting_to_a_closed_connection_raises_gone(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        pass
    next_event("$disconnect")
    mgmt = gw.mgmt()
    with pytest.raises(mgmt.exceptions.GoneException):
        mgmt.post_to_connection(ConnectionId=cid, Data=b"late")


def test_get_connection_describes_the_connection(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        info = gw.mgmt().get_connection(ConnectionId=cid)
    assert info["ConnectedAt"] <= info["LastActiveAt"]
    assert info["Identity"]["SourceIp"] == "127.0.0.1"
    assert "websockets" in info["Identity"]["UserAgent"]


def test_delete_closes_the_client_and_runs_disconnect_once(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        gw.mgmt().delete_connection(ConnectionId=cid)
        assert close_code(ws) == 1000
    event = next_event("$disconnect")
    assert event["requestContext"]["connectionId"] == cid
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    gw.stop()  # every pending $disconnect has run once this returns
    later = [e for k, e in _drain() if k == "$disconnect"]
    assert later == []


def test_a_post_over_the_message_limit_is_payload_too_large(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        mgmt = gw.mgmt()
        with pytest.raises(mgmt.exceptions.PayloadTooLargeException):
            mgmt.post_to_connection(ConnectionId=cid, Data=b"x" * 4097)


def test_a_post_larger_than_a_frame_arrives_as_one_fragmented_message(gw):
    ws, cid = gw.connect_with_id()
    payload = "é" * 1250  # 2500 bytes of UTF-8: the frame split falls inside characters
    with ws:
        gw.mgmt().post_to_connection(ConnectionId=cid, Data=payload.encode("utf-8"))
        fragments = list(ws.recv_streaming(decode=False))
    assert [len(f) for f in fragments] == [1024, 1024, 452]
    assert b"".join(fragments).decode("utf-8") == payload


def test_injected_limit_exceeded_fails_the_next_post_only(gw):
    ws, cid = gw.connect_with_id()
    gw.gateway.control.faults(limitExceeded=1)
    mgmt = gw.mgmt()
    with ws:
        with pytest.raises(mgmt.exceptions.LimitExceededException):
            mgmt.post_to_connection(ConnectionId=cid, Data=b"first")
        mgmt.post_to_connection(ConnectionId=cid, Data=b"second")
        assert ws.recv(timeout=WAIT_S) == "second"


def test_injected_post_latency_delays_the_post(gw):
    ws, cid = gw.connect_with_id()
    gw.gateway.control.faults(postLatencyMs=200)
    mgmt = gw.mgmt()
    mgmt.get_connection(ConnectionId=cid)  # warm the client up outside the measurement
    with ws:
        started = time.monotonic()
        mgmt.post_to_connection(ConnectionId=cid, Data=b"slow")
        assert time.monotonic() - started >= 0.2


def test_fault_reset_clears_injected_faults(gw):
    gw.gateway.control.faults(limitExceeded=3, postLatencyMs=50)
    assert gw.gateway.control.reset() == {"postLatencyMs": 0.0, "limitExceeded": 0}


def test_the_connections_control_route_counts_messages_and_posts(gw):
    with gw.connect() as ws:
        ws.send(json.dumps({"action": "echo", "text": "a"}))
        recv_json(ws)
        [conn] = gw.gateway.control.connections()
    assert conn["messagesIn"] == 1 and conn["postsOut"] == 1


# -- disconnect ------------------------------------------------------------------------------------


def test_the_disconnect_event_carries_the_authorizer_context(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        pass
    ctx = next_event("$disconnect")["requestContext"]
    assert ctx["eventType"] == "DISCONNECT" and ctx["connectionId"] == cid
    assert ctx["authorizer"]["sub"] == "user-1"
    assert ctx["disconnectStatusCode"] == 1000


def test_the_idle_timeout_closes_the_connection_and_runs_disconnect(make_gateway):
    gw = make_gateway(idle_timeout_s=0.3)
    ws, cid = gw.connect_with_id()
    with ws:
        assert close_code(ws) == 1001
    ctx = next_event("$disconnect")["requestContext"]
    assert ctx["connectionId"] == cid and ctx["disconnectStatusCode"] == 1001


def test_the_maximum_duration_closes_the_connection(make_gateway):
    gw = make_gateway(max_connection_s=0.3)
    ws, _ = gw.connect_with_id()
    with ws:
        assert close_code(ws) == 1001


def test_stopping_the_gateway_closes_clients_with_1001_and_runs_disconnect(gw):
    ws, cid = gw.connect_with_id()
    with ws:
        gw.stop()
        assert close_code(ws) == 1001
    ctx = next_event("$disconnect", timeout=0)["requestContext"]
    assert ctx["connectionId"] == cid


# -- frame scanning (no sockets) -------------------------------------------------------------------


def test_the_frame_scanner_measures_headers_split_across_reads():
    scanner = FrameSizeScanner(frame_limit=200)
    ok = encode_frames(b"a" * 150, 0x1, 200)
    too_big = encode_frames(b"b" * 300, 0x2, 1000)  # one 300-byte frame
    stream = ok + too_big
    tripped = [scanner.feed(stream[i : i + 1]) for i in range(len(stream))]
    # It trips on the last header byte of the big frame, not before.
    assert tripped.index(True) == len(ok) + 3


def _drain() -> list[tuple[str, dict[str, Any]]]:
    out = []
    while True:
        try:
            out.append(H.events.get_nowait())
        except queue.Empty:
            return out
