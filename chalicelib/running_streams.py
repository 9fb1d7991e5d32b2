"""``GET /streams?status=running``: the caller's running streams (docs/protocol.md).

The user item ``user#<sub>`` holds the ids of the owner's running streams (its string set
``running``, the per-user cap's slots); each id is read back through ``StreamStore.get``
so only streams that still exist, belong to the caller and are still running are listed.
A stream whose producer is gone is ended on the way (as ``GET /streams/{id}`` does), so
it is not offered for cancelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.endings import end_if_abandoned
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.stream_store import RUNNING, StreamStore

# One page is enough: the per-user cap keeps the set small (3 by default).
MAX_LISTED = 100


def status_query(query: Mapping[str, str] | None) -> str:
    """``?status=`` of the list; only ``running`` is offered (and is the default)."""
    status = (query or {}).get("status") or RUNNING
    if status != RUNNING:
        raise StreamError(ErrorCode.BAD_REQUEST, f"status must be {RUNNING!r}, got {status[:40]!r}")
    return status


def running_ids(store: StreamStore, table: str, owner: str) -> list[str]:
    """The stream ids in the owner's ``running`` set (sorted: the set has no order)."""
    resp = store.client.get_item(
        TableName=table,
        Key={"pk": {"S": f"user#{owner}"}},
        ConsistentRead=True,
        ProjectionExpression="#running",
        ExpressionAttributeNames={"#running": "running"},
    )
    return sorted(resp.get("Item", {}).get("running", {}).get("SS", []))[:MAX_LISTED]


def list_running(
    store: StreamStore, table: str, owner: str, query: Mapping[str, str] | None
) -> dict[str, Any]:
    """``{"streams": [{streamId, status, transport, createdAt}]}``, oldest first."""
    status_query(query)
    streams = []
    for stream_id in running_ids(store, table, owner):
        record = store.get(stream_id)
        if record is None or record.owner != owner:
            continue
        record = end_if_abandoned(store, record)
        if record.status != RUNNING:
            continue
        streams.append(
            {
                "streamId": record.stream_id,
                "status": record.status,
                "transport": record.transport,
                "createdAt": record.created_at,
            }
        )
    streams.sort(key=lambda s: (s["createdAt"], s["streamId"]))
    return {"streams": streams}
