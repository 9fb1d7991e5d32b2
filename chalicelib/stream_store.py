"""The stream store of docs/architecture.md (stream store), on DynamoDB: one object with
every store operation, put together from the modules of ``chalicelib.store`` (records
and schema, lifecycle, leases and cursor, follower slots, cancel watch)."""

from __future__ import annotations

from chalicelib.store.cancel import CancelWatch
from chalicelib.store.followers import Followers
from chalicelib.store.leases import ClaimLost, Leases
from chalicelib.store.lifecycle import ErrorFrame, Lifecycle, new_generation
from chalicelib.store.records import (
    CANCELLED,
    DONE,
    ERROR,
    FRAMES_TABLE_SCHEMA,
    RUNNING,
    STALE_AFTER_S,
    STATUSES,
    STREAMS_TABLE_SCHEMA,
    TERMINAL_STATUSES,
    StreamRecord,
    StreamRef,
    frames_key,
)

__all__ = [
    "CANCELLED",
    "DONE",
    "ERROR",
    "FRAMES_TABLE_SCHEMA",
    "RUNNING",
    "STALE_AFTER_S",
    "STATUSES",
    "STREAMS_TABLE_SCHEMA",
    "TERMINAL_STATUSES",
    "CancelWatch",
    "ClaimLost",
    "ErrorFrame",
    "StreamRecord",
    "StreamRef",
    "StreamStore",
    "frames_key",
    "new_generation",
]


class StreamStore(Lifecycle, Leases, Followers):
    """Stream records, frames, claims and follower slots. Every method is one or two
    DynamoDB calls."""
