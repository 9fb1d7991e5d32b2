"""Reading the model into an ordered sender: the generation loop every Python producer
shares (the WebSocket generator and the AppSync worker)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from chalicelib import stream_store
from chalicelib.bedrock import BedrockStreamer, MetadataEvent, StopEvent, TextEvent
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameBuilder, max_text_chars, parse_start_request
from chalicelib.sender import Deliver, OrderedSender, PerTokenSender, Sender
from chalicelib.settings import Settings
from chalicelib.stream_store import CancelWatch, StreamStore

log = logging.getLogger(__name__)

# Stop generating this long before Lambda's own timeout (at most a sixth of the time
# left, for short timeouts), so the stream still ends with a terminal frame and the
# store is left consistent.
DEADLINE_MARGIN_S = 10.0


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
