"""An ordered background sender that coalesces text into frames.

The producer (the loop reading Bedrock) hands over text and control frames and
never waits on the network: everything goes through an unbounded queue to one
thread, which assigns seq numbers, applies the ``FlushPolicy`` and calls
``deliver`` one frame at a time, in order. While a delivery is slow, text piles
up in the queue and leaves as one frame afterwards, so the delay stays bounded
by one flush interval plus one call (docs/architecture.md, performance model) instead
of growing per token.

A delivery that raises is recorded and reported back (``failure``,
``on_failure``); the sender goes on with the next frames, so a ``deliver``
that writes to the store and a socket can keep storing after the socket is gone.

What the ordered sender decides (coalesce, flush, drain before a control frame, send a
heartbeat after silence, stop) is ``SenderCore``, a pure object fed items and times, kept
apart from the thread and the deliveries as websockets keeps its protocol apart from
I/O; node_function/src/sender.mjs has the same core, and both are held to
tests/vectors/sender.json.

``PerTokenSender`` is the baseline the benchmark measures this design against
(``SENDER_MODE=per_token``): the same interface, but every model token is its own
frame, delivered before ``send_text`` returns, which is what most samples do.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameBuilder

Frame = dict[str, Any]
Deliver = Callable[[Frame], None]

_CLOSE = object()


class DeliveryFailure:
    """What went wrong delivering which frame."""

    def __init__(self, frame: Frame, error: BaseException) -> None:
        self.frame = frame
        self.error = error

    def __repr__(self) -> str:
        return f"DeliveryFailure(seq={self.frame.get('seq')}, error={self.error!r})"


class Sender(Protocol):
    """What a producer hands text and control frames to (both senders below)."""

    frames_sent: int
    heartbeats_sent: int

    def start(self) -> Sender: ...

    def send_text(self, text: str) -> None: ...

    def send_frame(self, build: Callable[[FrameBuilder], Frame]) -> None: ...

    def close(self, timeout: float | None = None) -> bool: ...

    @property
    def failure(self) -> DeliveryFailure | None: ...

    @property
    def failures(self) -> list[DeliveryFailure]: ...

    @property
    def last_seq(self) -> int: ...


class _Delivering:
    """What both senders share: delivering a frame, and recording (and reporting) a
    delivery that raised instead of letting it stop the stream."""

    def __init__(
        self,
        builder: FrameBuilder,
        deliver: Deliver,
        on_failure: Callable[[DeliveryFailure], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self._builder = builder
        self._deliver = deliver
        self._on_failure = on_failure
        self._clock = clock
        self._failures: list[DeliveryFailure] = []
        self._failures_lock = threading.Lock()
        self._last_sent = clock()
        self.frames_sent = 0
        self.heartbeats_sent = 0

    @property
    def failure(self) -> DeliveryFailure | None:
        """The first delivery failure, if any."""
        with self._failures_lock:
            return self._failures[0] if self._failures else None

    @property
    def failures(self) -> list[DeliveryFailure]:
        with self._failures_lock:
            return list(self._failures)

    @property
    def last_seq(self) -> int:
        return self._builder.last_seq

    def _emit(self, frame: Frame) -> None:
        self._last_sent = self._clock()
        try:
            self._deliver(frame)
            self.frames_sent += 1
        except Exception as exc:  # reported to the producer, never stops the stream
            self._record(DeliveryFailure(frame, exc))

    def _record(self, failure: DeliveryFailure) -> None:
        with self._failures_lock:
            self._failures.append(failure)
        if self._on_failure is not None:
            # A broken callback must not stop delivery.
            with contextlib.suppress(Exception):
                self._on_failure(failure)


CLOSE = _CLOSE  # the item that ends a sender's queue

# What SenderCore.step decides, in order: ("delta", text) to send as a delta frame,
# ("control", item) to build and send the queued control frame ``item``, ("heartbeat",
# None) to send a heartbeat.
Decision = tuple[str, Any]


class SenderCore:
    """The ordered sender's decisions, without threads, clocks or I/O.

    ``step(items, now_s)`` takes what was queued since the last step (texts, control
    items, ``CLOSE``) and returns what to send now, in order: text is coalesced by the
    flush policy; pending text is drained before a control frame and before ``CLOSE``;
    after ``heartbeat_s`` with nothing sent, a heartbeat. ``wait_s(now_s)`` is how long
    the sender may wait for new items before the next step is due.
    """

    def __init__(self, policy: FlushPolicy, heartbeat_s: float, now_s: float) -> None:
        self._policy = policy
        self._heartbeat_s = heartbeat_s
        self._last_sent = now_s
        self.closed = False

    def sent(self, now_s: float) -> None:
        """A frame left at ``now_s`` (the sender reports each delivery's start)."""
        self._last_sent = now_s

    def wait_s(self, now_s: float) -> float:
        wait = self._last_sent + self._heartbeat_s - now_s
        deadline = self._policy.deadline_ms()
        if deadline is not None:
            wait = min(wait, deadline / 1000.0 - now_s)
        return max(wait, 0.0)

    def step(self, items: list[Any], now_s: float) -> list[Decision]:
        if self.closed:
            raise RuntimeError("the sender is closed")
        now_ms = now_s * 1000.0
        out: list[Decision] = []
        text: list[str] = []
        for item in items:
            if isinstance(item, str):
                text.append(item)
                continue
            if text:
                out += [("delta", t) for t in self._policy.add("".join(text), now_ms)]
                text = []
            out += [("delta", t) for t in self._policy.drain()]
            if item is _CLOSE:
                self.closed = True
                break
            out.append(("control", item))
        else:
            chunks = self._policy.add("".join(text), now_ms) if text else self._policy.due(now_ms)
            out += [("delta", t) for t in chunks]
            if not out and now_s - self._last_sent >= self._heartbeat_s:
                out.append(("heartbeat", None))
        if out:
            self._last_sent = now_s
        return out


class OrderedSender(_Delivering):
    def __init__(
        self,
        builder: FrameBuilder,
        deliver: Deliver,
        policy: FlushPolicy,
        *,
        heartbeat_interval_s: float = 15.0,
        on_failure: Callable[[DeliveryFailure], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "ordered-sender",
    ) -> None:
        super().__init__(builder, deliver, on_failure, clock)
        self._core = SenderCore(policy, heartbeat_interval_s, clock())
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- producer side ------------------------------------------------------------------

    def start(self) -> OrderedSender:
        self._thread.start()
        return self

    def send_text(self, text: str) -> None:
        """Queue model text; it leaves coalesced in delta frames. Never blocks."""
        if self._closed:
            raise RuntimeError("sender is closed")
        if text:
            self._queue.put(text)

    def send_frame(self, build: Callable[[FrameBuilder], Frame]) -> None:
        """Queue a control frame (start, done, error); pending text goes out before it."""
        if self._closed:
            raise RuntimeError("sender is closed")
        self._queue.put(build)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver everything queued, stop the thread; False if it did not finish in time."""
        if not self._closed:
            self._closed = True
            self._queue.put(_CLOSE)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the sending thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._core.closed:
            try:
                items = [self._queue.get(timeout=self._core.wait_s(self._clock()))]
            except queue.Empty:
                items = []
            # Take everything that piled up during the last delivery, so it
            # leaves coalesced rather than one frame per token.
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for kind, value in self._core.step(items, self._clock()):
                if kind == "delta":
                    self._emit(self._builder.delta(value))
                elif kind == "heartbeat":
                    self.heartbeats_sent += 1
                    self._emit(self._builder.heartbeat())
                else:
                    try:
                        frame = value(self._builder)
                    except Exception as exc:  # a bad control frame must not kill the thread
                        self._record(DeliveryFailure({}, exc))
                        continue
                    self._emit(frame)

    def _emit(self, frame: Frame) -> None:
        self._core.sent(self._clock())
        super()._emit(frame)


class PerTokenSender(_Delivering):
    """The per-token baseline (``SENDER_MODE=per_token``): one frame per model token.

    ``send_text`` turns the text into a delta frame (split only where it would not fit
    the transport) and delivers it in the caller's thread before returning, so the loop
    reading the model waits on every call, as in the usual samples: once token rate x
    call latency exceeds 1, the delay grows with every token. ``send_frame`` delivers
    its frame the same way. Only heartbeats come from a background thread, after
    ``heartbeat_interval_s`` of silence as the protocol requires; one lock keeps every
    delivery one at a time, so seq order is delivery order.

    Failures are recorded and reported exactly as ``OrderedSender`` does.
    """

    def __init__(
        self,
        builder: FrameBuilder,
        deliver: Deliver,
        max_chars: int,
        *,
        heartbeat_interval_s: float = 15.0,
        on_failure: Callable[[DeliveryFailure], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "per-token-sender",
    ) -> None:
        super().__init__(builder, deliver, on_failure, clock)
        # Interval 0: every text is due at once; max_chars only splits what would not fit.
        self._chunks = FlushPolicy(0, max_chars)
        self._heartbeat_s = heartbeat_interval_s
        self._lock = threading.Lock()  # one delivery at a time
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._heartbeats, name=name, daemon=True)

    def start(self) -> PerTokenSender:
        self._thread.start()
        return self

    def send_text(self, text: str) -> None:
        """Deliver ``text`` as a delta frame now; returns once it was delivered."""
        if self._closed:
            raise RuntimeError("sender is closed")
        if not text:
            return
        with self._lock:
            for chunk in self._chunks.add(text, self._clock() * 1000.0):
                self._emit(self._builder.delta(chunk))

    def send_frame(self, build: Callable[[FrameBuilder], Frame]) -> None:
        """Deliver a control frame (start, done, error) now."""
        if self._closed:
            raise RuntimeError("sender is closed")
        with self._lock:
            try:
                frame = build(self._builder)
            except Exception as exc:  # reported like a failed delivery
                self._record(DeliveryFailure({}, exc))
                return
            self._emit(frame)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the heartbeats; False if a heartbeat delivery did not end in time.
        Everything else was delivered when it was sent."""
        self._closed = True
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _heartbeats(self) -> None:
        while not self._stop.wait(max(0.0, self._last_sent + self._heartbeat_s - self._clock())):
            with self._lock:
                if not self._stop.is_set() and self._clock() - self._last_sent >= self._heartbeat_s:
                    self.heartbeats_sent += 1
                    self._emit(self._builder.heartbeat())
