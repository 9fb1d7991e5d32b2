"""Case 6: cancel on every transport, and through REST for every transport's streams. The
emulator shows the model stream closed by the producer within one flush interval of the
cancel; the last frame is ``done`` with ``stopReason: cancelled``; a second cancel (same
channel, and REST) is harmless: it answers as the first did and changes nothing."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.security.checks import assert_transcript, expected_text, model_streams, text_of
from tests.security.clients import wait_until
from tests.security.cloud_settings import FLUSH_INTERVAL_MS

pytestmark = pytest.mark.security("cancel")

# (transport that streams, channel that cancels)
CASES = [
    ("function_url", "rest"),
    ("rest_stream", "rest"),
    ("websocket", "websocket"),
    ("websocket", "rest"),
    ("appsync", "appsync"),
    ("appsync", "rest"),
]


@pytest.fixture(scope="module")
def user(users):
    return users.new("canceller")


def _cancel(channel: str, live, user, rest, appsync) -> None:
    """Ask once through ``channel``; asserts the answer is an acknowledgement."""
    if channel == "rest":
        status, body = rest.cancel(user.id_token, live.stream_id)
        assert status == 200 and body["cancelRequested"] is True, body
    elif channel == "appsync":
        answer = appsync.cancel(user.id_token, live.stream_id)
        assert "errors" not in answer, answer
        assert answer["data"]["cancelStream"]["cancelRequested"] is True
    else:  # on the stream's own socket; success is silent
        live.conn.send({"action": "cancel", "streamId": live.stream_id})


@pytest.mark.parametrize(("transport", "channel"), CASES)
def test_cancel_stops_the_model_within_one_flush_interval_and_twice_is_harmless(
    transport, channel, transports, user, rest, appsync, model, store
):
    prompt = f"A long answer to cancel {uuid.uuid4()} [tokens=4000]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "maxTokens": 4000}
    with transports[transport].open(user.id_token, body) as live:
        live.until(lambda f: f["type"] == "delta")
        _cancel(channel, live, user, rest, appsync)
        cancelled_at = time.time()
        live.rest()
        frames = list(live.received)
        assert frames[-1]["type"] == "done" and frames[-1]["stopReason"] == "cancelled"
        assert_transcript(frames)
        assert expected_text(prompt).startswith(text_of(frames))
        (record,) = model_streams(model, prompt)
        assert record["closedBy"] == "client"
        assert record["closedAt"] - cancelled_at < FLUSH_INTERVAL_MS / 1000
        before = store.assert_consistent(
            live.stream_id, user, status="cancelled", client_frames=frames
        )
        # Again, through the same channel and through REST: acknowledged, nothing changes.
        _cancel(channel, live, user, rest, appsync)
        _cancel("rest", live, user, rest, appsync)
        if transport not in ("function_url", "rest_stream"):  # SSE has ended; sockets stay
            with pytest.raises(TimeoutError):
                live.next(0.3)
    after = store.assert_consistent(live.stream_id, user, status="cancelled", client_frames=frames)
    assert after.frames == before.frames
    assert len(model_streams(model, prompt)) == 1


@pytest.mark.parametrize("channel", ["rest", "websocket", "appsync"])
def test_cancelling_a_finished_stream_changes_nothing(
    channel, transports, user, rest, websocket, appsync, store
):
    prompt = f"Short and done {uuid.uuid4()} [tokens=5]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    with transports["websocket"].open(user.id_token, body) as live:
        frames = live.rest()
        assert_transcript(frames, prompt)
        before = store.assert_consistent(live.stream_id, user, status="done")
        if channel == "websocket":
            live.conn.send({"action": "cancel", "streamId": live.stream_id})
            with pytest.raises(TimeoutError):
                live.conn.recv(timeout=0.3)  # no error, no frame
        else:
            _cancel(channel, live, user, rest, appsync)
    after = store.assert_consistent(live.stream_id, user, status="done", client_frames=frames)
    assert after.frames == before.frames


@pytest.mark.parametrize("transport", ["function_url", "websocket", "appsync", "rest_stream"])
def test_cancel_while_the_model_is_still_silent_closes_it_too(
    transport, transports, user, rest, model, store
):
    """Before the first token the producer only waits on the model; the cancel must
    still close the model stream within one flush interval."""
    model.faults(firstTokenDelayMs=5000)
    prompt = f"Slow to start {uuid.uuid4()} [tokens=50]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    with transports[transport].open(user.id_token, body) as live:
        assert live.next()["type"] == "start"
        wait_until(lambda: model_streams(model, prompt), 10, "the model stream opening")
        assert rest.cancel(user.id_token, live.stream_id)[0] == 200
        cancelled_at = time.time()
        frames = [live.received[0], *live.rest()]
    assert [f["type"] for f in frames] == ["start", "done"]
    assert frames[-1]["stopReason"] == "cancelled"
    (record,) = model_streams(model, prompt)
    assert record["closedBy"] == "client" and record["tokensSent"] == 0
    assert record["closedAt"] - cancelled_at < FLUSH_INTERVAL_MS / 1000
    store.assert_consistent(live.stream_id, user, status="cancelled", client_frames=frames)
