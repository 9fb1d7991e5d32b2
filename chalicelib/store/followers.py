"""Follower slots: everything that reads a stream on its owner's behalf while it runs
(a Function URL follower, a WebSocket resume, a GraphQL ``streamFrames``) holds one.

A slot is an entry ``<followerId>: <leaseUntil>`` in two maps: ``followers`` on the
stream's record (at most ``max_followers_per_stream``) and ``followers`` on the owner's
``user#<sub>`` item (at most ``max_followers_per_user``). Taking one is a conditional
update on the map's size, so the bound holds under any concurrency. A slot is released
when its follower ends; one whose lease lapsed (its Lambda died without releasing) is
pruned by the next follower that finds the map full, so a crash never holds a slot for
longer than one lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.store.records import Records, is_conditional_failure, stream_key, user_key

_ATTEMPTS = 3


class Followers(Records):
    def acquire_follower(
        self, owner: str, stream_id: str, follower_id: str, lease_s: float
    ) -> None:
        """Take a follower slot of ``stream_id`` for ``lease_s``; ``TOO_MANY_FOLLOWERS``
        when the stream or the owner has none free."""
        limits = self._settings.limits
        until = self._clock() + lease_s
        if not self._take(
            stream_key(stream_id),
            follower_id,
            until,
            limits.max_followers_per_stream,
            must_exist=True,
        ):
            raise StreamError(
                ErrorCode.TOO_MANY_FOLLOWERS,
                f"At most {limits.max_followers_per_stream} readers may follow one stream "
                "at once (MAX_FOLLOWERS_PER_STREAM); close one and retry.",
            )
        if not self._take(
            user_key(owner), follower_id, until, limits.max_followers_per_user, must_exist=False
        ):
            self._drop(stream_key(stream_id), follower_id)
            raise StreamError(
                ErrorCode.TOO_MANY_FOLLOWERS,
                f"At most {limits.max_followers_per_user} streams may be followed or resumed "
                "at once per user (MAX_FOLLOWERS_PER_USER); close one and retry.",
            )

    def renew_follower(self, owner: str, stream_id: str, follower_id: str, lease_s: float) -> bool:
        """Extend a held slot; False if it was lost (pruned after its lease lapsed)."""
        until = {"N": repr(self._clock() + lease_s)}
        held = True
        for key in (stream_key(stream_id), user_key(owner)):
            try:
                self.client.update_item(
                    TableName=self._streams,
                    Key=key,
                    UpdateExpression="SET #f.#id = :until",
                    ConditionExpression="attribute_exists(#f.#id)",
                    ExpressionAttributeNames={"#f": "followers", "#id": follower_id},
                    ExpressionAttributeValues={":until": until},
                )
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
                held = False
        return held

    def release_follower(self, owner: str, stream_id: str, follower_id: str) -> None:
        self._drop(stream_key(stream_id), follower_id)
        self._drop(user_key(owner), follower_id)

    @contextlib.contextmanager
    def following(
        self, owner: str, stream_id: str, follower_id: str, lease_s: float
    ) -> Iterator[None]:
        """A slot held for the duration of a short read (a resume's replay, a GraphQL
        read)."""
        self.acquire_follower(owner, stream_id, follower_id, lease_s)
        try:
            yield
        finally:
            self.release_follower(owner, stream_id, follower_id)

    def followers_of(self, key_owner: str | None = None, stream_id: str | None = None) -> int:
        """Live slots held on a stream or by a user (for tests and diagnostics)."""
        key = stream_key(stream_id) if stream_id else user_key(str(key_owner))
        slots = self._slots(key) or {}
        now = self._clock()
        return sum(1 for until in slots.values() if until >= now)

    # -- the maps ----------------------------------------------------------------------

    def _slots(self, key: dict[str, Any]) -> dict[str, float] | None:
        resp = self.client.get_item(
            TableName=self._streams, Key=key, ConsistentRead=True, ProjectionExpression="followers"
        )
        raw = resp.get("Item", {}).get("followers", {}).get("M")
        return None if raw is None else {k: float(v["N"]) for k, v in raw.items()}

    def _take(
        self, key: dict[str, Any], follower_id: str, until: float, cap: int, *, must_exist: bool
    ) -> bool:
        names = {"#f": "followers", "#id": follower_id}
        exists = "attribute_exists(pk) AND " if must_exist else ""
        for _ in range(_ATTEMPTS):
            try:
                self.client.update_item(
                    TableName=self._streams,
                    Key=key,
                    UpdateExpression="SET #f.#id = :until",
                    ConditionExpression=f"{exists}attribute_exists(#f) "
                    "AND (size(#f) < :cap OR attribute_exists(#f.#id))",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={
                        ":until": {"N": repr(until)},
                        ":cap": {"N": str(cap)},
                    },
                )
                return True
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
            slots = self._slots(key)
            if slots is None:
                if not self._start_map(key, follower_id, until, must_exist):
                    continue  # created meanwhile (or the stream is gone: next try says)
                return True
            if not self._prune(key, slots):
                return False
        return False

    def _start_map(
        self, key: dict[str, Any], follower_id: str, until: float, must_exist: bool
    ) -> bool:
        """An item written before follower slots existed has no map: start it."""
        exists = "attribute_exists(pk) AND " if must_exist else ""
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=key,
                # A user item made here expires like one made by a stream's creation.
                UpdateExpression="SET #f = :slots, expiresAt = if_not_exists(expiresAt, :exp)",
                ConditionExpression=f"{exists}attribute_not_exists(#f)",
                ExpressionAttributeNames={"#f": "followers"},
                ExpressionAttributeValues={
                    ":slots": {"M": {follower_id: {"N": repr(until)}}},
                    ":exp": {"N": str(self._expires_at(self._clock()))},
                },
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            return False
        return True

    def _prune(self, key: dict[str, Any], slots: dict[str, float]) -> bool:
        """Remove slots whose lease lapsed; False if there were none."""
        now = self._clock()
        lapsed = [fid for fid, until in slots.items() if until < now][:_PRUNE_AT_ONCE]
        if not lapsed:
            return False
        names = {"#f": "followers", **{f"#l{i}": fid for i, fid in enumerate(lapsed)}}
        # Each removed only if unchanged: a follower that renewed meanwhile keeps its slot.
        values = {f":l{i}": {"N": repr(slots[fid])} for i, fid in enumerate(lapsed)}
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=key,
                UpdateExpression="REMOVE " + ", ".join(f"#f.#l{i}" for i in range(len(lapsed))),
                ConditionExpression=" AND ".join(f"#f.#l{i} = :l{i}" for i in range(len(lapsed))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
        return True

    def _drop(self, key: dict[str, Any], follower_id: str) -> None:
        try:
            self.client.update_item(
                TableName=self._streams,
                Key=key,
                UpdateExpression="REMOVE #f.#id",
                # Never create an item (a stream whose record is gone has no slots).
                ConditionExpression="attribute_exists(#f)",
                ExpressionAttributeNames={"#f": "followers", "#id": follower_id},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise


_PRUNE_AT_ONCE = 50
