"""Records and schema: the two tables, the item shapes, reading stream records and
storing and reading frames.

* streams (key ``pk``): one item per stream (``stream#<id>``) with owner, status,
  transport, connection id, cancel flag, claim, follower slots, timestamps and a
  ``generation``; and one item per user (``user#<sub>``) whose string set ``running``
  holds the ids of that user's running streams and whose map ``followers`` holds the
  user's follower slots.
* frames (key ``streamId`` + ``seq``): one item per transcript frame, written as
  frames are flushed. The hash key is ``<streamId>#<generation>``: every creation of a
  stream id gets a new random generation, so frames that outlive their record (TTL
  deletes the two tables' items independently, lazily) can never be read as another
  owner's or a later stream's.

Both carry ``expiresAt`` (epoch seconds) for DynamoDB TTL. TTL deletion is lazy on AWS
and absent in emulators, so reads treat expired items as missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.settings import Settings

RUNNING = "running"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
STATUSES = frozenset({RUNNING, DONE, ERROR, CANCELLED})
TERMINAL_STATUSES = frozenset({DONE, ERROR, CANCELLED})

# A producer cannot outlive Lambda's 15-minute maximum; a stream still marked
# running long after its last update lost its producer (crash, timeout) and must
# not hold one of its owner's slots forever.
STALE_AFTER_S = 15 * 60 + 60

# The table shapes, shared by the CDK stack and the local cloud so both create
# the same tables.
STREAMS_TABLE_SCHEMA: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "TimeToLiveAttribute": "expiresAt",
}
FRAMES_TABLE_SCHEMA: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "streamId", "KeyType": "HASH"},
        {"AttributeName": "seq", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "streamId", "AttributeType": "S"},
        {"AttributeName": "seq", "AttributeType": "N"},
    ],
    "TimeToLiveAttribute": "expiresAt",
}

_BATCH = 25  # BatchWriteItem's per-call maximum
_BATCH_RETRIES = 8

Frame = dict[str, Any]


@dataclass(frozen=True)
class StreamRef:
    """One generation of a stream id: what the frames of a stream are keyed by."""

    stream_id: str
    generation: str | None


@dataclass(frozen=True)
class StreamRecord:
    stream_id: str
    owner: str
    status: str
    transport: str
    created_at: float
    updated_at: float
    expires_at: int
    cancel_requested: bool = False
    connection_id: str | None = None
    claimed_by: str | None = None
    model: str | None = None
    last_seq: int | None = None
    error_code: str | None = None
    # Highest seq whose delivery has started (stored, then sent to connection_id).
    delivered_seq: int | None = None
    # Until when the claim of ``claimed_by`` holds (epoch s), for producers that renew one.
    lease_until: float | None = None
    # Random per creation of the id; part of the frames' key (None: created before
    # generations existed, frames keyed by the id alone).
    generation: str | None = None
    # The connection a resume is replaying stored frames to (WebSocket), until it is done.
    replaying: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def ref(self) -> StreamRef:
        return StreamRef(self.stream_id, self.generation)

    def public(self) -> dict[str, Any]:
        """The fields a stream's owner may see (REST and GraphQL answers)."""
        return {
            "streamId": self.stream_id,
            "status": self.status,
            "transport": self.transport,
            "cancelRequested": self.cancel_requested,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "lastSeq": self.last_seq,
            **({"errorCode": self.error_code} if self.error_code else {}),
        }


def frames_key(ref: StreamRef | StreamRecord) -> str:
    """The frames table's hash key of one generation of a stream."""
    return f"{ref.stream_id}#{ref.generation}" if ref.generation else ref.stream_id


def stream_key(stream_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"stream#{stream_id}"}}


def user_key(owner: str) -> dict[str, Any]:
    return {"pk": {"S": f"user#{owner}"}}


