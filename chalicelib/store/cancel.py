"""The cancel watch: a stream's cancel flag, read at most once per interval, and (for a
producer that holds a claim) the claim renewed as a lease by one of those reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from chalicelib.store.leases import ClaimLost


class _Flags(Protocol):
    def is_cancel_requested(self, stream_id: str) -> bool: ...

    def renew_claim(self, stream_id: str, worker_id: str, lease_s: float) -> bool: ...


class CancelWatch:
    """Reads a stream's cancel flag at most once per interval.

    Producers ask between every model event; reading DynamoDB per token would cost a
    read per token, so the answer is cached for one interval, which is the latency
    docs/architecture.md (stream store) allows for a cancel to take effect.

    With ``claim`` (worker id, lease), a read becomes a renewal every third of the lease
    (its answer carries the flag); a renewal refused means the claim was lost, which
    counts as a cancel and sets ``claim_lost``. node_function/src/store.mjs CancelWatch
    has the same semantics.
    """

    def __init__(
        self,
        store: _Flags,
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
        """Renew the claim if a third of its lease passed; True if a renewal was made."""
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
