"""chalicelib.bedrock against a scripted fake boto3 client (no sockets).

The fake client answers each converse_stream() call with the next step of a script:
an exception to raise, or the items of an event stream. Stream items are raw boto3
events (dicts), exceptions to raise mid-stream, ``BLOCK`` (the model goes silent until
the stream is closed), ``Gate`` (silent until the test opens it) or ``Advance`` (moves
the fake clock).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)

from chalicelib import bedrock
from chalicelib.bedrock import (
    BedrockStreamer,
    MetadataEvent,
    ModelEvent,
    ModelStream,
    StopEvent,
    TextEvent,
    backoff_delay_s,
    build_converse_request,
    map_stop_reason,
)
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import Message, StartRequest
from chalicelib.settings import Settings

WAIT = 5.0  # upper bound for any wait; never reached when things work
SDK_TEXT = "User arn:aws:iam::123456789012:role/x is not authorized; prompt: my secret"

BLOCK = object()


@dataclass
class Gate:
    opened: threading.Event = field(default_factory=threading.Event)


@dataclass
class Advance:
    seconds: float


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEventStream:
    def __init__(self, items: list[Any], clock: FakeClock | None) -> None:
        self.items = items
        self.clock = clock
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.items:
            if self.closed.is_set():
                return
            if item is BLOCK:
                self.closed.wait(WAIT)  # like a socket read that only close() interrupts
                return
            if isinstance(item, Gate):
                item.opened.wait(WAIT)
            elif isinstance(item, Advance):
                assert self.clock is not None
                self.clock.now += item.seconds
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def close(self) -> None:
        self.closed.set()


class FakeClient:
    def __init__(self, *script: Any, clock: FakeClock | None = None) -> None:
        self.script = list(script)
        self.clock = clock
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeEventStream] = []

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        stream = FakeEventStream(step, self.clock)
        self.streams.append(stream)
        return {"stream": stream}


def delta(text: str) -> dict[str, Any]:
    return {"contentBlockDelta": {"delta": {"text": text}, "contentBlockIndex": 0}}


def answer(*texts: str, stop: str = "end_turn", latency_ms: int = 42) -> list[Any]:
    return [
        {"messageStart": {"role": "assistant"}},
        *(delta(t) for t in texts),
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": stop}},
        {
            "metadata": {
                "usage": {"inputTokens": 3, "outputTokens": len(texts), "totalTokens": 5},
                "metrics": {"latencyMs": latency_ms},
            }
        },
    ]


def http_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": SDK_TEXT}}, "ConverseStream")


def in_stream(code: str) -> EventStreamError:
    return EventStreamError({"Error": {"Code": code, "Message": SDK_TEXT}}, "ConverseStream")


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "model_throttle_retries": 3,
        "model_retry_base_ms": 100,
        "model_retry_max_ms": 1000,
        "model_first_event_timeout_s": WAIT,
        "model_idle_timeout_s": WAIT,
    }
    return Settings().with_overrides(**(base | overrides))


@dataclass
class Harness:
    client: FakeClient
    streamer: BedrockStreamer
    sleeps: list[float]


def harness(
    *script: Any,
    clock: FakeClock | None = None,
    rng: Callable[[], float] = lambda: 0.5,
    **overrides: Any,
) -> Harness:
    client = FakeClient(*script, clock=clock)
    sleeps: list[float] = []
    kwargs: dict[str, Any] = {"sleep": sleeps.append, "rng": rng}
    if clock is not None:
        kwargs["clock"] = clock
    return Harness(client, BedrockStreamer(settings(**overrides), lambda: client, **kwargs), sleeps)


def prompt(text: str = "hello") -> StartRequest:
    return StartRequest(stream_id="s-1", max_tokens=256, prompt=text)


def texts(events: list[ModelEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextEvent)]


def collect_until_error(stream: ModelStream) -> tuple[list[ModelEvent], StreamError]:
    events: list[ModelEvent] = []
    with pytest.raises(StreamError) as caught:
        for event in stream:
            events.append(event)
    return events, caught.value


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bedrock-reader" and t.is_alive()]


# -- request building -------------------------------------------------------------------


def test_a_prompt_becomes_one_user_message() -> None:
    request = build_converse_request(prompt("hi there"), settings())

    assert request == {
        "modelId": Settings().model_id,
        "messages": [{"role": "user", "content": [{"text": "hi there"}]}],
        "inferenceConfig": {"maxTokens": 256},
    }


def test_messages_become_text_content_blocks() -> None:
    req = StartRequest(
        stream_id="s",
        max_tokens=10,
        messages=(Message("user", "a"), Message("assistant", "b"), Message("user", "c")),
    )

    request = build_converse_request(req, settings())

    assert request["messages"] == [
        {"role": "user", "content": [{"text": "a"}]},
        {"role": "assistant", "content": [{"text": "b"}]},
        {"role": "user", "content": [{"text": "c"}]},
    ]


def test_system_and_temperature_are_passed_when_given() -> None:
    req = StartRequest(stream_id="s", max_tokens=10, prompt="p", system="be brief", temperature=0.2)

    request = build_converse_request(req, settings())

    assert request["system"] == [{"text": "be brief"}]
    assert request["inferenceConfig"] == {"maxTokens": 10, "temperature": 0.2}


def test_a_request_without_prompt_or_messages_is_a_bad_request() -> None:
    with pytest.raises(StreamError) as caught:
        build_converse_request(StartRequest(stream_id="s", max_tokens=10), settings())

    assert caught.value.code is ErrorCode.BAD_REQUEST


# -- normal streaming -------------------------------------------------------------------


def test_a_stream_yields_text_then_stop_then_metadata() -> None:
    h = harness(answer("Hello", " world"))

    with h.streamer.open(prompt()) as stream:
        events = list(stream)

    assert texts(events) == ["Hello", " world"]
    assert events[-2] == StopEvent("end_turn")
    metadata = events[-1]
    assert isinstance(metadata, MetadataEvent)
    assert metadata.usage == {"inputTokens": 3, "outputTokens": 2}
    assert metadata.metrics["modelLatencyMs"] == 42
    assert metadata.metrics["modelFirstTokenMs"] >= 0


def test_model_first_token_ms_is_measured_from_open_to_first_text() -> None:
    clock = FakeClock()
    h = harness([Advance(0.5), {"messageStart": {}}, Advance(0.3), *answer("Hi")[1:]], clock=clock)

    events = list(h.streamer.open(prompt()))

    assert events[-1] == MetadataEvent(
        usage={"inputTokens": 3, "outputTokens": 1},
        metrics={"modelFirstTokenMs": 800, "modelLatencyMs": 42},
    )


def test_the_request_sent_is_the_built_converse_request() -> None:
    h = harness(answer("x"))

    list(h.streamer.open(prompt("hi")))

    assert h.client.calls == [build_converse_request(prompt("hi"), h.streamer.settings)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("content_filtered", "content_filtered"),
        ("guardrail_intervened", "guardrail_intervened"),
        ("tool_use", "end_turn"),
        ("model_context_window_exceeded", "max_tokens"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons_map_onto_the_frame_protocol(raw: str | None, expected: str) -> None:
    assert map_stop_reason(raw) == expected


def test_tool_use_stop_reason_is_reported_as_end_turn() -> None:
    h = harness(answer("x", stop="tool_use"))

    events = list(h.streamer.open(prompt()))

    assert StopEvent("end_turn") in events


def test_non_text_deltas_are_skipped() -> None:
    tool_delta = {"contentBlockDelta": {"delta": {"toolUse": {"input": "{}"}}}}
    h = harness([*answer("a")[:2], tool_delta, *answer("a")[2:]])

    assert texts(list(h.streamer.open(prompt()))) == ["a"]


def test_a_stream_cut_before_message_stop_is_a_model_error() -> None:
    h = harness([{"messageStart": {}}, delta("partial")])

    events, error = collect_until_error(h.streamer.open(prompt()))

    assert texts(events) == ["partial"]
    assert error.code is ErrorCode.MODEL_ERROR


def test_a_stream_missing_metadata_still_ends_with_a_metadata_event() -> None:
    h = harness(answer("a")[:-1])

    events = list(h.streamer.open(prompt()))

    assert isinstance(events[-1], MetadataEvent)
    assert events[-2] == StopEvent("end_turn")


# -- retries ----------------------------------------------------------------------------


def test_throttling_before_the_first_token_is_retried_then_succeeds() -> None:
    h = harness(
        http_error("ThrottlingException"),
        [{"messageStart": {}}, in_stream("throttlingException")],
        answer("ok"),
    )

    stream = h.streamer.open(prompt())
    events = list(stream)

    assert texts(events) == ["ok"]
    assert len(h.client.calls) == 3
    assert stream.attempts == 3
    assert len(h.sleeps) == 2


def test_service_unavailable_before_the_first_token_is_retried() -> None:
    h = harness(http_error("ServiceUnavailableException"), answer("ok"))

    assert texts(list(h.streamer.open(prompt()))) == ["ok"]
    assert len(h.client.calls) == 2


def test_exhausted_retries_raise_throttled_and_retryable() -> None:
    h = harness(*[http_error("ThrottlingException")] * 3, model_throttle_retries=2)

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is ErrorCode.THROTTLED
    assert error.retryable is True
    assert len(h.client.calls) == 3
    assert len(h.sleeps) == 2


def test_zero_retries_fails_on_the_first_throttle() -> None:
    h = harness(http_error("ThrottlingException"), model_throttle_retries=0)

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is ErrorCode.THROTTLED
    assert h.sleeps == []


def test_no_retry_once_text_has_been_yielded() -> None:
    h = harness([{"messageStart": {}}, delta("Hi"), in_stream("throttlingException")], answer("x"))

    events, error = collect_until_error(h.streamer.open(prompt()))

    assert texts(events) == ["Hi"]
    assert error.code is ErrorCode.THROTTLED
    assert len(h.client.calls) == 1
    assert h.sleeps == []


def test_backoff_with_maximal_jitter_doubles_up_to_the_cap() -> None:
    def top_of_range() -> float:
        return 1.0  # the top of every jitter range

    h = harness(
        *[http_error("ThrottlingException")] * 3,
        answer("ok"),
        rng=top_of_range,
        model_retry_max_ms=250,
    )

    list(h.streamer.open(prompt()))

    assert h.sleeps == [0.1, 0.2, 0.25]


def test_backoff_jitter_stays_within_zero_and_the_cap() -> None:
    rng = random.Random(7).random
    s = settings(model_retry_base_ms=100, model_retry_max_ms=1000)

    for retry in range(8):
        cap = min(1.0, 0.1 * 2**retry)
        delays = [backoff_delay_s(retry, s, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.9  # the whole range is used, not a fixed value


# -- error mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("throttlingException", ErrorCode.THROTTLED),
        ("modelStreamErrorException", ErrorCode.MODEL_ERROR),
        ("internalServerException", ErrorCode.MODEL_ERROR),
        ("serviceUnavailableException", ErrorCode.MODEL_ERROR),
        ("validationException", ErrorCode.BAD_REQUEST),
        ("modelTimeoutException", ErrorCode.MODEL_TIMEOUT),
        ("somethingNewException", ErrorCode.MODEL_ERROR),
    ],
)
def test_in_stream_exceptions_map_to_error_codes(code: str, expected: ErrorCode) -> None:
    h = harness([{"messageStart": {}}, delta("a"), in_stream(code)])

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is expected
    assert "arn:" not in error.message and "secret" not in error.message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ValidationException", ErrorCode.BAD_REQUEST),
        ("AccessDeniedException", ErrorCode.MODEL_ERROR),
        ("ResourceNotFoundException", ErrorCode.MODEL_ERROR),
        ("InternalServerException", ErrorCode.MODEL_ERROR),
        ("ModelTimeoutException", ErrorCode.MODEL_TIMEOUT),
    ],
)
def test_http_errors_map_to_error_codes(code: str, expected: ErrorCode) -> None:
    h = harness(http_error(code))

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is expected
    assert SDK_TEXT not in error.message and "arn:" not in error.message
    assert len(h.client.calls) == 1


def test_access_denied_says_the_model_is_not_available() -> None:
    h = harness(http_error("AccessDeniedException"))

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.message == "The model is not available."


def test_a_read_timeout_is_a_model_timeout() -> None:
    h = harness(ReadTimeoutError(endpoint_url="http://x"))

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is ErrorCode.MODEL_TIMEOUT


def test_an_unreachable_endpoint_is_a_model_error() -> None:
    h = harness(EndpointConnectionError(endpoint_url="http://x"))

    _, error = collect_until_error(h.streamer.open(prompt()))

    assert error.code is ErrorCode.MODEL_ERROR
    assert "http://x" not in error.message


# -- timeouts and closing ---------------------------------------------------------------


def test_first_event_timeout_is_a_model_timeout_and_closes_the_stream() -> None:
    h = harness([BLOCK], model_first_event_timeout_s=0.05)

    events, error = collect_until_error(h.streamer.open(prompt()))

    assert events == []
    assert error.code is ErrorCode.MODEL_TIMEOUT
    assert h.client.streams[0].closed.is_set()
    assert reader_threads() == []


def test_idle_timeout_after_some_text_is_a_model_timeout_and_closes_the_stream() -> None:
    h = harness([{"messageStart": {}}, delta("a"), BLOCK], model_idle_timeout_s=0.05)

    events, error = collect_until_error(h.streamer.open(prompt()))

    assert texts(events) == ["a"]
    assert error.code is ErrorCode.MODEL_TIMEOUT
    assert h.client.streams[0].closed.is_set()
    assert reader_threads() == []


def test_closing_early_closes_the_underlying_stream() -> None:
    h = harness([{"messageStart": {}}, delta("a"), delta("b"), BLOCK])

    stream = h.streamer.open(prompt())
    assert next(stream) == TextEvent("a")
    stream.close()

    assert h.client.streams[0].closed.is_set()
    assert reader_threads() == []
    assert stream.done


def test_leaving_the_with_block_closes_the_underlying_stream() -> None:
    h = harness([{"messageStart": {}}, delta("a"), BLOCK])

    with h.streamer.open(prompt()) as stream:
        next(stream)

    assert h.client.streams[0].closed.is_set()


def test_close_is_idempotent_and_ends_iteration() -> None:
    h = harness([{"messageStart": {}}, delta("a"), BLOCK])
    stream = h.streamer.open(prompt())

    stream.close()
    stream.close()

    with pytest.raises(StopIteration):
        stream.next_event(0.01)
    assert list(stream) == []


def test_close_from_another_thread_wakes_a_waiting_consumer() -> None:
    h = harness([{"messageStart": {}}, BLOCK])
    stream = h.streamer.open(prompt())
    outcome: list[str] = []
    waiting = threading.Event()

    def consume() -> None:
        waiting.set()
        try:
            stream.next_event(WAIT)
            outcome.append("event")
        except StopIteration:
            outcome.append("stopped")

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert waiting.wait(WAIT)
    stream.close()
    consumer.join(WAIT)

    assert outcome == ["stopped"]


def test_next_event_returns_none_while_the_model_is_silent() -> None:
    gate = Gate()
    h = harness([{"messageStart": {}}, delta("a"), gate, *answer("b")[1:]])
    stream = h.streamer.open(prompt())

    assert stream.next_event(WAIT) == TextEvent("a")
    assert stream.next_event(0.02) is None
    assert not stream.done
    gate.opened.set()
    assert stream.next_event(WAIT) == TextEvent("b")
    stream.close()


def test_next_event_raises_stop_iteration_after_the_last_event() -> None:
    h = harness(answer("a"))
    stream = h.streamer.open(prompt())

    events = [stream.next_event(WAIT) for _ in range(3)]

    assert isinstance(events[-1], MetadataEvent)
    with pytest.raises(StopIteration):
        stream.next_event(WAIT)
    assert stream.done


def test_no_reader_thread_outlives_a_finished_stream() -> None:
    h = harness(answer("a"))

    with h.streamer.open(prompt()) as stream:
        list(stream)

    assert reader_threads() == []


# -- the client -------------------------------------------------------------------------


def test_the_client_is_created_lazily_and_once() -> None:
    made: list[FakeClient] = []

    def factory() -> FakeClient:
        made.append(FakeClient(answer("a"), answer("b")))
        return made[-1]

    streamer = BedrockStreamer(settings(), factory)
    assert made == []

    list(streamer.open(prompt()))
    list(streamer.open(prompt()))

    assert len(made) == 1


def test_a_failing_client_factory_is_an_internal_error() -> None:
    def factory() -> Any:
        raise RuntimeError("no region")

    with pytest.raises(StreamError) as caught:
        BedrockStreamer(settings(), factory).open(prompt())

    assert caught.value.code is ErrorCode.INTERNAL


def test_default_client_has_sdk_retries_off_and_takes_the_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    s = settings(model_first_event_timeout_s=60.0, model_idle_timeout_s=30.0)

    client = bedrock.default_client(s)

    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == s.region
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.read_timeout > 60.0
    assert client.meta.config.connect_timeout == 5
