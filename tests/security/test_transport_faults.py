"""Case 5: transport faults. Connections dropped mid-stream and resumed (a hundred times on
the WebSocket), ``@connections`` throttling and latency spikes, AppSync publish latency and
failures: the client ends up with every frame exactly once, in order.

The WebSocket generator killed mid-stream is here; the SQS worker killed mid-stream and
the message that fails every time are proven by tests/local/test_appsync_faults.py on a
cloud with short visibility timeouts and leases, and are tagged into this group.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.security.checks import (
    assert_transcript,
    expected_text,
    model_streams,
    note,
    text_of,
)
from tests.security.clients import Live, bearer, http_call, is_terminal, wait_until
from tests.security.cloud_settings import CLAIM_LEASE_S

pytestmark = pytest.mark.security("transport")

# Parallel clients for the trials, each its own user (a user runs at most 3 streams).
WORKERS = 4
TRIAL_TOKENS = 80  # about 0.8 s and 9 frames at the suite's pace
DROP_AFTER = range(1, 6)  # frames received before the connection drops


@dataclass
class Tally:
    trials: int = 0
    frames: int = 0
    lost: int = 0
    duplicates: int = 0
    ended_before_drop: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.trials += other.trials
        self.ended_before_drop += other.ended_before_drop
        self.frames += other.frames
        self.lost += other.lost
        self.duplicates += other.duplicates
        self.failures += other.failures


def _resume(transports, name: str, user, stream_id: str, after: int) -> Live:
    return transports[name].resume(user.id_token, stream_id, after)


def _trial(transports, name: str, user, drop_after: int, abrupt: bool, store) -> Tally:
    """Start a stream, drop the connection after ``drop_after`` frames, resume from a new
    one after the last seq seen, and count what was lost or repeated."""
    prompt = f"Drop me {uuid.uuid4()} [tokens={TRIAL_TOKENS}]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    tally = Tally(trials=1)
    live = transports[name].open(user.id_token, body)
    seen: list[dict[str, Any]] = []
    try:
        while len(seen) < drop_after and not (seen and is_terminal(seen[-1])):
            seen.append(live.next())
    finally:
        (live.drop if abrupt else live.close)()
    after = seen[-1]["seq"] if seen else -1
    rest: list[dict[str, Any]] = []
    if seen and is_terminal(seen[-1]):
        # It ended before the planned drop: nothing to resume, still checked below.
        tally.ended_before_drop = 1
        resumed = None
    else:
        resumed = _resume(transports, name, user, live.stream_id, after)
    try:
        if resumed is not None:
            rest = resumed.rest()
    except TimeoutError:
        view = store.view(live.stream_id)
        raise AssertionError(
            f"{name} trial (drop after {drop_after}, abrupt={abrupt}): seen "
            f"{[f['seq'] for f in seen]}, resumed after {after} got "
            f"{[f['seq'] for f in resumed.received]}; store: {view.record}, "
            f"stored {[f['seq'] for f in view.frames]}"
        ) from None
    finally:
        if resumed is not None:
            resumed.close()
    got = seen + rest
    if name == "appsync":
        # Catch-up (streamFrames) and live delivery overlap by design: clients drop a seq
        # they already hold. Count what they would hold.
        got = list({f["seq"]: f for f in got}.values())
    seqs = [f["seq"] for f in got]
    terminal = max(seqs)
    tally.frames = terminal + 1
    tally.lost = len(set(range(terminal + 1)) - set(seqs))
    tally.duplicates = len(seqs) - len(set(seqs))
    ordered = sorted(got, key=lambda f: f["seq"])
    if not is_terminal(ordered[-1]) or text_of(ordered) != expected_text(prompt):
        tally.failures.append(f"{live.stream_id}: incomplete after resume at {after}")
    store.assert_consistent(live.stream_id, user, status="done", client_frames=got)
    return tally


def _run_trials(transports, name: str, users, store, trials: int) -> Tally:
    rng = random.Random(8)
    plans = [(rng.choice(DROP_AFTER), i % 2 == 0) for i in range(trials)]
    workers = [users.new(f"trials-{name}") for _ in range(WORKERS)]

    def run(worker: int) -> Tally:
        tally = Tally()
        for drop_after, abrupt in plans[worker::WORKERS]:
            tally.add(_trial(transports, name, workers[worker], drop_after, abrupt, store))
        return tally

    total = Tally()
    with ThreadPoolExecutor(WORKERS) as pool:
        for tally in pool.map(run, range(WORKERS)):
            total.add(tally)
    return total


@pytest.mark.parametrize(
    ("transport", "trials"), [("websocket", 100), ("function_url", 20), ("appsync", 20)]
)
def test_dropped_connections_resume_with_nothing_lost_or_repeated(
    transport, trials, transports, users, store, model, request
):
    model.faults(tokensPerSecond=100, firstTokenDelayMs=20)
    tally = _run_trials(transports, transport, users, store, trials)
    how = {
        "websocket": "resume on a new socket",
        "function_url": "GET with Last-Event-ID",
        "appsync": "resubscribe + streamFrames",
    }[transport]
    dropped = tally.trials - tally.ended_before_drop
    note(
        request,
        f"{transport} drop/resume ({how}): {tally.trials} trials ({dropped} dropped "
        f"mid-stream), {tally.frames} frames, {tally.lost} lost, {tally.duplicates} duplicate",
    )
    assert tally.trials == trials
    assert dropped >= 0.8 * trials, "too few streams were still running at the drop"
    assert (tally.lost, tally.duplicates, tally.failures) == (0, 0, [])


def _stream_with(fault, transports, name: str, user, clear) -> tuple[list[dict], str]:
    """A stream whose transport misbehaves (``fault()``) from its first delta on for a
    few frames, then recovers (``clear()``)."""
    prompt = f"Rough network {uuid.uuid4()} [tokens=120]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    with transports[name].open(user.id_token, body) as live:
        live.until(lambda f: f["type"] == "delta")
        fault()
        # Slow delivery coalesces more text per frame: the stream may have few frames.
        last = live.until(lambda f: is_terminal(f) or f["seq"] >= 4)[-1]
        clear()
        if not is_terminal(last):
            live.rest()
        return list(live.received), prompt


@pytest.fixture(scope="module")
def user(users):
    return users.new("transport")


@pytest.mark.parametrize("refusals", [3, 8])
def test_connections_limit_exceeded_is_retried_in_order(refusals, transports, user, gateway, store):
    # botocore retries a throttled post 4 times itself; past that the generator retries
    # the post (4 times), so 8 refusals in a row are absorbed too.
    frames, prompt = _stream_with(
        lambda: gateway.faults(limitExceeded=refusals),
        transports,
        "websocket",
        user,
        gateway.reset,
    )
    assert_transcript(frames, prompt)
    store.assert_consistent(frames[0]["streamId"], user, status="done", client_frames=frames)


def test_connections_latency_spikes_keep_order_and_lose_nothing(transports, user, gateway, store):
    frames, prompt = _stream_with(
        lambda: gateway.faults(postLatencyMs=250), transports, "websocket", user, gateway.reset
    )
    assert_transcript(frames, prompt)
    store.assert_consistent(frames[0]["streamId"], user, status="done", client_frames=frames)


def test_appsync_publish_latency_spikes_keep_order_and_lose_nothing(
    transports, user, appsync_control, store
):
    frames, prompt = _stream_with(
        lambda: appsync_control.faults(publishLatencyMs=250),
        transports,
        "appsync",
        user,
        appsync_control.reset,
    )
    assert_transcript(frames, prompt)
    store.assert_consistent(frames[0]["streamId"], user, status="done", client_frames=frames)


def test_appsync_publish_failures_are_retried_in_order(transports, user, appsync_control, store):
    # Two failures in a row: within the worker's PUBLISH_RETRIES (2) of one publish.
    frames, prompt = _stream_with(
        lambda: appsync_control.faults(publishFailures=2, publishFailureStatus=503),
        transports,
        "appsync",
        user,
        appsync_control.reset,
    )
    assert_transcript(frames, prompt)
    assert appsync_control.stats()["publishFailuresInjected"] == 2
    store.assert_consistent(frames[0]["streamId"], user, status="done", client_frames=frames)


@pytest.mark.parametrize("transport", ["function_url", "websocket", "appsync"])
def test_resuming_after_the_terminal_frame_answers_nothing_more_and_no_error(
    transport, transports, user, websocket, appsync, store
):
    """A client that reconnects holding the whole transcript (an EventSource reconnects by
    itself after the response ends) is told there is nothing more, not that it broke."""
    prompt = f"Short {uuid.uuid4()} [tokens=5]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    with transports[transport].open(user.id_token, body) as live:
        frames = live.rest()
    assert_transcript(frames, prompt)
    store.assert_consistent(live.stream_id, user, status="done")
    last = frames[-1]["seq"]
    if transport == "function_url":
        status, _, raw = http_call(
            f"{transports[transport].url}?streamId={live.stream_id}",
            headers={**bearer(user.id_token), "Last-Event-ID": str(last)},
        )
        assert (status, raw) == (204, b""), raw  # EventSource stops reconnecting on 204
    elif transport == "websocket":
        conn = websocket.connect(user.id_token)
        try:
            conn.send({"action": "resume", "streamId": live.stream_id, "afterSeq": last})
            with pytest.raises(TimeoutError):
                conn.recv(timeout=0.3)  # nothing to replay, and no error
        finally:
            conn.close()
    else:
        page = appsync.read(user.id_token, live.stream_id, last)["data"]["streamFrames"]
        assert page["frames"] == [] and page["stream"]["status"] == "done"


def test_a_websocket_generator_killed_mid_stream_ends_in_one_error_frame(
    cloud, websocket, rest, user, model, store
):
    """Its Lambda dies (out of memory, a crash): once its lease lapses the next reader
    ends the stream with one terminal error frame after the stored ones and frees the
    slot, instead of leaving it "running" for a Lambda's lifetime."""
    prompt = f"Killed generator {uuid.uuid4()} [tokens=3000]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "maxTokens": 3000}
    with websocket.open(user.id_token, body) as live:
        live.until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
        req = urllib.request.Request(
            cloud.ep["lambda"] + "_local/functions/ws_generate/crash", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["crashed"] == 1
        crashed_at = time.monotonic()
    # A reader (here REST; a resume does the same) ends it once the lease lapsed.
    wait_until(
        lambda: rest.read(user.id_token, live.stream_id)[1]["status"] != "running",
        CLAIM_LEASE_S + 5,
        "the stream ending after its generator died",
    )
    assert time.monotonic() - crashed_at < CLAIM_LEASE_S + 3
    seen = live.received
    with websocket.resume(user.id_token, live.stream_id, seen[-1]["seq"]) as resumed:
        rest_frames = resumed.rest()
    frames = seen + rest_frames
    assert_transcript(frames)
    error = frames[-1]["error"]
    assert error["code"] == "INTERNAL" and error["retryable"] is True
    store.assert_consistent(live.stream_id, user, status="error", client_frames=frames)
    (only,) = model_streams(model, prompt)  # never a second generation
    assert only["closedAt"] is not None
