"""The Bedrock emulator, driven by real boto3 and by chalicelib.bedrock over loopback.

One emulator serves the module from a background event loop; every test starts from
fast default timing, no pending faults and an empty stream log. Waits on the emulator's
stream log block on its condition variable, never on a sleep.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError

from chalicelib.bedrock import BedrockStreamer, MetadataEvent, StopEvent, TextEvent
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import StartRequest
from chalicelib.settings import Settings
from local.bedrock import EmulatorControl, EmulatorThread
from local.simulated_model import answer_text, request_for_prompt, usage

pytestmark = pytest.mark.local

REGION = "us-east-1"
MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
WAIT = 5.0  # upper bound for any wait; never reached when things work
FAST = {"firstTokenDelayMs": 5, "tokensPerSecond": 2000, "answerTokens": 40}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread() as running:
        yield running


CLIENTS: list[Any] = []  # closed after each test, so no pooled socket outlives it


@pytest.fixture(autouse=True)
def clean(emulator: EmulatorThread) -> Iterator[EmulatorControl]:
    control = EmulatorControl(emulator.url)
    control.faults(reset=True, **FAST)
    control.clear_streams()
    yield control
    while CLIENTS:
        CLIENTS.pop().close()


@pytest.fixture
def control(clean: EmulatorControl) -> EmulatorControl:
    return clean


def make_client(url: str) -> Any:
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION)
    # SDK retries off: each fault must map to exactly one request.
    client = session.client(
        "bedrock-runtime", endpoint_url=url, config=Config(retries={"total_max_attempts": 1})
    )
    CLIENTS.append(client)
    return client


@pytest.fixture
def client(emulator: EmulatorThread) -> Any:
    return make_client(emulator.url)


def streamer(emulator: EmulatorThread, **overrides: Any) -> BedrockStreamer:
    settings = Settings().with_overrides(
        **({"model_retry_base_ms": 1, "model_retry_max_ms": 5} | overrides)
    )
    return BedrockStreamer(settings, lambda: make_client(emulator.url))


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def stream_texts(response: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    try:
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                texts.append(event["contentBlockDelta"]["delta"]["text"])
            else:
                others.append(event)
    finally:
        response["stream"].close()
    return "".join(texts), others


def wait_for_closed(emulator: EmulatorThread, count: int = 1) -> list[dict[str, Any]]:
    def closed(streams: list[dict[str, Any]]) -> bool:
        return sum(s["closedAt"] is not None for s in streams) >= count

    return emulator.emulator.wait_for_streams(closed, WAIT)


def http(url: str, method: str, body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def start(prompt: str) -> StartRequest:
    return StartRequest(stream_id="s", max_tokens=1024, prompt=prompt)


# -- boto3 against the emulator ---------------------------------------------------------


def test_converse_stream_delivers_the_simulated_answer(client: Any) -> None:
    response = client.converse_stream(modelId=MODEL_ID, messages=user("hello"))

    text, others = stream_texts(response)

    assert text == answer_text(request_for_prompt("hello"), default_tokens=40)
    assert others[0] == {"messageStart": {"role": "assistant"}}
    assert {"messageStop": {"stopReason": "end_turn"}} in others
    metadata = others[-1]["metadata"]
    assert metadata["usage"] == usage(request_for_prompt("hello"), default_tokens=40)
    assert metadata["metrics"]["latencyMs"] >= 0


def test_max_tokens_cuts_the_answer_with_stop_reason_max_tokens(client: Any) -> None:
    response = client.converse_stream(
        modelId=MODEL_ID, messages=user("hello"), inferenceConfig={"maxTokens": 7}
    )

    text, others = stream_texts(response)

    assert text == answer_text(request_for_prompt("hello", max_tokens=7), default_tokens=40)
    assert {"messageStop": {"stopReason": "max_tokens"}} in others
    assert others[-1]["metadata"]["usage"]["outputTokens"] == 7


def test_events_arrive_while_the_model_is_still_producing(
    client: Any, control: EmulatorControl, emulator: EmulatorThread
) -> None:
    control.faults(tokensPerSecond=50)
    response = client.converse_stream(modelId=MODEL_ID, messages=user("slowly [tokens=25]"))

    first_received: float | None = None
    with contextlib.closing(response["stream"]) as events:
        for event in events:
            if "contentBlockDelta" in event and first_received is None:
                first_received = time.time()
    (record,) = wait_for_closed(emulator)

    assert first_received is not None
    # The first delta was in our hands before the emulator had sent even half the answer.
    halfway = record["firstTokenAt"] + (record["lastTokenAt"] - record["firstTokenAt"]) / 2
    assert first_received < halfway


def test_an_in_stream_model_error_arrives_after_k_tokens(
    client: Any, control: EmulatorControl, emulator: EmulatorThread
) -> None:
    control.faults(failAfterTokens=5)
    response = client.converse_stream(modelId=MODEL_ID, messages=user("hello"))

    texts: list[str] = []
    with (
        pytest.raises(EventStreamError) as caught,
        contextlib.closing(response["stream"]) as events,
    ):
        for event in events:
            if "contentBlockDelta" in event:
                texts.append(event["contentBlockDelta"]["delta"]["text"])

    assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert len(texts) == 5
    (record,) = wait_for_closed(emulator)
    assert record["closedBy"] == "error"
    assert record["tokensSent"] == 5


def test_fail_after_tokens_applies_to_the_next_stream_only(
    client: Any, control: EmulatorControl
) -> None:
    control.faults(failAfterTokens=0)
    with pytest.raises(EventStreamError):
        stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("a")))

    text, _ = stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("a")))

    assert text == answer_text(request_for_prompt("a"), default_tokens=40)


def test_an_in_stream_throttle_comes_before_any_text(client: Any, control: EmulatorControl) -> None:
    control.faults(throttleInStream=1)
    response = client.converse_stream(modelId=MODEL_ID, messages=user("hello"))

    events: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as caught, contextlib.closing(response["stream"]) as raw:
        for event in raw:
            events.append(event)

    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert events == []


def test_an_http_throttle_raises_the_modelled_throttling_exception(
    client: Any, control: EmulatorControl
) -> None:
    control.faults(throttle=1)

    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse_stream(modelId=MODEL_ID, messages=user("hello"))
    text, _ = stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("hello")))

    assert text  # the fault was used up by one request


def test_an_invalid_conversation_raises_validation_exception(client: Any) -> None:
    assistant_first = [{"role": "assistant", "content": [{"text": "hi"}]}]

    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.converse_stream(modelId=MODEL_ID, messages=assistant_first)

    assert "start with a user message" in caught.value.response["Error"]["Message"]


def test_malformed_json_is_a_400_validation_exception(emulator: EmulatorThread) -> None:
    status, headers, body = http(f"{emulator.url}/model/m/converse-stream", "POST", b"{nope")

    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert "message" in body


def test_model_ids_are_unquoted_from_the_raw_path(client: Any, emulator: EmulatorThread) -> None:
    arn = f"arn:aws:bedrock:{REGION}:123456789012:inference-profile/{MODEL_ID}"

    stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("a")))
    stream_texts(client.converse_stream(modelId=arn, messages=user("a")))

    records = wait_for_closed(emulator, count=2)
    assert [r["modelId"] for r in records] == [MODEL_ID, arn]


def test_the_stream_log_holds_a_prompt_hash_not_the_prompt(
    client: Any, emulator: EmulatorThread, control: EmulatorControl
) -> None:
    stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("my secret plan")))
    wait_for_closed(emulator)

    (record,) = control.streams()

    assert "secret" not in json.dumps(record)
    assert record["closedBy"] == "complete"
    assert record["tokensSent"] == 40
    assert record["openedAt"] <= record["firstTokenAt"] <= record["closedAt"]


def test_converse_returns_the_whole_answer(client: Any) -> None:
    response = client.converse(modelId=MODEL_ID, messages=user("hello"))

    assert response["output"]["message"]["content"][0]["text"] == answer_text(
        request_for_prompt("hello"), default_tokens=40
    )
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == usage(request_for_prompt("hello"), default_tokens=40)
    assert response["metrics"]["latencyMs"] >= 0


# -- control routes ---------------------------------------------------------------------


def test_unknown_fault_fields_are_rejected(emulator: EmulatorThread) -> None:
    status, _, body = http(f"{emulator.url}/_emulator/faults", "POST", b'{"explode": 1}')

    assert status == 400
    assert "explode" in body["message"]


def test_reset_clears_faults_and_restores_settings(control: EmulatorControl) -> None:
    control.faults(throttle=3, failAfterTokens=2, tokensPerSecond=7)

    state = control.reset()

    assert state["faults"]["throttle"] == 0
    assert state["faults"]["failAfterTokens"] is None
    assert state["settings"]["tokensPerSecond"] == 50.0


def test_delete_streams_clears_the_log(client: Any, control: EmulatorControl) -> None:
    stream_texts(client.converse_stream(modelId=MODEL_ID, messages=user("a")))

    assert control.clear_streams() == 1
    assert control.streams() == []


# -- chalicelib.bedrock against the emulator --------------------------------------------


def test_streamer_retries_http_throttles_and_succeeds(
    emulator: EmulatorThread, control: EmulatorControl
) -> None:
    control.faults(throttle=2)

    with streamer(emulator).open(start("hello")) as stream:
        events = list(stream)

    assert "".join(e.text for e in events if isinstance(e, TextEvent)) == answer_text(
        request_for_prompt("hello"), default_tokens=40
    )
    assert stream.attempts == 3
    assert events[-2] == StopEvent("end_turn")
    assert isinstance(events[-1], MetadataEvent)


def test_streamer_retries_an_in_stream_throttle(
    emulator: EmulatorThread, control: EmulatorControl
) -> None:
    control.faults(throttleInStream=1)

    with streamer(emulator).open(start("hello")) as stream:
        events = list(stream)

    assert stream.attempts == 2
    assert isinstance(events[-1], MetadataEvent)


def test_streamer_gives_up_with_throttled_after_its_retries(
    emulator: EmulatorThread, control: EmulatorControl
) -> None:
    control.faults(throttle=10)

    with pytest.raises(StreamError) as caught:
        list(streamer(emulator, model_throttle_retries=2).open(start("hello")))

    assert caught.value.code is ErrorCode.THROTTLED
    assert caught.value.retryable
    assert control.faults()["faults"]["throttle"] == 7  # 1 call + 2 retries


def test_a_stall_ends_in_model_timeout_and_closes_the_model_stream(
    emulator: EmulatorThread, control: EmulatorControl
) -> None:
    control.faults(stallAfterTokens=3, stallSeconds=30)
    texts: list[str] = []

    with pytest.raises(StreamError) as caught:
        for event in streamer(emulator, model_idle_timeout_s=0.2).open(start("hi")):
            if isinstance(event, TextEvent):
                texts.append(event.text)

    assert caught.value.code is ErrorCode.MODEL_TIMEOUT
    assert len(texts) == 3
    (record,) = wait_for_closed(emulator)
    assert record["closedBy"] == "client"
    # Closed after the 0.2 s idle timeout, not when the 30 s stall would have ended.
    assert record["tokensSent"] == 3
    assert record["closedAt"] - record["firstTokenAt"] < 1.0


def test_closing_a_model_stream_early_is_seen_by_the_emulator_at_once(
    emulator: EmulatorThread, control: EmulatorControl
) -> None:
    control.faults(tokensPerSecond=20)
    stream = streamer(emulator).open(start("long [tokens=400]"))
    for _ in range(3):
        next(stream)

    closed_at = time.time()
    stream.close()
    (record,) = wait_for_closed(emulator)

    assert record["closedBy"] == "client"
    assert record["tokensSent"] < 400
    assert closed_at <= record["closedAt"] < closed_at + 0.5


def test_default_client_finds_the_emulator_through_the_environment(
    emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emulator.url)

    default = BedrockStreamer(Settings())
    CLIENTS.append(default.client)
    with default.open(start("hello")) as stream:
        text = "".join(e.text for e in stream if isinstance(e, TextEvent))

    assert text == answer_text(request_for_prompt("hello"), default_tokens=40)
