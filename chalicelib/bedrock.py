"""Bedrock ConverseStream behind a small, bounded, testable interface.

``BedrockStreamer.open(req)`` returns a :class:`ModelStream` that yields normalized
events (``TextEvent``, ``StopEvent``, ``MetadataEvent``) and turns every failure into
a :class:`StreamError` whose message is safe to show a user.

Why the shape:

* A reader thread pulls boto3 events into a queue; the consumer waits with a timeout.
  That gives a first-event timeout, an idle (stall) timeout, and
  ``next_event(timeout)`` so a producer can wake every flush interval to check a
  cancel flag while the model is silent.
* Throttling before the first text is retried here (full-jitter exponential backoff,
  bounded by settings); the SDK's own retries are off so the policy stays ours.
  Once text has been yielded nothing is retried: a retry would duplicate text.
* Leaving a boto3 event stream without ``close()`` keeps the model generating, and a
  plain ``close()`` from another thread does not wake a reader blocked in ``recv``
  (the socket stays open until the next byte arrives). So closing first shuts down
  the read side (urllib3's ``HTTPResponse.shutdown()``), then closes the stream; the
  reader thread ends and the connection closes at once.

Usage::

    with streamer.open(req) as stream:
        while True:
            try:
                event = stream.next_event(flush_interval_s)
            except StopIteration:
                break              # the model finished; MetadataEvent was the last event
            if event is None:
                ...                # model silent; check the cancel flag
            else:
                ...

or simply ``for event in stream: ...``. A stream that completes always ends with
``StopEvent`` followed by ``MetadataEvent``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.protocol import STOP_REASONS
from chalicelib.settings import Settings

log = logging.getLogger(__name__)

# A boto3 "bedrock-runtime" client; botocore clients are generated at runtime, so Any.
BedrockClient = Any


# -- normalized events ------------------------------------------------------------------


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class StopEvent:
    stop_reason: str


@dataclass(frozen=True)
class MetadataEvent:
    usage: dict[str, int]  # inputTokens, outputTokens
    metrics: dict[str, int]  # modelLatencyMs (Bedrock's), modelFirstTokenMs (ours)


ModelEvent = TextEvent | StopEvent | MetadataEvent

# Bedrock's reasons that the protocol has too; "cancelled" is ours alone.
_KEPT_STOP_REASONS = frozenset(STOP_REASONS) - {"cancelled"}


def map_stop_reason(raw: str | None) -> str:
    """Bedrock's stopReason as one of the frame protocol's values (docs/protocol.md)."""
    if raw in _KEPT_STOP_REASONS:
        return raw
    if raw == "model_context_window_exceeded":
        return "max_tokens"  # the answer was cut for length, like max_tokens
    return "end_turn"  # tool_use (no tools are offered) and anything newer


# -- request building -------------------------------------------------------------------


class MessageLike(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


class ConverseInput(Protocol):
    """What a start request offers (chalicelib.frames.StartRequest matches it)."""

    @property
    def prompt(self) -> str | None: ...

    @property
    def messages(self) -> Sequence[MessageLike | Mapping[str, str]] | None: ...

    @property
    def system(self) -> str | None: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def temperature(self) -> float | None: ...


def _message_field(message: MessageLike | Mapping[str, str], name: str) -> str:
    if isinstance(message, Mapping):
        return str(message[name])
    return str(getattr(message, name))


def build_converse_request(req: ConverseInput, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``client.converse_stream(**...)``."""
    if req.prompt is not None:
        messages = [{"role": "user", "content": [{"text": req.prompt}]}]
    elif req.messages:
        messages = [
            {
                "role": _message_field(m, "role"),
                "content": [{"text": _message_field(m, "content")}],
            }
            for m in req.messages
        ]
    else:
        raise StreamError(ErrorCode.BAD_REQUEST, "Either prompt or messages is required.")
    inference: dict[str, Any] = {"maxTokens": req.max_tokens}
    if req.temperature is not None:
        inference["temperature"] = req.temperature
    body: dict[str, Any] = {
        "modelId": settings.model_id,
        "messages": messages,
        "inferenceConfig": inference,
    }
    if req.system:
        body["system"] = [{"text": req.system}]
    return body


# -- error mapping ----------------------------------------------------------------------

_MSG_BUSY = "The model is busy. Try again shortly."
_MSG_UNAVAILABLE = "The model is not available."
_MSG_REJECTED = "The model rejected the request."
_MSG_FAILED = "The model failed while answering."
_MSG_TIMEOUT = "The model took too long to respond."

