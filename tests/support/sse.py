"""A minimal Server-Sent Events reader over http.client, recording arrival times."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class SseEvent:
    at: float  # time.time() when the blank line ending the event arrived
    id: str | None
    event: str | None
    data: str | None
    comment: str | None = None

    def frame(self) -> dict[str, Any]:
        assert self.data is not None, self
        return json.loads(self.data)


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn.request(method, path, body=data, headers=headers or {})
    return conn, conn.getresponse()


def events(resp: http.client.HTTPResponse) -> Iterator[SseEvent]:
    """Events as they arrive; comments (heartbeats) are yielded with ``comment`` set."""
    fields: dict[str, str] = {}
    comment: str | None = None
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if fields or comment is not None:
                yield SseEvent(
                    time.time(), fields.get("id"), fields.get("event"), fields.get("data"), comment
                )
            fields, comment = {}, None
            continue
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        fields[name] = fields[name] + "\n" + value if name in fields else value