def to_record(item: dict[str, Any]) -> StreamRecord:
    def s(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def n(name: str) -> float | None:
        return float(item[name]["N"]) if name in item else None

    last_seq = n("lastSeq")
    delivered_seq = n("deliveredSeq")
    return StreamRecord(
        stream_id=item["streamId"]["S"],
        owner=item["owner"]["S"],
        status=item["status"]["S"],
        transport=item["transport"]["S"],
        created_at=n("createdAt") or 0.0,
        updated_at=n("updatedAt") or 0.0,
        expires_at=int(n("expiresAt") or 0),
        cancel_requested=item.get("cancelRequested", {}).get("BOOL", False),
        connection_id=s("connectionId"),
        claimed_by=s("claimedBy"),
        model=s("model"),
        last_seq=None if last_seq is None else int(last_seq),
        error_code=s("errorCode"),
        delivered_seq=None if delivered_seq is None else int(delivered_seq),
        lease_until=n("leaseUntil"),
        generation=s("generation"),
        replaying=s("replaying"),
    )


def is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class Records:
    """The tables' client and what reads records and frames (every method is one or two
    DynamoDB calls)."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory or self._default_client
        self._client: Any = None
        self._clock = clock
        self._sleep = sleep

    def _default_client(self) -> Any:
        import boto3  # deferred: importing boto3 costs ~100 ms of cold start

        return boto3.client("dynamodb", region_name=self._settings.region)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @property
    def _streams(self) -> str:
        return self._settings.streams_table

    @property
    def _frames(self) -> str:
        return self._settings.frames_table

    def _expires_at(self, now: float) -> int:
        return int(now) + self._settings.stream_ttl_s

    # -- records ----------------------------------------------------------------------

    def get(self, stream_id: str) -> StreamRecord | None:
        resp = self.client.get_item(
            TableName=self._streams, Key=stream_key(stream_id), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        rec = to_record(item)
        if rec.expires_at and rec.expires_at < self._clock():
            return None
        return rec

    def get_owned(self, stream_id: str, owner: str) -> StreamRecord:
        """The stream if ``owner`` owns it; otherwise NOT_FOUND (existence is not leaked)."""
        rec = self.get(stream_id)
        if rec is None or rec.owner != owner:
            raise StreamError(ErrorCode.NOT_FOUND, f"Stream {stream_id} was not found.")
        return rec

    def _update_owned(
        self, stream_id: str, owner: str, update: str, values: dict[str, Any]
    ) -> StreamRecord:
        """Update the owner's live stream; NOT_FOUND for anyone else's or a missing one."""
        try:
            resp = self.client.update_item(
                TableName=self._streams,
                Key=stream_key(stream_id),
                UpdateExpression=update,
                ConditionExpression="#owner = :owner AND expiresAt > :now",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    **values,
                    ":owner": {"S": owner},
                    ":now": {"N": str(int(self._clock()))},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise StreamError(
                    ErrorCode.NOT_FOUND, f"Stream {stream_id} was not found."
                ) from None
            raise
        return to_record(resp["Attributes"])

    def _frames_key(self, stream: StreamRef | StreamRecord | str) -> str | None:
        """The frames key of a reference or record; for a bare id, of its current
        generation (one read; None when no such stream is live)."""
        if isinstance(stream, str):
            rec = self.get(stream)
            return None if rec is None else frames_key(rec)
        return frames_key(stream)

    # -- frames -----------------------------------------------------------------------

    def append_frames(
        self, stream: StreamRef | StreamRecord | str, frames: Sequence[Frame]
    ) -> None:
        """Store transcript frames (those with a seq); one BatchWriteItem per 25."""
        key = self._frames_key(stream)
        if key is None:
            raise StreamError(ErrorCode.NOT_FOUND, "The stream was not found.")
        expires = {"N": str(self._expires_at(self._clock()))}
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "streamId": {"S": key},
                        "seq": {"N": str(frame["seq"])},
                        "frame": {"S": json.dumps(frame, separators=(",", ":"))},
                        "expiresAt": expires,
                    }
                }
            }
            for frame in frames
            if "seq" in frame
        ]
        for start in range(0, len(requests), _BATCH):
            pending: dict[str, Any] = {self._frames: requests[start : start + _BATCH]}
            for attempt in range(_BATCH_RETRIES):
                resp = self.client.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if not pending:
                    break
                # Throttled partitions: back off before resending what was left.
                self._sleep(min(0.05 * 2**attempt, 1.0))
            if pending:
                raise StreamError(ErrorCode.INTERNAL, "The stream store is busy; please retry.")

    def last_stored_seq(self, stream: StreamRef | StreamRecord | str) -> int:
        """The highest stored seq (-1 when nothing is stored)."""
        key = self._frames_key(stream)
        if key is None:
            return -1
        resp = self.client.query(
            TableName=self._frames,
            KeyConditionExpression="streamId = :s",
            ExpressionAttributeValues={":s": {"S": key}},
            ProjectionExpression="seq",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = resp.get("Items", [])
        return int(items[0]["seq"]["N"]) if items else -1

    def frames_after(
        self, stream: StreamRef | StreamRecord | str, after_seq: int, limit: int = 1000
    ) -> list[Frame]:
        """Stored frames of this generation with seq > after_seq, in order, at most
        ``limit``."""
        key = self._frames_key(stream)
        if key is None:
            return []
        frames: list[Frame] = []
        kwargs: dict[str, Any] = {
            "TableName": self._frames,
            "KeyConditionExpression": "streamId = :s AND seq > :n",
            "ExpressionAttributeValues": {":s": {"S": key}, ":n": {"N": str(after_seq)}},
            "ConsistentRead": True,
        }
        while len(frames) < limit:
            resp = self.client.query(Limit=limit - len(frames), **kwargs)
            frames.extend(json.loads(item["frame"]["S"]) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return frames
