"""Benchmark clients of the three transports, on asyncio, so one process drives up to
hundreds of concurrent streams.

Each client first gets ready (the WebSocket handshake; the AppSync real-time connection
and its subscription), then waits at ``gate.start`` so that every stream of a level
starts at the same moment, then sends its start request and records every frame with
``time.time()`` at receipt, on the same clock as the Bedrock emulator's timestamps.
Sockets stay open until ``gate.release`` (the runner reads the gateway's per-connection
counts first).
Counted per stream: transport messages carrying frames (one ``@connections`` post, one
AppSync publish, one SSE event each) and their payload bytes as received.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import aiohttp
from websockets.asyncio.client import connect

from bench.metrics import TERMINAL, Received
from tests.support.appsync import START, SUBSCRIBE, b64url

# Long enough for the per-token baseline at 100 concurrent streams; a stream that
# takes longer is reported as failed, not waited on forever.
STREAM_TIMEOUT_S = 300.0
Client = TypeVar("Client", bound=Callable[..., Awaitable[Received]])


@dataclass
class Gate:
    """Where the ``n`` clients of one level meet: ``start`` (a barrier for every client
    and the runner), ``all_ended`` (set once every client called ``end``: terminal frame
    received, or the client gave up) and ``release`` (set by the runner once it has read
    what it needs; sockets close after it)."""

    n: int
    start: asyncio.Barrier = field(init=False)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)
    _ended: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.start = asyncio.Barrier(self.n + 1)

    def end(self, stream_id: str) -> None:
        self._ended.add(stream_id)
        if len(self._ended) >= self.n:
            self.all_ended.set()


def start_request(received: Received) -> dict[str, Any]:
    return {
        "streamId": received.stream_id,
        "prompt": received.prompt,
        "maxTokens": received.max_tokens,
    }


def _take(received: Received, frame: dict[str, Any], at: float) -> bool:
    """Record one frame; True when it ends the stream."""
    if frame.get("type") == "heartbeat":
        received.heartbeats += 1
        return False
    received.frames.append((at, frame))
    return frame.get("type") in TERMINAL


def _ends_gate(client: Client) -> Client:
    """However ``client`` ends (terminal frame, refusal, error), its stream counts as
    ended at the gate, so the level never waits for a client that gave up."""

    @functools.wraps(client)
    async def run(*args: Any) -> Received:
        received: Received = args[-2]
        gate: Gate = args[-1]
        try:
            return await client(*args)
        finally:
            gate.end(received.stream_id)

    return run  # type: ignore[return-value]


@_ends_gate
async def function_url(
    session: aiohttp.ClientSession,
    ep: dict[str, Any],
    token: str,
    received: Received,
    gate: Gate,
) -> Received:
    """POST the start request to the Function URL and read the SSE response."""
    return await _sse(session, ep["functionUrl"], token, received, gate)


@_ends_gate
async def rest_stream(
    session: aiohttp.ClientSession,
    ep: dict[str, Any],
    token: str,
    received: Received,
    gate: Gate,
) -> Received:
    """POST the start request to the REST API's streaming route and read the SSE response."""
    return await _sse(session, ep["restStream"], token, received, gate)


async def _sse(
    session: aiohttp.ClientSession, url: str, token: str, received: Received, gate: Gate
) -> Received:
    await gate.start.wait()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    received.sent_at = time.time()
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S)
    async with session.post(
        url,
        data=json.dumps(start_request(received)),
        headers=headers,
        timeout=timeout,
    ) as resp:
        if resp.status != 200:
            received.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            return received
        data: str | None = None
        size = 0
        async for raw in resp.content:
            size += len(raw)
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("data:"):
                data = line[5:].lstrip(" ")
            elif line.startswith(":"):
                received.heartbeats += 1
                received.wire_bytes += size
                size = 0
            elif line == "" and data is not None:
                at = time.time()
                received.messages += 1
                received.wire_bytes += size
                size, frame, data = 0, json.loads(data), None
                if _take(received, frame, at):
                    break
    received.closed_at = time.time()
    return received


@_ends_gate
async def websocket(ep: dict[str, Any], token: str, received: Received, gate: Gate) -> Received:
    """Connect (token in the subprotocol list), send ``stream``, read frames."""
    received.connect_started = time.time()
    async with connect(
        ep["websocket"],
        subprotocols=["llm-stream.v1", f"auth.{token}"],  # type: ignore[list-item]
        compression=None,
        proxy=None,
        open_timeout=60,
        max_size=None,
    ) as ws:
        received.connected_at = time.time()
        await gate.start.wait()
        body = {"action": "stream", **start_request(received)}
        received.sent_at = time.time()
        await ws.send(json.dumps(body))
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            async for message in ws:
                at = time.time()
                raw = message if isinstance(message, str) else message.decode("utf-8")
                received.messages += 1
                received.wire_bytes += len(raw.encode("utf-8"))
                frame = json.loads(raw)
                if "seq" not in frame and frame.get("type") == "error":
                    received.error = f"refused: {frame['error']['code']}"
                    break
                if _take(received, frame, at):
                    break
        gate.end(received.stream_id)
        await gate.release.wait()
    received.closed_at = time.time()
    return received


@_ends_gate
async def appsync(
    session: aiohttp.ClientSession,
    ep: dict[str, Any],
    token: str,
    received: Received,
    gate: Gate,
) -> Received:
    """Subscribe to ``onStreamFrame(streamId)`` on the real-time endpoint, then call
    ``startStream`` and read the published frames."""
    graphql_url = ep["appsync"]["graphql"]
    auth = {"Authorization": token, "host": urlparse(graphql_url).netloc}
    received.connect_started = time.time()
    async with connect(
        ep["appsync"]["realtime"],
        subprotocols=["graphql-ws", f"header-{b64url(auth)}"],  # type: ignore[list-item]
        compression=None,
        proxy=None,
        open_timeout=60,
        max_size=None,
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        await _expect(ws, "connection_ack")
        data = json.dumps({"query": SUBSCRIBE, "variables": {"streamId": received.stream_id}})
        start = {"data": data, "extensions": {"authorization": auth}}
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": start}))
        await _expect(ws, "start_ack")
        received.connected_at = time.time()
        await gate.start.wait()
        body = {
            "query": START,
            "variables": {"input": start_request(received)},
        }
        received.sent_at = time.time()
        async with session.post(
            graphql_url,
            data=json.dumps(body),
            headers={"Authorization": token, "Content-Type": "application/json"},
        ) as resp:
            answer = await resp.json()
        received.start_answered_at = time.time()
        if answer.get("errors"):
            received.error = f"startStream failed: {answer['errors'][0].get('errorType')}"
            return received
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            async for message in ws:
                at = time.time()
                raw = message if isinstance(message, str) else message.decode("utf-8")
                msg = json.loads(raw)
                if msg.get("type") != "data":
                    continue  # ka
                received.messages += 1
                received.wire_bytes += len(raw.encode("utf-8"))
                ended = False
                for raw_frame in msg["payload"]["data"]["onStreamFrame"]["frames"]:
                    ended = _take(received, json.loads(raw_frame), at) or ended
                if ended:
                    break
        gate.end(received.stream_id)
        await gate.release.wait()
    received.closed_at = time.time()
    return received


async def _expect(ws: Any, kind: str, timeout: float = 60.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("type") == kind:
                return dict(msg)
            if msg.get("type") != "ka":
                raise RuntimeError(f"expected {kind}, got {msg.get('type')}: {msg}")
