"""One generation, for every Python producer (the WebSocket generator and the AppSync
worker): a claimed stream's model read into an ordered sender whose deliveries store
each frame and then send it on the producer's transport.

The terminal frame is stored, then the record finished (which frees the owner's slot),
and only then sent: a client that starts its next stream the moment it sees the
previous one end always finds its slot free (docs/architecture.md, stream store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib import stream_store
from chalicelib.bedrock import BedrockStreamer, MetadataEvent, StopEvent, TextEvent
from chalicelib.drain import DEADLINE_MARGIN_S, DeliveryGuard, drain_timeout_s, end_undelivered
from chalicelib.endings import terminal_status
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameBuilder, max_text_chars, parse_start_request
from chalicelib.sender import Deliver, OrderedSender, PerTokenSender, Sender
from chalicelib.settings import Settings
from chalicelib.stream_store import CancelWatch, StreamRecord, StreamStore

log = logging.getLogger(__name__)

Frame = dict[str, Any]


def coalescing_sender(
    builder: FrameBuilder, deliver: Deliver, settings: Settings, limit_bytes: int, name: str
) -> Sender:
    """A started sender whose deltas fit a transport message of ``limit_bytes``: the
    ordered coalescing sender with the flush policy of ``settings`` or, with
    ``SENDER_MODE=per_token``, the per-token baseline the benchmark compares it with.
    The one place Python producers get a sender from."""
    chars = min(settings.flush_max_chars, max_text_chars(limit_bytes))
    if settings.sender_mode == "per_token":
        return PerTokenSender(
            builder,
            deliver,
            chars,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            name=name,
        ).start()
    return OrderedSender(
        builder,
        deliver,
        FlushPolicy(settings.flush_interval_ms, chars),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        name=name,
    ).start()


def cancel_watch(
    store: StreamStore,
    stream_id: str,
    settings: Settings,
    claim: tuple[str, float] | None = None,
) -> CancelWatch:
    """The stream's cancel flag, read at twice the flush rate so a cancel takes effect
    within one flush interval (and, with ``claim``, the claim renewed as a lease)."""
    return CancelWatch(store, stream_id, settings.flush_interval_ms / 2000.0, claim=claim)


def produce(
    request: Mapping[str, Any] | None,
    *,
    settings: Settings,
    streamer: BedrockStreamer,
    sender: Sender,
    watch: CancelWatch,
    remaining_ms: int,
    stream_id: str,
) -> tuple[str, str | None]:
    """Run the model for ``request`` into ``sender`` until it ends, fails, is cancelled
    or the deadline nears; queues the terminal frame and returns (status, error code).

    The caller has queued the ``start`` frame. ``watch`` is asked every half flush
    interval, between model events, so a cancel takes effect within one flush interval
    (half an interval, plus two flag reads) and closes the model stream.
    """
    poll_s = settings.flush_interval_ms / 2000.0
    remaining_s = remaining_ms / 1000.0
    margin_s = min(DEADLINE_MARGIN_S, remaining_s / 6)
    deadline = time.monotonic() + max(0.0, remaining_s - margin_s)
    stop_reason = "end_turn"
    usage: dict[str, int] | None = None
    metrics: dict[str, int] | None = None
    try:
        req = parse_start_request(request, settings.limits)
        with streamer.open(req) as stream:
            ended = False
            while not ended:
                if watch.cancelled():
                    stop_reason = "cancelled"
                    break  # leaving the with-block closes the model stream
                if time.monotonic() > deadline:
                    raise StreamError(ErrorCode.MODEL_TIMEOUT, "The answer took too long.")
                # Take model events for poll_s from the end of the last check, then check
                # again. Timed from the end: a flag read that is slow (a loaded store) then
                # neither slows reading the model to one event per read nor makes the
                # reads follow each other back to back.
                batch_ends = time.monotonic() + poll_s
                while True:
                    try:
                        event = stream.next_event(max(0.0, batch_ends - time.monotonic()))
                    except StopIteration:
                        ended = True
                        break
                    if isinstance(event, TextEvent):
                        sender.send_text(event.text)
                    elif isinstance(event, StopEvent):
                        stop_reason = event.stop_reason
                    elif isinstance(event, MetadataEvent):
                        usage, metrics = event.usage, event.metrics
                    if time.monotonic() >= batch_ends:
                        break
    except StreamError as err:
        sender.send_frame(lambda b, e=err: b.error(e))
        return stream_store.ERROR, err.code.value
    except Exception:
        log.exception("generation failed", extra={"streamId": stream_id})
        err = StreamError(ErrorCode.INTERNAL, "The stream failed.")
        sender.send_frame(lambda b, e=err: b.error(e))
        return stream_store.ERROR, err.code.value
    sender.send_frame(lambda b: b.done(stop_reason, usage, metrics))
    status = stream_store.CANCELLED if stop_reason == "cancelled" else stream_store.DONE
    return status, None


class StoredDelivery:
    """What the sender calls for each frame: store it (transcript frames), finish the
    record when it is the terminal one, then ``send`` it. Subclasses send it on their
    transport; ``stored`` is their hook between storing and sending.

    Runs through a ``DeliveryGuard``: once the stream is no longer this producer's
    (claim lost, or the producer stopped it to end the stream itself), nothing more is
    stored or sent.
    """

    # Whether the ``start`` frame must reach the transport before the model is called
    # (AppSync: a publish that fails then fails the SQS message, and a retry starts
    # cleanly), or may be repaired from the store like any other frame (WebSocket).
    start_must_arrive = False

    def __init__(self, store: StreamStore, record: StreamRecord) -> None:
        self.store = store
        self.record = record
        self.guard = DeliveryGuard()
        # (status, error code) once the terminal frame is stored and the record finished.
        self.ended: tuple[str, str | None] | None = None
        self.sent = 0
        self.failed = 0

    def __call__(self, frame: Frame) -> None:
        self.guard.run(lambda: self._deliver(frame))

    def _deliver(self, frame: Frame) -> None:
        finished: StreamRecord | None = None
        if "seq" in frame:  # transcript frames are stored; heartbeats only sent
            self.store.append_frames(self.record, [frame])
            end = terminal_status(frame)
            if end is not None:
                status, code = end
                finished = self.store.finish(
                    self.record.stream_id,
                    self.record.owner,
                    status,
                    last_seq=frame["seq"],
                    error_code=code,
                    generation=self.record.generation,
                )
                self.ended = end
            self.stored(frame, finished)
        try:
            self.send(frame)
        except Exception:
            self.failed += 1
            raise
        self.sent += 1

    def stored(self, frame: Frame, finished: StreamRecord | None) -> None:
        """Called after ``frame`` was stored (with the finished record for a terminal
        frame), before it is sent."""

    def send(self, frame: Frame) -> None:
        raise NotImplementedError

    def send_quietly(self, frame: Frame, finished: StreamRecord) -> None:
        """Send a terminal frame someone else stored (the stream was ended for this
        producer); failures are logged, the frame is in the store for repair."""
        try:
            self.stored(frame, finished)
            self.send(frame)
        except Exception as exc:
            log.warning(
                "terminal frame not sent",
                extra={"streamId": self.record.stream_id, "errorType": type(exc).__name__},
            )


def generate_claimed(
    record: StreamRecord,
    worker_id: str,
    request: Mapping[str, Any] | None,
    *,
    settings: Settings,
    streamer: BedrockStreamer,
    delivery: StoredDelivery,
    limit_bytes: int,
    remaining_ms: Callable[[], int],
) -> str:
    """Produce a stream this worker claimed (under ``settings.claim_lease_s``); returns
    its final status.

    Where the delivery requires it (``start_must_arrive``), the ``start`` frame is
    delivered before the model is called: if the transport cannot take it, the claim is
    released and the error raised without spending tokens, so a retry starts cleanly;
    otherwise it is the sender's first frame. Then the model is read into the ordered
    sender (the claim renewed as a lease by the cancel watch and, while it drains, by the
    guard); a sender
    that cannot drain before the Lambda ends, or a terminal frame that could not be
    stored, ends the stream with an error frame after what the store holds.
    """
    store = delivery.store
    stream_id = record.stream_id
    builder = FrameBuilder(stream_id)
    if delivery.start_must_arrive:
        try:
            delivery(builder.start(settings.model_id))
        except Exception:
            store.release_claim(stream_id, worker_id)
            raise
    watch = cancel_watch(store, stream_id, settings, claim=(worker_id, settings.claim_lease_s))
    delivery.guard.watch = watch
    sender = coalescing_sender(builder, delivery, settings, limit_bytes, f"sender-{stream_id[:8]}")
    if not delivery.start_must_arrive:
        # Stored, then sent like every other frame: a send that fails is left to the
        # client's gap repair from the store, and the stream goes on.
        sender.send_frame(lambda b: b.start(settings.model_id))
    try:
        status, _ = produce(
            request,
            settings=settings,
            streamer=streamer,
            sender=sender,
            watch=watch,
            remaining_ms=remaining_ms(),
            stream_id=stream_id,
        )
    finally:
        # A slow transport holds frames in the sender: wait for them as long as the
        # Lambda can, keeping half the deadline margin for the last writes.
        drained = sender.close(timeout=drain_timeout_s(remaining_ms()))
    if not drained or delivery.ended is None:
        ended = end_undelivered(store, stream_id, delivery.guard)
        if ended is not None:
            delivery.send_quietly(*ended)
        # The terminal frame may have been stored (and the record finished) while the
        # sender was being stopped: the stream then ended as produced.
        status = stream_store.ERROR if ended is not None or delivery.ended is None else status
    log.info(
        "stream finished",
        extra={
            "streamId": stream_id,
            "status": status,
            "frames": builder.last_seq + 1,
            "sent": delivery.sent,
            "sendFailures": delivery.failed,
            "claimLost": watch.claim_lost,
            "dropped": delivery.guard.dropped,
        },
    )
    return status
