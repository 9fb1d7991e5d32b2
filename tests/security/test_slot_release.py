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

ROUNDS = 15


def test_back_to_back_streams_on_every_transport_at_the_cap_are_never_refused(
    users, transports, store, request
):
    """One user runs one stream on each of the three transports at once (the cap is 3);
    each starts its next stream the moment its previous terminal frame arrives."""
    user = users.new("back-to-back")
    refusals: list[str] = []
    errors: list[BaseException] = []
    started = {name: 0 for name in transports}

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

    threads = [threading.Thread(target=loop, args=(name,)) for name in transports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a transport's rounds did not end"
    if errors:
        raise errors[0]
    note(
        request,
        f"back-to-back at the cap: {sum(started.values())}/{ROUNDS * len(transports)} "
        f"streams started, {len(refusals)} refused",
    )
    assert refusals == []
    assert store.running_ids(user) == []
