"""A scripted stand-in for ``BedrockStreamer`` (unit tests of the producers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.bedrock import MetadataEvent, StopEvent, TextEvent
from chalicelib.errors import StreamError


class FakeModelStream:
    """Yields scripted events; ``hooks[i]`` runs before event i is returned."""

    def __init__(self, events: list[Any], hooks: dict[int, Callable[[], None]]) -> None:
        self._events = list(events)
        self._hooks = hooks
        self._i = 0
        self.closed = False

    def next_event(self, timeout: float) -> Any:
        if self.closed or self._i >= len(self._events):
            raise StopIteration
        if self._i in self._hooks:
            self._hooks[self._i]()
        event = self._events[self._i]
        self._i += 1
        if isinstance(event, StreamError):
            raise event
        return event

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeModelStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeStreamer:
    def __init__(self, events: list[Any], hooks: dict[int, Callable[[], None]] | None = None):
        self.stream = FakeModelStream(events, hooks or {})
        self.requests: list[Any] = []

    def open(self, req: Any) -> FakeModelStream:
        self.requests.append(req)
        return self.stream


def answer(*texts: str) -> list[Any]:
    return [
        *(TextEvent(t) for t in texts),
        StopEvent("end_turn"),
        MetadataEvent({"inputTokens": 3, "outputTokens": len(texts)}, {"modelLatencyMs": 5}),
    ]
