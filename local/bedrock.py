"""Local Bedrock runtime emulator: ``converse-stream`` and ``converse`` over HTTP/1.1.

Answers come from :mod:`local.simulated_model` and are streamed in the real
``application/vnd.amazon.eventstream`` format with chunked transfer encoding,
so boto3 (and the JS SDK with ``NodeHttpHandler``) parse them incrementally and
unchanged. SigV4 headers are accepted and never checked.

Model routes::

    POST /model/{modelId}/converse-stream
    POST /model/{modelId}/converse

Control routes (JSON)::

    GET    /_emulator/health
    GET    /_emulator/faults           current faults and settings
    POST   /_emulator/faults           body fields (all optional, combine freely):
        throttle: N           next N model requests answer HTTP 429 ThrottlingException
        throttleInStream: N   next N streams send a throttlingException frame before any token
        failAfterTokens: K    next stream sends modelStreamErrorException after K tokens
        stallAfterTokens: K   next stream goes silent after K tokens ...
        stallSeconds: S       ... for S seconds (then carries on)
        firstTokenDelayMs, tokensPerSecond, answerTokens   persistent timing/length settings
        reset: true           clear all faults and restore the settings the emulator started with
    GET    /_emulator/streams          log of model streams, newest last, at most 10,000:
        id, modelId, promptHash (never the prompt), openedAt, firstTokenAt, lastTokenAt,
        closedAt (unix seconds), closedBy ("client" | "complete" | "error"), tokensSent
    DELETE /_emulator/streams          clear the log

Run it on its own with ``python -m local.bedrock --port 8090``. In an event loop:
``port = await BedrockEmulator(tokens_per_second=80).start("127.0.0.1", 0)`` and later
``await emulator.stop()`` (or the module-level :func:`start`); from sync code and tests:
:class:`EmulatorThread`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from local import eventstream
from local.http_service import ControlError, JsonClient, Served, apply_control
from local.simulated_model import Generation, InvalidRequest, generate, prompt_hash, validate

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
# How often a silent stream (first-token delay, stall) checks that the caller is still
# there; bounds how late closedAt can be when the runner does not cancel handlers.
_LIVENESS_SLICE_S = 0.02
_MAX_LOGGED_STREAMS = 10_000


@dataclass(frozen=True)
class EmulatorConfig:
    """Persistent timing and length settings (changeable at runtime via /_emulator/faults)."""

    first_token_delay_ms: float = 300.0
    tokens_per_second: float = 50.0
    answer_tokens: int = 120


@dataclass
class Faults:
    """One-shot and counted faults; each stream consumes what applies to it."""

    throttle: int = 0
    throttle_in_stream: int = 0
    fail_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    stall_seconds: float = 0.0


@dataclass
class StreamRecord:
    """What the emulator observed about one model stream."""

    id: str
    model_id: str
    prompt_hash: str
    opened_at: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    closed_at: float | None = None
    closed_by: str | None = None  # "client" | "complete" | "error"
    tokens_sent: int = 0

    def finish(self, closed_by: str) -> None:
        if self.closed_by is None:
            self.closed_at = time.time()
            self.closed_by = closed_by

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "modelId": self.model_id,
            "promptHash": self.prompt_hash,
            "openedAt": self.opened_at,
            "firstTokenAt": self.first_token_at,
            "lastTokenAt": self.last_token_at,
            "closedAt": self.closed_at,
            "closedBy": self.closed_by,
            "tokensSent": self.tokens_sent,
        }


@dataclass(frozen=True)
class _StreamPlan:
    """The faults one stream took from the shared state when it opened."""

    throttle_in_stream: bool = False
    fail_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    stall_seconds: float = 0.0


_FAULT_FIELDS: dict[str, tuple[str, type]] = {
    "throttle": ("throttle", int),
    "throttleInStream": ("throttle_in_stream", int),
    "failAfterTokens": ("fail_after_tokens", int),
    "stallAfterTokens": ("stall_after_tokens", int),
    "stallSeconds": ("stall_seconds", float),
}
_SETTING_FIELDS: dict[str, tuple[str, type]] = {
    "firstTokenDelayMs": ("first_token_delay_ms", float),
    "tokensPerSecond": ("tokens_per_second", float),
    "answerTokens": ("answer_tokens", int),
}


def _number(name: str, value: Any, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ControlError(f"{name} must be an integer")
    if value < 0:
        raise ControlError(f"{name} must not be negative")
    return int(value) if kind is int else float(value)


class BedrockEmulator:
    """State shared by the routes: settings, pending faults and the stream log.

    Routes run on one event loop; the lock only matters when an in-process
    orchestrator calls :meth:`apply_control` or :meth:`streams` from another thread.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        first_token_delay_ms: float | None = None,
        tokens_per_second: float | None = None,
        answer_tokens: int | None = None,
    ) -> None:
        # Keyword settings override ``config``; None keeps the default.
        overrides = {
            k: v
            for k, v in (
                ("first_token_delay_ms", first_token_delay_ms),
                ("tokens_per_second", tokens_per_second),
                ("answer_tokens", answer_tokens),
            )
            if v is not None
        }
        self.initial_config = replace(config or EmulatorConfig(), **overrides)
        if self.initial_config.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        self.config = self.initial_config
        self.faults = Faults()
        self._log: list[StreamRecord] = []
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)  # notified when a stream ends
        self._served = Served("Bedrock emulator")

    # -- serving ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://host:port/`` while serving."""
        return self._served.endpoint

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the actual port."""
        # handler_cancellation: a client disconnect cancels the handler at once, which is
        # what makes closedAt accurate to about a millisecond.
        return await self._served.start(
            create_app(self), host, port, handler_cancellation=True, shutdown_timeout=1.0
        )

    async def stop(self) -> None:
        await self._served.stop()

    # -- control ---------------------------------------------------------------------------

    def apply_control(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a ``/_emulator/faults`` body; raises ``ControlError`` on unknown fields."""
        unknown = set(body) - set(_FAULT_FIELDS) - set(_SETTING_FIELDS) - {"reset"}
        if unknown:
            raise ControlError(f"unknown fields: {sorted(unknown)}")
        # Validate everything before changing anything, so a bad body changes nothing.
        faults = {
            attr: _number(k, body[k], kind)
            for k, (attr, kind) in _FAULT_FIELDS.items()
            if k in body
        }
        settings = {
            attr: _number(k, body[k], kind)
            for k, (attr, kind) in _SETTING_FIELDS.items()
            if k in body
        }
        if settings.get("tokens_per_second", 1) <= 0:
            raise ControlError("tokensPerSecond must be positive")
        with self._lock:
            if body.get("reset"):
                self.faults = Faults()
                self.config = self.initial_config
            for attr, value in faults.items():
                setattr(self.faults, attr, value)
            self.config = replace(self.config, **settings)
            return self.state()

    def state(self) -> dict[str, Any]:
        f, c = self.faults, self.config
        return {
            "faults": {
                "throttle": f.throttle,
                "throttleInStream": f.throttle_in_stream,
                "failAfterTokens": f.fail_after_tokens,
                "stallAfterTokens": f.stall_after_tokens,
                "stallSeconds": f.stall_seconds,
            },
            "settings": {
                "firstTokenDelayMs": c.first_token_delay_ms,
                "tokensPerSecond": c.tokens_per_second,
                "answerTokens": c.answer_tokens,
            },
        }

    def streams(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._log]

    def clear_streams(self) -> int:
        with self._lock:
            n = len(self._log)
            self._log.clear()
            return n

    def wait_for_streams(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Block (from another thread) until ``predicate(streams)`` holds after a stream
        ends; returns the log, or raises ``TimeoutError``."""
        with self._finished:
            snapshot: list[dict[str, Any]] = []

            def check() -> bool:
                snapshot[:] = [r.to_json() for r in self._log]
                return predicate(snapshot)

            if not self._finished.wait_for(check, timeout):
                raise TimeoutError("the stream log did not reach the expected state")
            return snapshot

    def _finish(self, record: StreamRecord, closed_by: str) -> None:
        with self._finished:
            record.finish(closed_by)
            self._finished.notify_all()

    # -- fault consumption -----------------------------------------------------------------

    def _take_http_throttle(self) -> bool:
        with self._lock:
            if self.faults.throttle > 0:
                self.faults.throttle -= 1
                return True
            return False

    def _take_stream_plan(self) -> _StreamPlan:
        with self._lock:
            f = self.faults
            if f.throttle_in_stream > 0:
                f.throttle_in_stream -= 1
                return _StreamPlan(throttle_in_stream=True)
            plan = _StreamPlan(
                fail_after_tokens=f.fail_after_tokens,
                stall_after_tokens=f.stall_after_tokens,
                stall_seconds=f.stall_seconds if f.stall_after_tokens is not None else 0.0,
            )
            f.fail_after_tokens = None
            f.stall_after_tokens = None
            f.stall_seconds = 0.0
            return plan

    def _open_record(self, model_id: str, body: Mapping[str, Any]) -> StreamRecord:
        record = StreamRecord(
            id=uuid.uuid4().hex,
            model_id=model_id,
            prompt_hash=prompt_hash(body),
            opened_at=time.time(),
        )
        with self._lock:
            self._log.append(record)
            # Bounded so a long benchmark run cannot grow memory without end.
            del self._log[:-_MAX_LOGGED_STREAMS]
        return record

    # -- model routes ----------------------------------------------------------------------

    async def handle_model(self, request: web.Request) -> web.StreamResponse:
        # Route on the raw path: boto3 percent-encodes ':' and '/' inside the model id,
        # and a decoded '/' (inference profile ARNs) would break segment matching.
        raw_path = request.raw_path.split("?", 1)[0]
        rest = raw_path[len("/model/") :]
        raw_model, _, operation = rest.rpartition("/")
        if not raw_model or operation not in ("converse-stream", "converse"):
            return _error(404, "UnknownOperationException", "Unknown operation")
        model_id = unquote(raw_model)
        if self._take_http_throttle():
            return _error(
                429, "ThrottlingException", "Too many requests, please wait before trying again."
            )
        try:
            body = json.loads(await request.read() or b"null")
            validate(body)
        except (ValueError, InvalidRequest) as exc:
            message = str(exc) if isinstance(exc, InvalidRequest) else "Malformed JSON body"
            return _error(400, "ValidationException", message)
        config = self.config
        answer = generate(body, config.answer_tokens)
        if operation == "converse":
            return await self._converse(request, answer, config)
        return await self._converse_stream(request, model_id, body, answer, config)

    async def _converse(
        self, request: web.Request, answer: Generation, config: EmulatorConfig
    ) -> web.Response:
        started = time.monotonic()
        try:
            # The whole generation time passes before a non-streaming answer comes back.
            await _pause(request, config.first_token_delay_ms / 1000)
            await _pause(request, answer.output_tokens / config.tokens_per_second)
        except ConnectionError:
            return web.Response(status=499)  # nobody is listening any more
        payload = {
            "output": {"message": {"role": "assistant", "content": [{"text": answer.text}]}},
            "stopReason": answer.stop_reason,
            "usage": answer.usage(),
            "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
        }
        return web.json_response(payload, headers={"x-amzn-RequestId": str(uuid.uuid4())})

    async def _converse_stream(
        self,
        request: web.Request,
        model_id: str,
        body: Mapping[str, Any],
        answer: Generation,
        config: EmulatorConfig,
    ) -> web.StreamResponse:
        plan = self._take_stream_plan()
        record = self._open_record(model_id, body)
        started = time.monotonic()
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": EVENTSTREAM_CONTENT_TYPE,
                "x-amzn-RequestId": str(uuid.uuid4()),
            },
        )
        # Without chunking boto3 buffers the whole body (urllib3 reads 64 KiB or EOF).
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if plan.throttle_in_stream:
                await _send(
                    request,
                    response,
                    eventstream.exception(
                        "throttlingException", "Too many tokens, please wait before trying again."
                    ),
                )
                self._finish(record, "error")
            else:
                finished = await self._stream_tokens(
                    request, response, record, answer, plan, config, started
                )
                self._finish(record, "complete" if finished else "error")
            await response.write_eof()
        except asyncio.CancelledError:
            # handler_cancellation=True: aiohttp cancels us the moment the socket closes.
            self._finish(record, "client")
            raise
        except ConnectionError:
            self._finish(record, "client")
        return response

    async def _stream_tokens(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: StreamRecord,
        answer: Generation,
        plan: _StreamPlan,
        config: EmulatorConfig,
        started: float,
    ) -> bool:
        """Send the event sequence; False when an injected failure ended it early."""
        loop = asyncio.get_running_loop()
        await _pause(request, config.first_token_delay_ms / 1000)
        await _send(request, response, eventstream.event("messageStart", {"role": "assistant"}))
        interval = 1.0 / config.tokens_per_second
        schedule = loop.time()  # token i goes out at schedule + i * interval
        for i, token in enumerate(answer.tokens):
            if plan.fail_after_tokens == i:
                await self._send_model_error(request, response)
                return False
            if plan.stall_after_tokens == i:
                await _pause(request, plan.stall_seconds)
                schedule += plan.stall_seconds
            await _pause(request, schedule + i * interval - loop.time())
            await _send(
                request,
                response,
                eventstream.event(
                    "contentBlockDelta", {"delta": {"text": token}, "contentBlockIndex": 0}
                ),
            )
            now = time.time()
            if record.first_token_at is None:
                record.first_token_at = now
            record.last_token_at = now
            record.tokens_sent += 1
        if plan.fail_after_tokens is not None and plan.fail_after_tokens >= len(answer.tokens):
            await self._send_model_error(request, response)
            return False
        await _send(
            request, response, eventstream.event("contentBlockStop", {"contentBlockIndex": 0})
        )
        await _send(
            request, response, eventstream.event("messageStop", {"stopReason": answer.stop_reason})
        )
        await _send(
            request,
            response,
            eventstream.event(
                "metadata",
                {
                    "usage": answer.usage(),
                    "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
                },
            ),
        )
        return True

    async def _send_model_error(self, request: web.Request, response: web.StreamResponse) -> None:
        await _send(
            request,
            response,
            eventstream.exception(
                "modelStreamErrorException", "The model stream failed (injected fault)."
            ),
        )

    # -- control routes --------------------------------------------------------------------

    async def handle_get_faults(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(self.state())

    async def handle_post_faults(self, request: web.Request) -> web.Response:
        return await apply_control(request, self.apply_control)

    async def handle_get_streams(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": self.streams()})

    async def handle_delete_streams(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.clear_streams()})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _error(status: int, error_type: str, message: str) -> web.Response:
    # botocore's rest-json parser takes the error code from x-amzn-ErrorType.
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _caller_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pause(request: web.Request, seconds: float) -> None:
    """Sleep, but notice within one slice that the caller went away (raises ConnectionError).

    With ``handler_cancellation`` the sleep is cancelled at once anyway; the slices cover
    runners that do not cancel handlers.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, seconds)
    while True:
        if _caller_gone(request):
            raise ConnectionResetError("caller closed the connection")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, _LIVENESS_SLICE_S))


