"""The stream store of docs/architecture.md, stream store, on DynamoDB.

Two tables:

* streams (key ``pk``): one item per stream (``stream#<id>``) with owner, status,
  transport, connection id, cancel flag, claim and timestamps; and one item per
  user (``user#<sub>``) whose string set ``running`` holds the ids of that user's
  running streams. Adding to that set under a size condition, in the same
  transaction that creates the stream, is what makes the per-user cap atomic.
* frames (key ``streamId`` + ``seq``): one item per transcript frame, written as
  frames are flushed (one write per flush, never per token).

Both carry ``expiresAt`` (epoch seconds) for DynamoDB TTL. TTL deletion is lazy
on AWS and absent in emulators, so reads treat expired items as missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder
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

# What readers and retries see of a stream whose producer died.
ABANDONED = StreamError(
    ErrorCode.INTERNAL, "The stream stopped unexpectedly; start it again.", retryable=True
)

_BATCH = 25  # BatchWriteItem's per-call maximum
_BATCH_RETRIES = 8


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

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

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


def _stream_key(stream_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"stream#{stream_id}"}}


def _user_key(owner: str) -> dict[str, Any]:
    return {"pk": {"S": f"user#{owner}"}}


def _record(item: dict[str, Any]) -> StreamRecord:
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
    )


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class StreamStore:
    """Stream records and frames. Every method is one or two DynamoDB calls."""

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

    # -- create and the per-user cap ------------------------------------------------

    def create(
        self,
        stream_id: str,
        owner: str,
        transport: str,
        *,
        connection_id: str | None = None,
        model: str | None = None,
    ) -> tuple[StreamRecord, bool]:
        """Create a running stream owned by ``owner``; returns (record, created).

        The same owner creating the same id again gets the existing record and
        ``created=False`` (idempotent retries). Another owner's id is refused.
        A user already running ``max_streams_per_user`` streams gets
        ``TOO_MANY_STREAMS``.
        """
        for attempt in range(2):
            try:
                return self._create_once(stream_id, owner, transport, connection_id, model), True
            except _StreamExists:
                existing = self.get(stream_id)
                if existing is None:
                    # It expired between our write and read; nothing to return.
                    raise StreamError(ErrorCode.INTERNAL, "Please retry.") from None
                if existing.owner != owner:
                    raise StreamError(
                        ErrorCode.FORBIDDEN, "This streamId is already used by another stream."
                    ) from None
                return existing, False
            except _CapReached:
                if attempt == 0 and self._release_dead_slots(owner):
                    continue
                cap = self._settings.limits.max_streams_per_user
                raise StreamError(
                    ErrorCode.TOO_MANY_STREAMS,
                    f"At most {cap} streams may run at once per user; "
                    "wait for one to finish or cancel one.",
                ) from None
        raise AssertionError("unreachable")

    def _create_once(
        self,
        stream_id: str,
        owner: str,
        transport: str,
        connection_id: str | None,
        model: str | None,
    ) -> StreamRecord:
        now = self._clock()
        item: dict[str, Any] = {
            **_stream_key(stream_id),
            "streamId": {"S": stream_id},
            "owner": {"S": owner},
            "status": {"S": RUNNING},
            "transport": {"S": transport},
            "cancelRequested": {"BOOL": False},
            "createdAt": {"N": repr(now)},
            "updatedAt": {"N": repr(now)},
            "expiresAt": {"N": str(self._expires_at(now))},
        }
        if connection_id:
            item["connectionId"] = {"S": connection_id}
        if model:
            item["model"] = {"S": model}
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._streams,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._streams,
                            "Key": _user_key(owner),
                            "UpdateExpression": "ADD #running :sid SET expiresAt = :exp",
                            "ConditionExpression": "attribute_not_exists(#running) "
                            "OR size(#running) < :cap",
                            "ExpressionAttributeNames": {"#running": "running"},
                            "ExpressionAttributeValues": {
                                ":sid": {"SS": [stream_id]},
                                ":cap": {"N": str(self._settings.limits.max_streams_per_user)},
                                ":exp": {"N": str(self._expires_at(now))},
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise _StreamExists from None
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                raise _CapReached from None
            raise
        return _record(item)

    def _release_dead_slots(self, owner: str) -> bool:
        """Drop slots of streams that ended or lost their producer; True if any.

        A producer is lost when nothing updated its stream for a Lambda's lifetime, or
        its claim's lease lapsed. Such a stream keeps its status until a reader or a
        redelivery ends it with a terminal frame (``end_if_abandoned``), which also
        publishes it where the transport can.
        """
        resp = self.client.get_item(
            TableName=self._streams, Key=_user_key(owner), ConsistentRead=True
        )
        running = resp.get("Item", {}).get("running", {}).get("SS", [])
        now = self._clock()
        dead = []
        for sid in running:
            rec = self.get(sid)
            if (
                rec is None
                or rec.terminal
                or now - rec.updated_at > STALE_AFTER_S
                or self.claim_lapsed(rec)
            ):
                dead.append(sid)
        if dead:
            self._release_slots(owner, dead)
        return bool(dead)

    def _release_slots(self, owner: str, stream_ids: list[str]) -> None:
        self.client.update_item(
            TableName=self._streams,
            Key=_user_key(owner),
            UpdateExpression="DELETE #running :sids",
            ExpressionAttributeNames={"#running": "running"},
            ExpressionAttributeValues={":sids": {"SS": stream_ids}},
        )

    def running_count(self, owner: str) -> int:
        resp = self.client.get_item(
            TableName=self._streams, Key=_user_key(owner), ConsistentRead=True
        )
        return len(resp.get("Item", {}).get("running", {}).get("SS", []))

    # -- reads ----------------------------------------------------------------------

    def get(self, stream_id: str) -> StreamRecord | None:
        resp = self.client.get_item(
            TableName=self._streams, Key=_stream_key(stream_id), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        rec = _record(item)
        if rec.expires_at and rec.expires_at < self._clock():
            return None
        return rec

    def get_owned(self, stream_id: str, owner: str) -> StreamRecord:
        """The stream if ``owner`` owns it; otherwise NOT_FOUND (existence is not leaked)."""
        rec = self.get(stream_id)
        if rec is None or rec.owner != owner:
            raise StreamError(ErrorCode.NOT_FOUND, f"Stream {stream_id} was not found.")
        return rec

    def is_cancel_requested(self, stream_id: str) -> bool:
        resp = self.client.get_item(
            TableName=self._streams,
            Key=_stream_key(stream_id),
            ConsistentRead=True,
            ProjectionExpression="cancelRequested",
        )
        return bool(resp.get("Item", {}).get("cancelRequested", {}).get("BOOL", False))

    # -- producer side ----------------------------------------------------------------

    def claim(self, stream_id: str, worker_id: str, lease_s: float | None = None) -> bool:
        """Take the right to produce a stream; False if it is claimed or finished.

        With ``lease_s`` the claim lapses unless renewed (``renew_claim``) within that
        time, which lets a later worker tell a dead producer from a live one.
        """
        now = self._clock()
        update = "SET claimedBy = :w, updatedAt = :now"
        values: dict[str, Any] = {
            ":w": {"S": worker_id},
            ":now": {"N": repr(now)},
            ":running": {"S": RUNNING},
        }
        if lease_s is not None:
            update += ", leaseUntil = :lease"
            values[":lease"] = {"N": repr(now + lease_s)}
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=_stream_key(stream_id),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk) AND #status = :running "
                "AND attribute_not_exists(claimedBy)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    def renew_claim(self, stream_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend ``worker_id``'s claim by ``lease_s``; returns whether a cancel was
        requested. Raises ``ClaimLost`` when the stream no longer runs under this claim
        (someone took its producer for dead and ended it)."""
        try:
            resp = self.client.update_item(
                TableName=self._streams,
                Key=_stream_key(stream_id),
                UpdateExpression="SET leaseUntil = :lease",
                ConditionExpression="claimedBy = :w AND #status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":w": {"S": worker_id},
                    ":running": {"S": RUNNING},
                    ":lease": {"N": repr(self._clock() + lease_s)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise ClaimLost(stream_id) from None
            raise
        return bool(resp["Attributes"].get("cancelRequested", {}).get("BOOL", False))

    def release_claim(self, stream_id: str, worker_id: str) -> bool:
        """Give up ``worker_id``'s claim before producing anything, so a retry can claim."""
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=_stream_key(stream_id),
                UpdateExpression="REMOVE claimedBy, leaseUntil",
                ConditionExpression="claimedBy = :w AND #status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":w": {"S": worker_id}, ":running": {"S": RUNNING}},
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    def claim_lapsed(self, record: StreamRecord) -> bool:
        """The stream is claimed under a lease nobody renewed in time: its producer died."""
        return (
            record.claimed_by is not None
            and record.lease_until is not None
            and self._clock() > record.lease_until
        )

    def attach(self, stream_id: str, owner: str, connection_id: str) -> StreamRecord:
        """Point the owner's stream at a new connection (resume from another socket).

        Returns the record as of the switch. Frames with seq up to its
        ``delivered_seq`` went (or were going) to the previous connection and are
        the caller's to replay; later frames go to ``connection_id``, because the
        producer reads the connection in the same write that advances
        ``deliveredSeq`` (see ``mark_delivered``). So nothing is lost or sent twice.
        """
        return self._update_owned(
            stream_id, owner, "SET connectionId = :c", {":c": {"S": connection_id}}
        )

    def mark_delivered(self, stream_id: str, seq: int) -> str | None:
        """Record that frame ``seq`` (already stored) is being delivered; returns the
        connection to deliver it to, read atomically with the update."""
        resp = self.client.update_item(
            TableName=self._streams,
            Key=_stream_key(stream_id),
            UpdateExpression="SET deliveredSeq = :seq",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":seq": {"N": str(seq)}},
            ReturnValues="ALL_NEW",
        )
        return resp["Attributes"].get("connectionId", {}).get("S")

    def append_frames(self, stream_id: str, frames: Sequence[dict[str, Any]]) -> None:
        """Store transcript frames (those with a seq); one BatchWriteItem per 25."""
        expires = {"N": str(self._expires_at(self._clock()))}
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "streamId": {"S": stream_id},
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

    def last_stored_seq(self, stream_id: str) -> int:
        """The highest stored seq (-1 when nothing is stored)."""
        resp = self.client.query(
            TableName=self._frames,
            KeyConditionExpression="streamId = :s",
            ExpressionAttributeValues={":s": {"S": stream_id}},
            ProjectionExpression="seq",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = resp.get("Items", [])
        return int(items[0]["seq"]["N"]) if items else -1

    def end_if_abandoned(self, record: StreamRecord) -> StreamRecord:
        """End a stream whose producer cannot be alive any more with an error frame.

        No update for longer than a Lambda can run means the producer crashed or
        was never started (a lost invoke, an exhausted queue); a lapsed claim lease
        means its producer died. Readers get a terminal frame instead of waiting
        forever, and the owner's slot is freed.
        """
        if record.terminal:
            return record
        if self._clock() - record.updated_at <= STALE_AFTER_S and not self.claim_lapsed(record):
            return record
        self.end_with_error(record, ABANDONED)
        return self.get(record.stream_id) or record

    def end_with_error(self, record: StreamRecord, err: StreamError) -> dict[str, Any] | None:
        """End a running stream with a terminal error frame after its stored frames.

        Returns the frame if this call ended the stream; None if it had already ended
        (``finish`` is conditional on "running", so of two racing callers one appends).
        """
        seq = self.last_stored_seq(record.stream_id) + 1
        if not self.finish(
            record.stream_id, record.owner, ERROR, last_seq=seq, error_code=err.code.value
        ):
            return None
        frame = FrameBuilder(record.stream_id, seq).error(err)
        self.append_frames(record.stream_id, [frame])
        return frame

    def frames_after(self, stream_id: str, after_seq: int, limit: int = 1000) -> list[dict]:
        """Stored frames with seq > after_seq, in order, at most ``limit``."""
        frames: list[dict] = []
        kwargs: dict[str, Any] = {
            "TableName": self._frames,
            "KeyConditionExpression": "streamId = :s AND seq > :n",
            "ExpressionAttributeValues": {":s": {"S": stream_id}, ":n": {"N": str(after_seq)}},
            "ConsistentRead": True,
        }
        while len(frames) < limit:
            resp = self.client.query(Limit=limit - len(frames), **kwargs)
            frames.extend(json.loads(item["frame"]["S"]) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return frames

    def finish(
        self,
        stream_id: str,
        owner: str,
        status: str,
        *,
        last_seq: int,
        error_code: str | None = None,
    ) -> bool:
        """Mark a running stream terminal and free its owner's slot; False if already ended."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal status: {status}")
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":running": {"S": RUNNING},
            ":now": {"N": repr(self._clock())},
            ":seq": {"N": str(last_seq)},
        }
        update = "SET #status = :status, updatedAt = :now, lastSeq = :seq"
        if error_code:
            update += ", errorCode = :code"
            values[":code"] = {"S": error_code}
        finished = True
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=_stream_key(stream_id),
                UpdateExpression=update,
                ConditionExpression="#status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if not _is_conditional_failure(exc):
                raise
            finished = False
        # Released even when the stream was already terminal: a crash between the
        # two writes must not hold the slot.
        self._release_slots(owner, [stream_id])
        return finished

    # -- consumer side ----------------------------------------------------------------

    def request_cancel(self, stream_id: str, owner: str) -> StreamRecord:
        """Set the cancel flag of the owner's stream. Harmless when repeated or ended."""
        return self._update_owned(
            stream_id, owner, "SET cancelRequested = :t", {":t": {"BOOL": True}}
        )

    def _update_owned(
        self, stream_id: str, owner: str, update: str, values: dict[str, Any]
    ) -> StreamRecord:
        """Update the owner's live stream; NOT_FOUND for anyone else's or a missing one."""
        try:
            resp = self.client.update_item(
                TableName=self._streams,
                Key=_stream_key(stream_id),
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
            if _is_conditional_failure(exc):
                raise StreamError(
                    ErrorCode.NOT_FOUND, f"Stream {stream_id} was not found."
                ) from None
            raise
        return _record(resp["Attributes"])


class CancelWatch:
    """Reads a stream's cancel flag at most once per interval.

    Producers ask between every model event; reading DynamoDB per token would
    cost a read per token, so the answer is cached for one flush interval, which
    is exactly the latency docs/architecture.md, stream store allows for a cancel to take effect.
    """

    def __init__(
        self,
        store: StreamStore,
        stream_id: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        claim: tuple[str, float] | None = None,
    ) -> None:
        self._store = store
        self._stream_id = stream_id
        self._interval = interval_s
        self._clock = clock
        self._checked_at: float | None = None
        self._cancelled = False
        # (worker id, lease): one of the reads becomes a renewal every third of the lease.
        self._claim = claim
        self._renewed_at = clock()
        # The claim was lost: whatever the producer still makes must not be delivered.
        self.claim_lost = False

    def cancelled(self) -> bool:
        """True once a cancel was requested or (with a claim) the claim was lost."""
        if self._cancelled:
            return True
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._interval:
            self._checked_at = now
            if not self._renew_if_due(now):
                self._cancelled = self._store.is_cancel_requested(self._stream_id)
        return self._cancelled

    def keep_claim(self) -> bool:
        """Renew the claim when due; False once it is lost.

        For the sender, which may still be delivering after the producer stopped reading
        the model (and asking ``cancelled``): the lease must not lapse while it drains.
        """
        if not self.claim_lost:
            self._renew_if_due(self._clock())
        return not self.claim_lost

    def _renew_if_due(self, now: float) -> bool:
        """Renew the claim if a third of its lease passed; True if a renewal was made
        (its answer carries the cancel flag, so no separate read is needed)."""
        if self._claim is None or now - self._renewed_at < self._claim[1] / 3:
            return False
        self._renewed_at = now
        worker_id, lease_s = self._claim
        try:
            # Two threads may renew: a flag seen set stays set.
            cancelled = self._store.renew_claim(self._stream_id, worker_id, lease_s)
            self._cancelled = self._cancelled or cancelled
        except ClaimLost:
            self.claim_lost = self._cancelled = True
        return True


class ClaimLost(Exception):
    """The stream no longer runs under the caller's claim."""


class _StreamExists(Exception):
    pass


class _CapReached(Exception):
    pass
