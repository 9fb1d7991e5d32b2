"""A per-connection message rate limit for the WebSocket API (docs/protocol.md).

API Gateway throttles a stage (and, with route settings, a route) as a whole, so one
client's flood can use up what every other client shares. Each connection therefore
gets its own budget: at most ``ws_message_burst`` messages in any aligned window of
``ws_message_burst / ws_messages_per_second`` seconds, which averages
``ws_messages_per_second`` (with the defaults, 10 messages per 2 s, 5 per second). A
message over the budget is answered with a seq-less ``THROTTLED`` error frame (retryable)
naming the limit (once per window: the window's further messages are dropped unanswered,
so a flood costs neither a store request nor an answer each); the connection stays usable
and the next window has a fresh budget.

State: one item per connection and window in the streams table, ``pk =
conn#<connectionId>#<window>``, holding the count and ``expiresAt`` for DynamoDB TTL.
Counting is one conditional ``UpdateItem`` per message (``ADD`` under ``count <
burst``), so concurrent Lambda invocations for one connection cannot overspend it. The
store failing is not a reason to refuse a message: the limit then lets it through.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "conn#"
# A window's item outlives its window by this much before TTL may delete it.
_TTL_MARGIN_S = 60


class Throttled(StreamError):
    """A message over its connection's budget. ``first`` is true for the first one of a
    window: only that one is answered (a flood is told once per window, and its further
    messages cost no answer; the client waits the window out)."""

    def __init__(self, message: str, *, first: bool) -> None:
        super().__init__(ErrorCode.THROTTLED, message, retryable=True)
        self.first = first


class ConnectionRateLimiter:
    """Counts each connection's messages against its budget in DynamoDB.

    The store is the authority across Lambda instances. Each process also counts what it
    saw itself: a count it holds is a lower bound of the store's, so once it passes the
    budget the window's further messages are refused without a store request.
    """

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = settings.ws_messages_per_second
        self.burst = settings.ws_message_burst
        self.window_s = self.burst / self.rate
        self._table = settings.streams_table
        self._client_factory = client_factory
        self._client: Any = None
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._seen: dict[str, int] = {}  # this window's messages per connection, here
        self._told: set[str] = set()  # connections already answered THROTTLED this window

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def describe(self) -> str:
        window = f"{self.window_s:g} seconds" if self.window_s != 1 else "second"
        return f"{self.burst} messages per {window} ({self.rate:g} per second)"

    def check(self, connection_id: str) -> None:
        """Count one message of ``connection_id``; ``Throttled`` if over budget."""
        window = math.floor(self._clock() / self.window_s)
        with self._lock:
            if window != self._window:  # a new window: forget the old one's counts
                self._window, self._seen, self._told = window, {}, set()
            seen = self._seen[connection_id] = self._seen.get(connection_id, 0) + 1
        if seen > self.burst or not self._count_in_store(connection_id, window):
            raise self._throttled(connection_id)

    def _count_in_store(self, connection_id: str, window: int) -> bool:
        """One conditional UpdateItem; False when the window's budget is spent."""
        expires = int((window + 1) * self.window_s) + _TTL_MARGIN_S
        try:
            self.client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"{KEY_PREFIX}{connection_id}#{window}"}},
                UpdateExpression="ADD #n :one SET expiresAt = if_not_exists(expiresAt, :exp)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :burst",
                ExpressionAttributeNames={"#n": "messages"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":burst": {"N": str(self.burst)},
                    ":exp": {"N": str(expires)},
                },
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            log.warning("rate limit not counted", extra={"errorCode": _code(exc)})
        except BotoCoreError as exc:
            log.warning("rate limit not counted", extra={"errorType": type(exc).__name__})
        return True

    def _throttled(self, connection_id: str) -> Throttled:
        with self._lock:
            first = connection_id not in self._told
            self._told.add(connection_id)
        if first:
            log.info("connection over its message budget", extra={"connectionId": connection_id})
        return Throttled(
            f"Too many messages on this connection: the limit is {self.describe()}. "
            "Wait a moment and send again.",
            first=first,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
