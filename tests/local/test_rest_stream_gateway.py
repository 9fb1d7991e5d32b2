"""The local REST streaming gateway (local/rest_stream.py) against doubles: the authorizer's
answers as API Gateway turns them into statuses, the REST proxy event it sends, and its
limits (idle timeout, integration timeout), with a stand-in for the function's
InvokeWithResponseStream endpoint."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from local.http_service import Served
from local.loop import LoopThread
from local.rest_stream import RestStreamApi, RestStreamLimits
from tests.support.sse import request

IDLE_S = 0.5
TOTAL_S = 2.0


@dataclass
class FakeAuthorizer:
    """``LocalLambdas.run`` for the authorizer: its answer chosen by the token."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, name: str, event: dict[str, Any], *, timeout: float) -> Any:
        self.calls.append({"name": name, **event})
        token = event["authorizationToken"]
        if token == "Bearer bad":
            raise Exception("Unauthorized")
        if token == "Bearer broken":
            raise RuntimeError("authorizer bug")
        effect = "Deny" if token == "Bearer deny" else "Allow"
        resource = "arn:aws:execute-api:*:*:*/*/GET/other" if token == "Bearer narrow" else "*"
        return {
            "principalId": "alice-sub",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Action": "execute-api:Invoke", "Effect": effect, "Resource": [resource]}
                ],
            },
            "context": {"sub": "alice-sub", "username": "alice"},
        }


class FakeFunction:
    """InvokeWithResponseStream of a function whose behaviour the start body's prompt picks."""

    function_name = "streamer"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._served = Served("fake function")
        self.app = web.Application()
        self.app.router.add_post(
            "/2021-11-15/functions/{name}/response-streaming-invocations", self._invoke
        )

    @property
    def invoke_url(self) -> str:
        return self._served.endpoint

    async def start(self) -> None:
        await self._served.start(self.app, "127.0.0.1", 0)

    async def stop(self) -> None:
        await self._served.stop()

    async def _invoke(self, req: web.Request) -> web.StreamResponse:
        event = await req.json()
        self.events.append(event)
        prompt = json.loads(event["body"] or "{}").get("prompt", "")
        if prompt == "fail":
            return web.json_response(
                {"message": "Internal Server Error"},
                status=502,
                headers={"X-Amz-Function-Error": "Unhandled"},
            )
        if prompt == "slow-head":
            await asyncio.sleep(TOTAL_S + 1)
        resp = web.StreamResponse(
            status=201 if prompt == "created" else 200,
            headers={"Content-Type": "text/event-stream", "X-From-Function": "yes"},
        )
        await resp.prepare(req)
        await resp.write(b"event: start\ndata: {}\n\n")
        if prompt == "stall":
            await asyncio.sleep(IDLE_S * 4)
        if prompt == "beats":
            for _ in range(int(TOTAL_S / (IDLE_S / 2)) + 2):
                await asyncio.sleep(IDLE_S / 2)
                await resp.write(b": hb\n\n")
        await resp.write(b"event: done\ndata: {}\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, FakeAuthorizer, FakeFunction]]:
    loop = LoopThread().start()
    function = FakeFunction()
    loop.run(function.start())
    authorizer = FakeAuthorizer()
    api = RestStreamApi(
        authorizer,
        function,
        limits=RestStreamLimits(idle_timeout_s=IDLE_S, integration_timeout_s=TOTAL_S),
        cors_allow_origin="https://app.example",
    )
    loop.run(api.start())
    yield api.url, authorizer, function
    loop.run(api.stop())
    loop.run(function.stop())
    loop.stop()


def call_cut(url: str, method: str, body: Any, token: str | None, **headers: str):
    """Status, headers, body and whether the connection was cut before the body's end."""
    h = {"Content-Type": "application/json", **headers}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn, resp = request(url, method, body, h, timeout=10)
    try:
        try:
            raw, cut = resp.read(), False
        except http.client.IncompleteRead as exc:  # the chunked body never ended
            raw, cut = exc.partial, True
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw, cut
    finally:
        conn.close()


def call(url: str, method: str, body: Any, token: str | None, **headers: str):
    status, headers_, raw, cut = call_cut(url, method, body, token, **headers)
    assert not cut, raw
    return status, headers_, raw


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "Unauthorized"),
        ("bad", 401, "Unauthorized"),
        ("deny", 403, "User is not authorized to access this resource with an explicit deny"),
        ("narrow", 403, "User is not authorized to access this resource"),
        ("broken", 500, None),
    ],
)
def test_refusals_are_api_gateways_and_invoke_nothing(gateway, token, status, message):
    url, authorizer, function = gateway
    invoked, asked = len(function.events), len(authorizer.calls)
    got, headers, raw = call(url, "POST", {"prompt": "ok"}, token)
    assert (got, json.loads(raw)) == (status, {"message": message})
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert len(function.events) == invoked
    # No Authorization header: API Gateway does not even call the authorizer.
    assert len(authorizer.calls) == asked + (0 if token is None else 1)


