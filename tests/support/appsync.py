"""A small AppSync client for end-to-end tests: GraphQL over HTTP with a user-pool
token, and the real-time protocol over a plain ``websockets`` connection (header
subprotocol auth, as Amplify sends it)."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from websockets.sync.client import connect

START = (
    "mutation Start($input: StartStreamInput!) "
    "{ startStream(input: $input) { streamId status created } }"
)
CANCEL = (
    "mutation Cancel($streamId: ID!) "
    "{ cancelStream(streamId: $streamId) { streamId status cancelRequested } }"
)
FRAMES = (
    "query Frames($streamId: ID!, $afterSeq: Int) "
    "{ streamFrames(streamId: $streamId, afterSeq: $afterSeq) "
    "{ stream { status lastSeq errorCode } frames hasMore } }"
)
SUBSCRIBE = (
    "subscription OnFrame($streamId: ID!) "
    "{ onStreamFrame(streamId: $streamId) { streamId owner frames } }"
)
PUBLISH = (
    "mutation Publish($streamId: ID!, $owner: ID!, $frames: [AWSJSON!]!) "
    "{ publishFrames(streamId: $streamId, owner: $owner, frames: $frames) "
    "{ streamId owner frames } }"
)


def graphql(url: str, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The JSON answer (``data`` and/or ``errors``), with ``status`` added."""
    req = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Authorization": token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return {"status": resp.status, **json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read() or b"{}")}


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class Realtime:
    """One real-time connection; ``subscribe`` then ``frames``."""

    def __init__(self, graphql_url: str, realtime_url: str, token: str) -> None:
        self.auth = {"Authorization": token, "host": urlparse(graphql_url).netloc}
        self._exit = contextlib.ExitStack()
        self.ws = self._exit.enter_context(
            connect(
                realtime_url,
                subprotocols=["graphql-ws", f"header-{b64url(self.auth)}"],
                open_timeout=10,
            )
        )
        self.ws.send(json.dumps({"type": "connection_init"}))
        ack = self.next_message(10)
        assert ack["type"] == "connection_ack", ack
        self.connection_timeout_ms = ack["payload"]["connectionTimeoutMs"]
        self._n = 0

    def next_message(self, timeout: float) -> dict[str, Any]:
        """The next message other than ``ka``; TimeoutError if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            message = json.loads(raw)
            if message.get("type") != "ka":
                return message

    def subscribe(self, stream_id: str) -> str:
        """Start ``onStreamFrame(streamId)`` and wait for its ``start_ack``."""
        self._n += 1
        sub_id = f"sub-{self._n}"
        data = json.dumps({"query": SUBSCRIBE, "variables": {"streamId": stream_id}})
        self.ws.send(
            json.dumps(
                {
                    "id": sub_id,
                    "type": "start",
                    "payload": {"data": data, "extensions": {"authorization": self.auth}},
                }
            )
        )
        answer = self.next_message(10)
        assert answer == {"type": "start_ack", "id": sub_id}, answer
        return sub_id

    def frames(self, timeout: float = 20.0) -> list[tuple[float, dict[str, Any]]]:
        """(receive time, frame) of every frame until a terminal one; heartbeats dropped."""
        got: list[tuple[float, dict[str, Any]]] = []
        while True:
            message = self.next_message(timeout)
            assert message["type"] == "data", message
            at = time.time()
            batch = message["payload"]["data"]["onStreamFrame"]
            for raw in batch["frames"]:
                frame = json.loads(raw)
                if frame["type"] == "heartbeat":
                    continue
                got.append((at, frame))
                if frame["type"] in ("done", "error"):
                    return got

    def close(self) -> None:
        self._exit.close()

    def __enter__(self) -> Realtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
