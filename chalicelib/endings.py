"""How streams end: the terminal errors the store's lifecycle is given for streams whose
producer is gone, the frames that carry them, and what a terminal frame means for the
stream's record. The store itself knows no frames; these builders are passed to it."""

from __future__ import annotations

from typing import Any

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder
from chalicelib.store.lifecycle import ErrorFrame
from chalicelib.store.records import CANCELLED, DONE, ERROR, StreamRecord
from chalicelib.stream_store import StreamStore

# What readers and retries see of a stream whose producer died.
ABANDONED = StreamError(
    ErrorCode.INTERNAL, "The stream stopped unexpectedly; start it again.", retryable=True
)
# What a stream gets whose frames could not all be delivered (or queued job given up).
UNDELIVERABLE = StreamError(
    ErrorCode.INTERNAL, "The stream could not be delivered; start it again.", retryable=True
)


def error_frame(err: StreamError) -> ErrorFrame:
    """The builder of a stream's terminal ``error`` frame for ``err`` at a seq."""
    return lambda record, seq: FrameBuilder(record.stream_id, seq).error(err)


def terminal_status(frame: dict[str, Any]) -> tuple[str, str | None] | None:
    """(status, error code) a transcript frame ends its stream with; None for others."""
    if frame.get("type") == "done":
        return (CANCELLED if frame.get("stopReason") == "cancelled" else DONE), None
    if frame.get("type") == "error" and "seq" in frame:
        return ERROR, str(frame["error"]["code"])
    return None


def end_with_error(
    store: StreamStore, record: StreamRecord, err: StreamError
) -> tuple[dict[str, Any], StreamRecord] | None:
    """End a running stream with ``err`` as its terminal frame after what is stored."""
    return store.end_with_error(record, error_frame(err), err.code.value)


def end_if_abandoned(store: StreamStore, record: StreamRecord) -> StreamRecord:
    """End the stream if its producer is gone (see ``StreamStore.abandoned``)."""
    return store.end_if_abandoned(record, error_frame(ABANDONED), ABANDONED.code.value)