def test_the_function_gets_a_rest_proxy_event_with_the_authorizers_context(gateway):
    url, authorizer, function = gateway
    status, headers, raw = call(
        f"{url}/0b6c9c3e-0000-4000-8000-000000000000/events?afterSeq=3",
        "GET",
        None,
        "good",
        **{"Last-Event-ID": "4"},
    )
    assert status == 200 and raw.endswith(b"event: done\ndata: {}\n\n")
    assert headers["x-from-function"] == "yes" and headers["x-amzn-requestid"]
    event = function.events[-1]
    assert event["httpMethod"] == "GET"
    assert event["resource"] == "/streams/{stream_id}/events"
    assert event["pathParameters"] == {"stream_id": "0b6c9c3e-0000-4000-8000-000000000000"}
    assert event["queryStringParameters"] == {"afterSeq": "3"}
    assert event["multiValueHeaders"]["Last-Event-ID"] == ["4"]
    assert event["requestContext"]["authorizer"]["sub"] == "alice-sub"
    assert event["requestContext"]["authorizer"]["principalId"] == "alice-sub"
    assert authorizer.calls[-1]["methodArn"].endswith(
        "/api/GET/streams/0b6c9c3e-0000-4000-8000-000000000000/events"
    )
    assert authorizer.calls[-1]["type"] == "TOKEN"


def test_the_functions_status_and_headers_are_relayed(gateway):
    url, _, _ = gateway
    status, headers, _ = call(url, "POST", {"prompt": "created"}, "good")
    assert status == 201 and headers["content-type"] == "text/event-stream"


def test_a_function_failure_before_the_first_byte_is_502(gateway):
    url, _, _ = gateway
    status, _, raw = call(url, "POST", {"prompt": "fail"}, "good")
    assert (status, json.loads(raw)) == (502, {"message": "Internal server error"})


def test_no_byte_for_the_idle_timeout_cuts_the_stream(gateway):
    url, _, _ = gateway
    started = time.monotonic()
    status, _, raw, cut = call_cut(url, "POST", {"prompt": "stall"}, "good")
    elapsed = time.monotonic() - started
    assert status == 200 and cut
    assert raw == b"event: start\ndata: {}\n\n"  # the done frame never arrives
    assert IDLE_S <= elapsed < IDLE_S * 4


def test_heartbeats_keep_a_stream_open_until_the_integration_timeout(gateway):
    url, _, _ = gateway
    started = time.monotonic()
    status, _, raw, cut = call_cut(url, "POST", {"prompt": "beats"}, "good")
    elapsed = time.monotonic() - started
    assert status == 200 and cut and raw.count(b": hb") >= int(TOTAL_S / IDLE_S)
    assert b"event: done" not in raw  # the 15-minute (here 2 s) limit cut it
    assert TOTAL_S <= elapsed < TOTAL_S + IDLE_S * 2


def test_no_answer_within_the_integration_timeout_is_504(gateway):
    url, _, _ = gateway
    status, _, raw = call(url, "POST", {"prompt": "slow-head"}, "good")
    assert (status, json.loads(raw)) == (504, {"message": "Endpoint request timed out"})


def test_a_preflight_is_answered_by_the_gateway(gateway):
    url, _, function = gateway
    invoked = len(function.events)
    conn, resp = request(
        url,
        "OPTIONS",
        None,
        {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("Access-Control-Allow-Origin") == "https://app.example"
    assert "Last-Event-ID" in resp.getheader("Access-Control-Allow-Headers")
    assert len(function.events) == invoked
