"""Weakness: a finished stream held its owner's slot after its terminal frame reached the
client (the producers delivered the terminal frame, then marked the stream finished and
released the slot), so a client starting its next stream the moment the previous one
ended was refused TOO_MANY_STREAMS. Every producer now stores the terminal frame, then
finishes the record (freeing the slot), then sends the frame.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from tests.security.checks import assert_transcript, note, unique_prompt
from tests.security.clients import Refused

pytestmark = pytest.mark.security("transport")

ROUNDS = 10


def _groups(names: list[str], cap: int) -> list[list[str]]:
    """Transports to run at once, at most ``cap`` (one slot each), together covering all:
    the first ``cap`` and the last ``cap`` (the same group when there are no more)."""
    first, last = names[:cap], names[-cap:]
    return [first] if first == last else [first, last]


@pytest.mark.parametrize("group", [0, 1])
def test_back_to_back_streams_on_every_transport_at_the_cap_are_never_refused(
    users, transports, store, request, group
):
    """One user runs one stream on each of as many transports as the cap allows at once
    (the cap is 3; with four transports, two groups of three cover all of them); each
    starts its next stream the moment its previous terminal frame arrives."""
    groups = _groups(sorted(transports), 3)
    if group >= len(groups):
        pytest.fail("fewer than four transports: one group covers them all")
    names = groups[group]
    user = users.new(f"back-to-back-{group}")
    refusals: list[str] = []
    errors: list[BaseException] = []
    started = {name: 0 for name in names}

    def loop(name: str) -> None:
        try:
            for _ in range(ROUNDS):
                body = {
                    "prompt": unique_prompt(f"round on {name}", 3),
                    "streamId": str(uuid.uuid4()),
                }
                try:
                    live = transports[name].open(user.id_token, body)
                except Refused as refused:
                    refusals.append(f"{name}: {refused}")
                    continue
                started[name] += 1
                with live:
                    frames = live.rest()
                # Any terminal frame will do (a loaded machine may time the model out):
                # what matters is that the next start is never refused.
                assert_transcript(frames)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a transport's rounds did not end"
    if errors:
        raise errors[0]
    note(
        request,
        f"back-to-back at the cap ({', '.join(names)}): "
        f"{sum(started.values())}/{ROUNDS * len(names)} "
        f"streams started, {len(refusals)} refused",
    )
    assert refusals == []
    assert store.running_ids(user) == []