async def _send(request: web.Request, response: web.StreamResponse, frame: bytes) -> None:
    if _caller_gone(request):
        raise ConnectionResetError("caller closed the connection")
    await response.write(frame)  # one chunk per event, written as produced


EMULATOR_KEY = web.AppKey("bedrock_emulator", BedrockEmulator)


def create_app(config: EmulatorConfig | BedrockEmulator | None = None) -> web.Application:
    """The emulator as an aiohttp application (state in ``app[EMULATOR_KEY]``).

    Serve it with ``handler_cancellation=True`` on the runner (as :func:`start` does) so a
    client disconnect is noticed within about a millisecond.
    """
    emulator = config if isinstance(config, BedrockEmulator) else BedrockEmulator(config)
    app = web.Application()
    app[EMULATOR_KEY] = emulator
    app.router.add_post("/model/{tail:.+}", emulator.handle_model)
    app.router.add_get("/_emulator/health", emulator.handle_health)
    app.router.add_get("/_emulator/faults", emulator.handle_get_faults)
    app.router.add_post("/_emulator/faults", emulator.handle_post_faults)
    app.router.add_get("/_emulator/streams", emulator.handle_get_streams)
    app.router.add_delete("/_emulator/streams", emulator.handle_delete_streams)
    return app


async def start(
    host: str = "127.0.0.1",
    port: int = 0,
    config: EmulatorConfig | BedrockEmulator | None = None,
) -> tuple[BedrockEmulator, int]:
    """Start an emulator on ``host:port`` (0 = any free port) in the running loop.

    Returns the emulator (stop it with ``await emulator.stop()``) and the actual port.
    """
    emulator = config if isinstance(config, BedrockEmulator) else BedrockEmulator(config)
    port = await emulator.start(host, port)
    return emulator, port


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread (for sync callers and tests)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: EmulatorConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.emulator = BedrockEmulator(config)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bedrock-emulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("Bedrock emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("Bedrock emulator failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.port = self._loop.run_until_complete(self.emulator.start(self.host, self.port))
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.emulator.stop())
        self._loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmulatorControl(JsonClient):
    """A tiny synchronous client for the control routes (tests, bench, orchestrator)."""

    def faults(self, **fields: Any) -> dict[str, Any]:
        """POST /_emulator/faults with the given fields (wire names, e.g. ``throttle=2``)."""
        return self.call("POST", "/_emulator/faults", fields)

    def reset(self) -> dict[str, Any]:
        return self.faults(reset=True)

    def streams(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_emulator/streams")["streams"])

    def clear_streams(self) -> int:
        return int(self.call("DELETE", "/_emulator/streams")["cleared"])


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(description="Local Bedrock runtime emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay-ms", type=float, default=defaults.first_token_delay_ms)
    parser.add_argument("--tokens-per-second", type=float, default=defaults.tokens_per_second)
    parser.add_argument("--answer-tokens", type=int, default=defaults.answer_tokens)
    return parser.parse_args(argv)


async def _serve_forever(args: argparse.Namespace) -> None:
    config = EmulatorConfig(
        first_token_delay_ms=args.first_token_delay_ms,
        tokens_per_second=args.tokens_per_second,
        answer_tokens=args.answer_tokens,
    )
    emulator, _ = await start(args.host, args.port, config)
    print(json.dumps({"bedrock": emulator.endpoint, **asdict(config)}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(_parse_args(argv)))


if __name__ == "__main__":
    main()
