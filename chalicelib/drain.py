"""Draining a producer's sender before its Lambda ends (docs/architecture.md, stream
store: every stream ends with one terminal frame and the store stays consistent).

A slow or throttled transport (``@connections`` backing off, AppSync answering slowly)
keeps frames in the ordered sender after the model has finished. The producer waits for
them as long as its Lambda allows (``drain_timeout_s``). Every delivery goes through a
``DeliveryGuard``, which keeps the producer's claim alive while the sender drains and
lets the producer stop deliveries before it ends a stream itself. A stream whose frames
could not all be delivered in time ends with an error frame after those stored
(``end_undelivered``), so its record never claims frames the store does not hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.endings import ABANDONED, end_with_error
from chalicelib.stream_store import CancelWatch, StreamRecord, StreamStore

log = logging.getLogger(__name__)

# Stop generating this long before Lambda's own timeout (at most a sixth of the time
# left, for short timeouts), so the stream still ends with a terminal frame and the
# store is left consistent.
DEADLINE_MARGIN_S = 10.0


def drain_timeout_s(remaining_ms: int) -> float:
    """How long a producer waits for its sender: what is left before the Lambda's
    timeout, less half the deadline margin, kept for the final writes."""
    remaining_s = remaining_ms / 1000.0
    return max(1.0, remaining_s - min(DEADLINE_MARGIN_S, remaining_s / 6) / 2)


class DeliveryGuard:
    """Runs one delivery at a time, only while the stream is still this producer's:
    not stopped (the producer gave up waiting and ends the stream itself) and, with a
    ``watch``, its claim held (renewed here too, so a draining sender keeps it)."""

    def __init__(self) -> None:
        self.watch: CancelWatch | None = None
        self.dropped = 0
        self._lock = threading.Lock()
        self._stopped = False

    def run(self, deliver: Callable[[], None]) -> bool:
        """``deliver()`` unless the stream is no longer ours; False when dropped."""
        with self._lock:
            if self._stopped or (self.watch is not None and not self.watch.keep_claim()):
                # Someone else ends this stream with a terminal frame at the next seq:
                # delivering more would overwrite or follow that frame.
                self.dropped += 1
                return False
            deliver()
            return True

    def stop(self, timeout: float) -> bool:
        """Deliver nothing more. True once no delivery is under way either; False if
        one is still stuck after ``timeout`` seconds."""
        acquired = self._lock.acquire(timeout=timeout)
        self._stopped = True
        if acquired:
            self._lock.release()
        return acquired


def end_undelivered(
    store: StreamStore, stream_id: str, guard: DeliveryGuard
) -> tuple[dict[str, Any], StreamRecord] | None:
    """The sender did not drain in time (the Lambda is about to end), or its terminal
    frame could not be stored: stop it, then end the stream with an error frame after
    the frames the store holds. Returns that frame and the finished record (for the
    caller to send where it can), or None if the stream was not ended here: a delivery
    still stuck leaves it to its claim's lease, whose lapse lets the next reader end it
    the same way."""
    if not guard.stop(DEADLINE_MARGIN_S / 4):
        log.error("sender stuck at the deadline", extra={"streamId": stream_id})
        return None
    record = store.get(stream_id)
    if record is None or record.terminal:
        return None  # ended as produced, or by someone who took over
    log.error("sender did not drain", extra={"streamId": stream_id})
    return end_with_error(store, record, ABANDONED)
