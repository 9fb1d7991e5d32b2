"""Case 4: model faults from the Bedrock emulator, on every streaming transport. Throttling
before the first token is retried (and reported as retryable ``THROTTLED`` when it
persists); an error mid-stream ends the stream with ``MODEL_ERROR`` within a second, the
frames before it kept; a stalled model ends it with ``MODEL_TIMEOUT`` at the idle timeout.
Each leaves the store consistent and the owner's slot free."""

from __future__ import annotations

import uuid

import pytest

from local.simulated_model import generate, request_for_prompt
from tests.security.checks import assert_transcript, model_streams, text_of
from tests.security.cloud_settings import MODEL_IDLE_TIMEOUT_S

pytestmark = pytest.mark.security("model")

STREAMING = ("function_url", "websocket", "appsync")
# Attempts before THROTTLED: the first call and MODEL_THROTTLE_RETRIES (3) retries.
ATTEMPTS = 4


@pytest.fixture(scope="module")
def user(users):
    return users.new("model")


def _tokens(prompt: str) -> tuple[str, ...]:
    return generate(request_for_prompt(prompt)).tokens


def _start(transports, name: str, user, prompt: str):
    return transports[name].open(user.id_token, {"prompt": prompt, "streamId": str(uuid.uuid4())})


@pytest.mark.parametrize("transport", STREAMING)
@pytest.mark.parametrize("where", ["http_429", "in_stream"])
def test_throttling_before_the_first_token_is_retried_and_the_stream_succeeds(
    transport, where, transports, user, model, store
):
    prompt = f"Throttled at first {uuid.uuid4()} [tokens=20]"
    model.faults(**({"throttle": 2} if where == "http_429" else {"throttleInStream": 2}))
    with _start(transports, transport, user, prompt) as live:
        frames = live.rest()
    assert_transcript(frames, prompt)  # no error frame, the whole answer once
    store.assert_consistent(live.stream_id, user, status="done", client_frames=frames)
    streams = model_streams(model, prompt)
    if where == "http_429":
        assert model.faults()["faults"]["throttle"] == 0  # both refusals were retried
        assert [s["closedBy"] for s in streams] == ["complete"]
    else:
        assert [s["closedBy"] for s in streams] == ["error", "error", "complete"]
        assert [s["tokensSent"] for s in streams[:2]] == [0, 0]


@pytest.mark.parametrize("transport", STREAMING)
@pytest.mark.parametrize("where", ["http_429", "in_stream"])
def test_persistent_throttling_ends_the_stream_with_retryable_throttled(
    transport, where, transports, user, model, store
):
    prompt = f"Always throttled {uuid.uuid4()} [tokens=20]"
    fault = "throttle" if where == "http_429" else "throttleInStream"
    model.faults(**{fault: ATTEMPTS + 5})
    with _start(transports, transport, user, prompt) as live:
        frames = live.rest()
    assert [f["type"] for f in frames] == ["start", "error"]
    error = frames[-1]["error"]
    assert error["code"] == "THROTTLED" and error["retryable"] is True and error["message"]
    assert model.faults()["faults"][fault] == 5  # exactly ATTEMPTS calls were made
    streams = model_streams(model, prompt)
    if where == "http_429":
        assert streams == []  # no model stream was ever opened
    else:
        assert [(s["closedBy"], s["tokensSent"]) for s in streams] == [("error", 0)] * ATTEMPTS
    store.assert_consistent(
        live.stream_id, user, status="error", client_frames=frames, error_code="THROTTLED"
    )


@pytest.mark.parametrize("transport", STREAMING)
def test_a_model_error_mid_stream_ends_it_within_a_second_keeping_what_came_before(
    transport, transports, user, model, store
):
    prompt = f"Fails half way {uuid.uuid4()} [tokens=40]"
    model.faults(failAfterTokens=15)
    with _start(transports, transport, user, prompt) as live:
        frames = live.rest()
        error_arrived = live.arrivals[-1]
    assert_transcript(frames)
    assert text_of(frames) == "".join(_tokens(prompt)[:15])  # every token sent, kept
    error = frames[-1]["error"]
    assert error["code"] == "MODEL_ERROR" and error["retryable"] is False
    assert "injected" not in error["message"]  # the model's own text never reaches users
    (record,) = model_streams(model, prompt)
    assert record["closedBy"] == "error" and record["tokensSent"] == 15
    assert error_arrived - record["closedAt"] < 1.0
    store.assert_consistent(
        live.stream_id, user, status="error", client_frames=frames, error_code="MODEL_ERROR"
    )


@pytest.mark.parametrize("transport", STREAMING)
def test_a_stalled_model_ends_the_stream_with_model_timeout_at_the_idle_timeout(
    transport, transports, user, model, store
):
    prompt = f"Goes quiet {uuid.uuid4()} [tokens=40]"
    model.faults(stallAfterTokens=10, stallSeconds=MODEL_IDLE_TIMEOUT_S + 5)
    with _start(transports, transport, user, prompt) as live:
        frames = live.rest(timeout=MODEL_IDLE_TIMEOUT_S + 10)
        timeout_arrived = live.arrivals[-1]
    assert_transcript(frames)
    assert text_of(frames) == "".join(_tokens(prompt)[:10])
    error = frames[-1]["error"]
    assert error["code"] == "MODEL_TIMEOUT" and error["retryable"] is True
    (record,) = model_streams(model, prompt)
    silent_for = timeout_arrived - record["lastTokenAt"]
    assert MODEL_IDLE_TIMEOUT_S - 0.05 <= silent_for < MODEL_IDLE_TIMEOUT_S + 1.0, silent_for
    # The producer closed the model stream itself: no tokens generated for nobody.
    assert record["closedBy"] == "client"
    assert record["closedAt"] - record["lastTokenAt"] < MODEL_IDLE_TIMEOUT_S + 1.0
    store.assert_consistent(
        live.stream_id, user, status="error", client_frames=frames, error_code="MODEL_TIMEOUT"
    )
