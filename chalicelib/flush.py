"""The coalescing policy of docs/protocol.md as a pure object.

Input: text events with timestamps. Output: the texts to send now. The first
text goes out at once; after that text is held until ``interval_ms`` has passed
since the last flush or ``max_chars`` are pending. No chunk is ever longer than
``max_chars``, which callers set so that a frame always fits the transport.
"""

from __future__ import annotations


class FlushPolicy:
    def __init__(self, interval_ms: float, max_chars: int) -> None:
        if interval_ms < 0:
            raise ValueError("interval_ms must not be negative")
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self.interval_ms = interval_ms
        self.max_chars = max_chars
        self._pending = ""
        self._last_flush_ms: float | None = None

    @property
    def pending(self) -> str:
        return self._pending

    def deadline_ms(self) -> float | None:
        """When pending text becomes due (None when nothing is pending)."""
        if not self._pending:
            return None
        if self._last_flush_ms is None:
            return float("-inf")
        return self._last_flush_ms + self.interval_ms

    def add(self, text: str, now_ms: float) -> list[str]:
        """Take text produced at ``now_ms``; return the chunks to send now."""
        self._pending += text
        out = self._full_chunks()
        if self._pending and self._is_due(now_ms):
            out.append(self._pending)
            self._pending = ""
        if out:
            self._last_flush_ms = now_ms
        return out

    def due(self, now_ms: float) -> list[str]:
        """Chunks that became due with the passing of time alone."""
        if not self._pending or not self._is_due(now_ms):
            return []
        return self.add("", now_ms)

    def drain(self) -> list[str]:
        """Everything pending, in chunks (end of stream, or before a control frame)."""
        out = self._full_chunks()
        if self._pending:
            out.append(self._pending)
            self._pending = ""
        return out

    def _is_due(self, now_ms: float) -> bool:
        return self._last_flush_ms is None or now_ms - self._last_flush_ms >= self.interval_ms

    def _full_chunks(self) -> list[str]:
        out = []
        while len(self._pending) >= self.max_chars:
            out.append(self._pending[: self.max_chars])
            self._pending = self._pending[self.max_chars :]
        return out