# In-stream exceptions: boto3 raises EventStreamError with the lowerCamel member name.
_IN_STREAM_ERRORS: dict[str, tuple[ErrorCode, str]] = {
    "throttlingException": (ErrorCode.THROTTLED, _MSG_BUSY),
    "modelStreamErrorException": (ErrorCode.MODEL_ERROR, _MSG_FAILED),
    "internalServerException": (ErrorCode.MODEL_ERROR, _MSG_FAILED),
    "serviceUnavailableException": (ErrorCode.MODEL_ERROR, _MSG_UNAVAILABLE),
    "validationException": (ErrorCode.BAD_REQUEST, _MSG_REJECTED),
    "modelTimeoutException": (ErrorCode.MODEL_TIMEOUT, _MSG_TIMEOUT),
}
# HTTP-level errors from converse_stream(): modelled exceptions with PascalCase codes.
_HTTP_ERRORS: dict[str, tuple[ErrorCode, str]] = {
    "ValidationException": (ErrorCode.BAD_REQUEST, _MSG_REJECTED),
    "AccessDeniedException": (ErrorCode.MODEL_ERROR, _MSG_UNAVAILABLE),
    "ResourceNotFoundException": (ErrorCode.MODEL_ERROR, _MSG_UNAVAILABLE),
    "ModelTimeoutException": (ErrorCode.MODEL_TIMEOUT, _MSG_TIMEOUT),
}
# Worth retrying before the first text: the request never started generating.
_RETRY_HTTP_CODES = frozenset(
    {"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"}
)
_RETRY_IN_STREAM_CODES = frozenset({"throttlingException"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify_error(exc: BaseException) -> tuple[StreamError, bool]:
    """The user-facing error for ``exc`` and whether it may be retried before any text."""
    if isinstance(exc, EventStreamError):  # before ClientError: it is a subclass
        code = _error_code(exc)
        error_code, message = _IN_STREAM_ERRORS.get(code, (ErrorCode.MODEL_ERROR, _MSG_FAILED))
        return StreamError(error_code, message), code in _RETRY_IN_STREAM_CODES
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in _RETRY_HTTP_CODES:
            return StreamError(ErrorCode.THROTTLED, _MSG_BUSY, retryable=True), True
        error_code, message = _HTTP_ERRORS.get(code, (ErrorCode.MODEL_ERROR, _MSG_FAILED))
        return StreamError(error_code, message), False
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return StreamError(ErrorCode.MODEL_TIMEOUT, _MSG_TIMEOUT), False
    if isinstance(exc, EndpointConnectionError):
        return StreamError(ErrorCode.MODEL_ERROR, _MSG_UNAVAILABLE), False
    return StreamError(ErrorCode.MODEL_ERROR, _MSG_FAILED), False


def backoff_delay_s(retry: int, settings: Settings, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**retry)] milliseconds, in seconds."""
    cap_ms = min(float(settings.model_retry_max_ms), settings.model_retry_base_ms * 2.0**retry)
    return rng() * cap_ms / 1000.0


# -- the reader thread ------------------------------------------------------------------

_EVENT = "event"
_END = "end"
_ERROR = "error"
_CLOSED = "closed"
_JOIN_TIMEOUT_S = 0.5


def _interrupt_read(event_stream: Any) -> None:
    """Wake a reader thread blocked in ``recv`` on this boto3 EventStream's socket.

    ``EventStream.close()`` alone closes the file descriptor, which on Linux neither
    wakes a ``recv`` in another thread nor sends FIN while that ``recv`` is pending.
    urllib3 (>= 2.3) offers ``HTTPResponse.shutdown()`` for exactly this; botocore keeps
    the response in ``_raw_stream``. If either is missing, close() still runs.
    """
    shutdown = getattr(getattr(event_stream, "_raw_stream", None), "shutdown", None)
    if callable(shutdown):
        with contextlib.suppress(Exception):  # already released or closed: nothing to wake
            shutdown()


class _Attempt:
    """One converse_stream call, read by a daemon thread into ``items``.

    Items are ``(kind, payload, received_at)``; ``received_at`` uses the stream's clock.
    """

    def __init__(
        self, client: BedrockClient, request: dict[str, Any], clock: Callable[[], float]
    ) -> None:
        self.items: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self.started_at = clock()
        self._client = client
        self._request = request
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._event_stream: Any = None
        self._thread = threading.Thread(target=self._run, name="bedrock-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event_stream: Any = None
        try:
            response = self._client.converse_stream(**self._request)
            event_stream = response["stream"]
            with self._lock:
                if self._closed:
                    return  # closed while the call was in flight; finally closes it
                self._event_stream = event_stream
            for raw in event_stream:
                if self._closed:
                    return
                self.items.put((_EVENT, raw, self._clock()))
            self.items.put((_END, None, self._clock()))
        except Exception as exc:  # handed to the consumer, which maps it
            if not self._closed:
                self.items.put((_ERROR, exc, self._clock()))
        finally:
            if event_stream is not None:
                with contextlib.suppress(Exception):
                    event_stream.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            event_stream = self._event_stream
        if event_stream is not None:
            if self._thread.is_alive():
                # Only while reading: a finished response may have handed its connection
                # back to the pool, for another request to use.
                _interrupt_read(event_stream)
            with contextlib.suppress(Exception):
                event_stream.close()
        self.items.put((_CLOSED, None, self._clock()))  # wakes a waiting consumer
        if threading.current_thread() is not self._thread:
            # A call still waiting for response headers cannot be interrupted; it ends at
            # the client's read timeout and then closes its stream itself (daemon thread).
            self._thread.join(_JOIN_TIMEOUT_S)


# -- the stream -------------------------------------------------------------------------


class ModelStream:
    """Iterator of normalized model events; a context manager; ``close()`` is idempotent.

    ``close()`` may be called from another thread (e.g. a cancel watcher): a consumer
    waiting in :meth:`next_event` then gets ``StopIteration``.
    """

    def __init__(
        self,
        client: BedrockClient,
        request: dict[str, Any],
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._request = request
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._opened_at = clock()
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None
        self._attempts_started = 0
        self._retries_used = 0
        self._backoff_left_s = 0.0
        self._saw_event = False  # in the current attempt
        self._last_event_at = 0.0
        self._first_text_ms: int | None = None
        self._stop_seen = False
        self._metadata_seen = False
        self._pending: deque[ModelEvent] = deque()
        self._finished = False
        self._closed = False
        self._start_attempt()

    # -- public -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """No further events will come (finished, failed or closed)."""
        return (self._finished or self._closed) and not self._pending

    @property
    def attempts(self) -> int:
        """How many converse_stream calls were made (1 + retries)."""
        return self._attempts_started

    def next_event(self, timeout: float) -> ModelEvent | None:
        """The next event, or None if none arrived within ``timeout`` seconds.

        Raises ``StopIteration`` once the stream is over and ``StreamError`` on failure
        (including the first-event and idle timeouts, which close the model stream).
        """
        deadline = self._clock() + max(0.0, timeout)
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._finished or self._closed:
                raise StopIteration
            attempt = self._attempt
            if attempt is None:  # backing off before a retry
                if self._backoff_left_s > 0:
                    step = min(self._backoff_left_s, deadline - self._clock())
                    if step <= 0:
                        return None
                    self._sleep(step)
                    self._backoff_left_s -= step
                    continue
                self._start_attempt()
                continue
            event = self._wait_on(attempt, deadline)
            if event is not None:
                return event
            if self._pending or self._finished or self._closed:
                continue
            if self._clock() >= deadline:
                return None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            attempt = self._attempt
        if attempt is not None:
            attempt.close()

    def __iter__(self) -> Iterator[ModelEvent]:
        return self

    def __next__(self) -> ModelEvent:
        while True:
            # next_event enforces the model timeouts itself, so no poll limit is needed.
            event = self.next_event(math.inf)
            if event is not None:
                return event

    def __enter__(self) -> ModelStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _start_attempt(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._saw_event = False
            self._attempts_started += 1
            self._attempt = _Attempt(self._client, self._request, self._clock)

    def _model_deadline(self, attempt: _Attempt) -> float:
        if self._saw_event:
            return self._last_event_at + self._settings.model_idle_timeout_s
        return attempt.started_at + self._settings.model_first_event_timeout_s

    def _wait_on(self, attempt: _Attempt, deadline: float) -> ModelEvent | None:
        """Handle at most one queue item; None if it produced no event (or none came)."""
        model_deadline = self._model_deadline(attempt)
        wait = min(deadline, model_deadline) - self._clock()
        try:
            kind, payload, at = (
                attempt.items.get(timeout=wait) if wait > 0 else attempt.items.get_nowait()
            )
        except queue.Empty:
            if self._clock() >= model_deadline:
                first = not self._saw_event
                log.warning("bedrock %s timeout", "first-event" if first else "idle")
                self._fail(StreamError(ErrorCode.MODEL_TIMEOUT, _MSG_TIMEOUT))
            return None
        if kind == _EVENT:
            self._saw_event = True
            self._last_event_at = at
            return self._normalize(payload, at)
        if kind == _END:
            return self._end_of_stream()
        if kind == _ERROR:
            self._handle_error(payload)
            return None
        return None  # _CLOSED: the loop in next_event sees self._closed

    def _normalize(self, raw: Mapping[str, Any], at: float) -> ModelEvent | None:
        if "contentBlockDelta" in raw:
            text = (raw["contentBlockDelta"].get("delta") or {}).get("text")
            if not text:
                return None  # tool-use or reasoning deltas, empty text
            if self._first_text_ms is None:
                self._first_text_ms = max(0, round((at - self._opened_at) * 1000))
            return TextEvent(text)
        if "messageStop" in raw:
            self._stop_seen = True
            return StopEvent(map_stop_reason(raw["messageStop"].get("stopReason")))
        if "metadata" in raw:
            self._metadata_seen = True
            usage = raw["metadata"].get("usage") or {}
            latency = (raw["metadata"].get("metrics") or {}).get("latencyMs")
            return MetadataEvent(
                usage={
                    "inputTokens": int(usage.get("inputTokens", 0)),
                    "outputTokens": int(usage.get("outputTokens", 0)),
                },
                metrics=self._metrics(latency),
            )
        return None  # messageStart, contentBlockStart/Stop

    def _metrics(self, latency_ms: Any) -> dict[str, int]:
        metrics: dict[str, int] = {}
        if self._first_text_ms is not None:
            metrics["modelFirstTokenMs"] = self._first_text_ms
        if isinstance(latency_ms, int | float):
            metrics["modelLatencyMs"] = int(latency_ms)
        return metrics

    def _end_of_stream(self) -> ModelEvent | None:
        if not self._stop_seen:
            # A clean end without messageStop means the connection was cut mid-answer.
            log.warning("bedrock stream ended without messageStop")
            self._fail(StreamError(ErrorCode.MODEL_ERROR, _MSG_FAILED))
        self._finished = True
        self._close_attempt()
        if not self._metadata_seen:
            # Keep the promise that a complete stream ends with MetadataEvent.
            self._pending.append(
                MetadataEvent(
                    usage={"inputTokens": 0, "outputTokens": 0}, metrics=self._metrics(None)
                )
            )
        return None

    def _handle_error(self, exc: BaseException) -> None:
        error, retry_before_text = classify_error(exc)
        code = _error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        text_seen = self._first_text_ms is not None
        if retry_before_text and not text_seen:
            if self._retries_used < self._settings.model_throttle_retries:
                delay = backoff_delay_s(self._retries_used, self._settings, self._rng)
                log.info("bedrock %s, retry %d in %.3fs", code, self._retries_used + 1, delay)
                self._retries_used += 1
                self._close_attempt()
                self._backoff_left_s = delay
                return
            error = StreamError(ErrorCode.THROTTLED, _MSG_BUSY, retryable=True)
        log.warning("bedrock error %s -> %s", code, error.code.value)
        self._fail(error)

    def _close_attempt(self) -> None:
        with self._lock:
            attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.close()

    def _fail(self, error: StreamError) -> None:
        self._finished = True
        self._close_attempt()
        raise error


class BedrockStreamer:
    """Opens model streams; the boto3 client is created on first use and then reused."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], BedrockClient] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory or (lambda: default_client(settings))
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._client: BedrockClient | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> BedrockClient:
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def open(self, req: ConverseInput) -> ModelStream:
        """Start generating (in the background) and return the stream of events."""
        request = build_converse_request(req, self.settings)
        try:
            client = self.client
        except Exception:
            log.exception("could not create the bedrock-runtime client")
            raise StreamError(
                ErrorCode.INTERNAL, "The model client could not be created."
            ) from None
        return ModelStream(
            client, request, self.settings, sleep=self._sleep, clock=self._clock, rng=self._rng
        )


def default_client(settings: Settings) -> BedrockClient:
    """The boto3 client used in Lambda.

    The endpoint comes from ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` when set (the local
    cloud sets it); SDK retries are off (``total_max_attempts=1``; botocore's
    ``max_attempts`` counts *retries*) because :class:`ModelStream` retries itself.
    """
    import boto3  # deferred: importing boto3 costs cold-start time in tests that never call it
    from botocore.config import Config

    read_timeout = max(settings.model_first_event_timeout_s, settings.model_idle_timeout_s) + 5
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        read_timeout=read_timeout,
        connect_timeout=5,
    )
    return boto3.client("bedrock-runtime", region_name=settings.region, config=config)
