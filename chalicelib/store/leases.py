"""Leases and cursor: a producer's claim on a stream (a lease it renews while it runs, so
a later reader can tell a dead producer from a live one) and the WebSocket delivery
cursor that lets a stream move to another connection without losing or repeating a
frame."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.store.records import (
    RUNNING,
    Records,
    StreamRecord,
    is_conditional_failure,
    stream_key,
    to_record,
)


class ClaimLost(Exception):
    """The stream no longer runs under the caller's claim."""


class Leases(Records):
    def claim(
        self,
        stream_id: str,
        worker_id: str,
        lease_s: float | None = None,
        *,
        generation: str | None = None,
    ) -> StreamRecord | None:
        """Take the right to produce a stream; None if it is claimed or finished.

        With ``lease_s`` the claim lapses unless renewed (``renew_claim``) within that
        time, which lets a later worker tell a dead producer from a live one. With
        ``generation``, only that generation of the id is claimed (a late job for an
        id that was since created again must not produce the new stream).
        """
        now = self._clock()
        update = "SET claimedBy = :w, updatedAt = :now"
        values: dict[str, Any] = {
            ":w": {"S": worker_id},
            ":now": {"N": repr(now)},
            ":running": {"S": RUNNING},
        }
        condition = (
            "attribute_exists(pk) AND #status = :running AND attribute_not_exists(claimedBy)"
        )
        if lease_s is not None:
            update += ", leaseUntil = :lease"
            values[":lease"] = {"N": repr(now + lease_s)}
        if generation:
            condition += " AND generation = :gen"
            values[":gen"] = {"S": generation}
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
        except ClientError as exc:
            if is_conditional_failure(exc):
                return None
            raise
        return to_record(resp["Attributes"])

    def renew_claim(self, stream_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend ``worker_id``'s claim by ``lease_s``; returns whether a cancel was
        requested. Raises ``ClaimLost`` when the stream no longer runs under this claim
        (someone took its producer for dead and ended it)."""
        try:
            resp = self.client.update_item(
                TableName=self._streams,
                Key=stream_key(stream_id),
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
            if is_conditional_failure(exc):
                raise ClaimLost(stream_id) from None
            raise
        return bool(resp["Attributes"].get("cancelRequested", {}).get("BOOL", False))

    def release_claim(self, stream_id: str, worker_id: str) -> bool:
        """Give up ``worker_id``'s claim before producing anything, so a retry can claim."""
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=stream_key(stream_id),
                UpdateExpression="REMOVE claimedBy, leaseUntil",
                ConditionExpression="claimedBy = :w AND #status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":w": {"S": worker_id}, ":running": {"S": RUNNING}},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def is_cancel_requested(self, stream_id: str) -> bool:
        resp = self.client.get_item(
            TableName=self._streams,
            Key=stream_key(stream_id),
            ConsistentRead=True,
            ProjectionExpression="cancelRequested",
        )
        return bool(resp.get("Item", {}).get("cancelRequested", {}).get("BOOL", False))

    # -- the delivery cursor (WebSocket) --------------------------------------------

    def attach(self, stream_id: str, owner: str, connection_id: str) -> StreamRecord:
        """Point the owner's stream at a new connection (resume from another socket).

        Returns the record as of the switch. Frames with seq up to its
        ``delivered_seq`` went (or were going) to the previous connection and are
        the caller's to replay; later frames go to ``connection_id``, because the
        producer reads the connection in the same write that advances
        ``deliveredSeq`` (see ``mark_delivered`` and ``finish``). So nothing is lost or
        sent twice. The record says ``replaying`` until the caller reports the replay
        done (``replayed``): a producer that finishes the stream meanwhile leaves its
        terminal frame to the replay, so it never reaches the client before the
        replayed frames.
        """
        return self._update_owned(
            stream_id,
            owner,
            "SET connectionId = :c, replaying = :c",
            {":c": {"S": connection_id}},
        )

    def replayed(self, stream_id: str, connection_id: str) -> StreamRecord | None:
        """The replay to ``connection_id`` is done. None if the producer goes on sending
        to it; otherwise the record as it is now: the stream ended during the replay (the
        caller sends the rest, its terminal frame included) or another connection took
        the stream over."""
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=stream_key(stream_id),
                UpdateExpression="REMOVE replaying",
                ConditionExpression="replaying = :c AND #status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":c": {"S": connection_id}, ":running": {"S": RUNNING}},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            return self.get(stream_id)
        return None

    def mark_delivered(self, stream_id: str, seq: int) -> str | None:
        """Record that frame ``seq`` (already stored) is being delivered; returns the
        connection to deliver it to, read atomically with the update."""
        resp = self.client.update_item(
            TableName=self._streams,
            Key=stream_key(stream_id),
            UpdateExpression="SET deliveredSeq = :seq",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":seq": {"N": str(seq)}},
            ReturnValues="ALL_NEW",
        )
        return resp["Attributes"].get("connectionId", {}).get("S")
