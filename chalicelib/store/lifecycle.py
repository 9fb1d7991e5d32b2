"""Lifecycle: creating a stream under the per-user cap, finishing it (which frees the
owner's slot), and ending a stream whose producer is gone with an error frame that the
caller builds (the store keeps no knowledge of the frame protocol)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.store.records import (
    RUNNING,
    STALE_AFTER_S,
    TERMINAL_STATUSES,
    Frame,
    Records,
    StreamRecord,
    is_conditional_failure,
    stream_key,
    to_record,
    user_key,
)

# Builds the terminal error frame of a stream at the given seq (the caller's protocol).
ErrorFrame = Callable[[StreamRecord, int], Frame]


def new_generation() -> str:
    """A random generation: 64 bits, so two creations of one id never share one."""
    return secrets.token_hex(8)


class Lifecycle(Records):
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

        The same owner creating the same live id again gets the existing record and
        ``created=False`` (idempotent retries). Another owner's live id is refused. An
        expired record (TTL deletes lazily) is replaced by a new generation. A user
        already running ``max_streams_per_user`` streams gets ``TOO_MANY_STREAMS``.
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
            **stream_key(stream_id),
            "streamId": {"S": stream_id},
            "generation": {"S": new_generation()},
            "owner": {"S": owner},
            "status": {"S": RUNNING},
            "transport": {"S": transport},
            "cancelRequested": {"BOOL": False},
            "followers": {"M": {}},
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
                            "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
                            "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._streams,
                            "Key": user_key(owner),
                            "UpdateExpression": "ADD #running :sid SET expiresAt = :exp, "
                            "#followers = if_not_exists(#followers, :none)",
                            "ConditionExpression": "attribute_not_exists(#running) "
                            "OR size(#running) < :cap",
                            "ExpressionAttributeNames": {
                                "#running": "running",
                                "#followers": "followers",
                            },
                            "ExpressionAttributeValues": {
                                ":sid": {"SS": [stream_id]},
                                ":cap": {"N": str(self._settings.limits.max_streams_per_user)},
                                ":exp": {"N": str(self._expires_at(now))},
                                ":none": {"M": {}},
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
        return to_record(item)

    def _release_dead_slots(self, owner: str) -> bool:
        """Drop slots of streams that ended or lost their producer; True if any.

        A producer is lost when nothing updated its stream for a Lambda's lifetime, or
        its claim's lease lapsed. Such a stream keeps its status until a reader or a
        redelivery ends it with a terminal frame (``end_if_abandoned``), which also
        publishes it where the transport can. A slot whose id now names another
        owner's stream (the old one expired, the id was reused) is dead too.
        """
        resp = self.client.get_item(
            TableName=self._streams, Key=user_key(owner), ConsistentRead=True
        )
        running = resp.get("Item", {}).get("running", {}).get("SS", [])
        now = self._clock()
        dead = []
        for sid in running:
            rec = self.get(sid)
            if (
                rec is None
                or rec.owner != owner
                or rec.terminal
                or now - rec.updated_at > STALE_AFTER_S
                or self.claim_lapsed(rec)
            ):
                dead.append(sid)
        if dead:
            self._release_slots(owner, dead)
        return bool(dead)

    def claim_lapsed(self, record: StreamRecord) -> bool:
        """The stream is claimed under a lease nobody renewed in time: its producer died."""
        return (
            record.claimed_by is not None
            and record.lease_until is not None
            and self._clock() > record.lease_until
        )

    def _release_slots(self, owner: str, stream_ids: list[str]) -> None:
        self.client.update_item(
            TableName=self._streams,
            Key=user_key(owner),
            UpdateExpression="DELETE #running :sids",
            ExpressionAttributeNames={"#running": "running"},
            ExpressionAttributeValues={":sids": {"SS": stream_ids}},
        )

    def running_count(self, owner: str) -> int:
        resp = self.client.get_item(
            TableName=self._streams, Key=user_key(owner), ConsistentRead=True
        )
        return len(resp.get("Item", {}).get("running", {}).get("SS", []))

    # -- the end of a stream ----------------------------------------------------------

    def finish(
        self,
        stream_id: str,
        owner: str,
        status: str,
        *,
        last_seq: int,
        error_code: str | None = None,
        generation: str | None = None,
    ) -> StreamRecord | None:
        """Mark a running stream terminal and free its owner's slot.

        Returns the record as finished (its ``connection_id`` read in the same write,
        which also moves the delivery cursor to ``last_seq``: the terminal frame goes to
        that connection, a resume after this replays everything); None if it had
        already ended. With ``generation``, only that generation of the id is finished.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal status: {status}")
        values: dict[str, Any] = {
            ":status": {"S": status},
            ":running": {"S": RUNNING},
            ":now": {"N": repr(self._clock())},
            ":seq": {"N": str(last_seq)},
        }
        update = "SET #status = :status, updatedAt = :now, lastSeq = :seq, deliveredSeq = :seq"
        if error_code:
            update += ", errorCode = :code"
            values[":code"] = {"S": error_code}
        condition = "#status = :running"
        if generation:
            condition += " AND generation = :gen"
            values[":gen"] = {"S": generation}
        finished: StreamRecord | None = None
        try:
            resp = self.client.update_item(
                TableName=self._streams,
                Key=stream_key(stream_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
            finished = to_record(resp["Attributes"])
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
        # Released even when the stream was already terminal: a crash between the
        # two writes must not hold the slot.
        self._release_slots(owner, [stream_id])
        return finished

    def end_with_error(
        self, record: StreamRecord, error_frame: ErrorFrame, error_code: str
    ) -> tuple[Frame, StreamRecord] | None:
        """End a running stream with a terminal error frame after its stored frames.

        ``error_frame(record, seq)`` builds the frame. The record is finished first
        (conditional on "running": of two racing callers one ends it, and a producer
        still alive loses its claim at its next renewal), then the frame is stored: the
        owner's slot is free before any client can see the frame. Returns (frame,
        finished record) if this call ended the stream; None if it had already ended.
        """
        seq = self.last_stored_seq(record) + 1
        finished = self.finish(
            record.stream_id,
            record.owner,
            "error",
            last_seq=seq,
            error_code=error_code,
            generation=record.generation,
        )
        if finished is None:
            return None
        frame = error_frame(record, seq)
        self.append_frames(record, [frame])
        return frame, finished

    def abandoned(self, record: StreamRecord) -> bool:
        """The producer of this running stream cannot be alive any more: no update for
        longer than a Lambda can run (a crash, a lost invoke, an exhausted queue) or a
        lapsed claim lease."""
        if record.terminal:
            return False
        return self._clock() - record.updated_at > STALE_AFTER_S or self.claim_lapsed(record)

    def end_if_abandoned(
        self, record: StreamRecord, error_frame: ErrorFrame, error_code: str
    ) -> StreamRecord:
        """End a stream whose producer is gone (``abandoned``) with an error frame, so
        readers get a terminal frame instead of waiting forever and the owner's slot is
        freed. Returns the record as it is now."""
        if not self.abandoned(record):
            return record
        self.end_with_error(record, error_frame, error_code)
        return self.get(record.stream_id) or record

    # -- consumer side ----------------------------------------------------------------

    def request_cancel(self, stream_id: str, owner: str) -> StreamRecord:
        """Set the cancel flag of the owner's stream. Harmless when repeated or ended."""
        return self._update_owned(
            stream_id, owner, "SET cancelRequested = :t", {":t": {"BOOL": True}}
        )


class _StreamExists(Exception):
    pass


class _CapReached(Exception):
    pass
