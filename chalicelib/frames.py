"""The frame protocol of docs/protocol.md: builders, validation, encoding, size caps,
and validation of the start request every transport accepts.

Pure functions and a small sequencer: no I/O, so the Node implementation can be
held to the same vectors (``tests/vectors/``).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib import protocol
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.settings import Limits

VERSION: int = protocol.DATA["version"]
FRAME_TYPES = frozenset(protocol.FRAME_TYPES)
TERMINAL_TYPES = frozenset(protocol.TERMINAL_TYPES)
STOP_REASONS = frozenset(protocol.STOP_REASONS)

# Transport limits on one encoded frame (bytes of UTF-8 JSON).
WEBSOCKET_FRAME_LIMIT: int = protocol.LIMITS["websocketFrameBytes"]
APPSYNC_PAYLOAD_LIMIT: int = protocol.LIMITS["appsyncPayloadBytes"]

# Bytes of a delta frame other than its text: {"v":1,"streamId":"<36>","seq":<n>,
# "type":"delta","text":""} is under 100; 256 leaves room for a wrapper.
_DELTA_OVERHEAD = 256
# The most bytes one character can take in our JSON: control characters are
# escaped as \u00XX (6 bytes); everything else is at most 4 bytes of UTF-8.
_MAX_BYTES_PER_CHAR = 6


class FrameError(ValueError):
    """A frame does not follow the protocol; the message names the rule."""


def max_text_chars(limit_bytes: int) -> int:
    """Characters of delta text that always fit in a frame of ``limit_bytes``."""
    return max(1, (limit_bytes - _DELTA_OVERHEAD) // _MAX_BYTES_PER_CHAR)


def encode(frame: Mapping[str, Any], limit_bytes: int | None = None) -> str:
    """Compact JSON of a frame; raises FrameError if it exceeds ``limit_bytes``."""
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    if limit_bytes is not None:
        size = len(text.encode("utf-8"))
        if size > limit_bytes:
            raise FrameError(f"frame is {size} bytes; the transport limit is {limit_bytes}")
    return text


class FrameBuilder:
    """Builds the frames of one stream with seq rising by exactly one."""

    def __init__(self, stream_id: str, next_seq: int = 0) -> None:
        self.stream_id = stream_id
        self._next_seq = next_seq

    @property
    def last_seq(self) -> int:
        """Seq of the last transcript frame built (-1 before the start frame)."""
        return self._next_seq - 1

    def _frame(self, type_: str, **fields: Any) -> dict[str, Any]:
        frame = {"v": VERSION, "streamId": self.stream_id, "seq": self._next_seq, "type": type_}
        frame.update(fields)
        self._next_seq += 1
        return frame

    def start(self, model: str) -> dict[str, Any]:
        if self._next_seq != 0:
            raise FrameError("start must be the first frame (seq 0)")
        return self._frame("start", model=model)

    def delta(self, text: str) -> dict[str, Any]:
        if not text:
            raise FrameError("delta text must not be empty")
        return self._frame("delta", text=text)

    def done(
        self,
        stop_reason: str,
        usage: Mapping[str, int] | None = None,
        metrics: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        if stop_reason not in STOP_REASONS:
            raise FrameError(f"unknown stopReason {stop_reason!r}")
        fields: dict[str, Any] = {"stopReason": stop_reason}
        if usage is not None:
            fields["usage"] = dict(usage)
        if metrics is not None:
            fields["metrics"] = dict(metrics)
        return self._frame("done", **fields)

    def error(self, err: StreamError) -> dict[str, Any]:
        return self._frame("error", error=err.to_dict())

    def heartbeat(self) -> dict[str, Any]:
        return {"v": VERSION, "streamId": self.stream_id, "type": "heartbeat"}


def rejection(err: StreamError, stream_id: str | None = None) -> dict[str, Any]:
    """An error frame that refuses a request before (or outside) a stream's transcript.

    It has no seq (it is not part of any transcript and is not stored); it names
    the stream when the request did.
    """
    frame: dict[str, Any] = {"v": VERSION, "type": "error", "error": err.to_dict()}
    if stream_id:
        frame["streamId"] = stream_id
    return frame


# -- validation -------------------------------------------------------------------------

_ALLOWED_FIELDS: dict[str, frozenset[str]] = {
    "start": frozenset({"v", "streamId", "seq", "type", "model"}),
    "delta": frozenset({"v", "streamId", "seq", "type", "text"}),
    "done": frozenset({"v", "streamId", "seq", "type", "stopReason", "usage", "metrics"}),
    "error": frozenset({"v", "streamId", "seq", "type", "error"}),
    "heartbeat": frozenset({"v", "streamId", "type"}),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_counts(frame: Mapping[str, Any], name: str) -> None:
    counts = frame.get(name)
    if counts is None:
        return
    if not isinstance(counts, Mapping):
        raise FrameError(f"{name} must be an object")
    for key, value in counts.items():
        if not _is_int(value) or value < 0:
            raise FrameError(f"{name}.{key} must be a non-negative integer")


def validate_frame(frame: Any) -> dict[str, Any]:
    """Return the frame if it follows docs/protocol.md; raise FrameError naming the rule broken."""
    if not isinstance(frame, Mapping):
        raise FrameError("frame must be a JSON object")
    if frame.get("v") != VERSION or isinstance(frame.get("v"), bool):
        raise FrameError(f"v must be {VERSION}")
    type_ = frame.get("type")
    if type_ not in FRAME_TYPES:
        raise FrameError(f"type must be one of {sorted(FRAME_TYPES)}")
    # A rejection (an error frame without seq) may come before any stream exists.
    is_rejection = type_ == "error" and "seq" not in frame
    stream_id = frame.get("streamId")
    if not (is_rejection and stream_id is None) and (
        not isinstance(stream_id, str) or not stream_id
    ):
        raise FrameError("streamId must be a non-empty string")
    unknown = set(frame) - _ALLOWED_FIELDS[type_]
    if unknown:
        raise FrameError(f"unknown field {sorted(unknown)[0]!r} in a {type_} frame")
    if type_ == "heartbeat":
        return dict(frame)
    seq = frame.get("seq")
    if is_rejection:
        seq = None
    elif not _is_int(seq) or seq < 0:
        raise FrameError("seq must be a non-negative integer")
    if type_ == "start":
        if seq != 0:
            raise FrameError("a start frame has seq 0")
        if not isinstance(frame.get("model"), str) or not frame["model"]:
            raise FrameError("start.model must be a non-empty string")
    elif seq == 0:
        raise FrameError("seq 0 is the start frame")
    if type_ == "delta" and (not isinstance(frame.get("text"), str) or not frame["text"]):
        raise FrameError("delta.text must be a non-empty string")
    if type_ == "done":
        if frame.get("stopReason") not in STOP_REASONS:
            raise FrameError(f"stopReason must be one of {sorted(STOP_REASONS)}")
        _check_counts(frame, "usage")
        _check_counts(frame, "metrics")
    if type_ == "error":
        err = frame.get("error")
        if not isinstance(err, Mapping):
            raise FrameError("error must be an object")
        if err.get("code") not in {c.value for c in ErrorCode}:
            raise FrameError("error.code must be one of the protocol's codes (docs/protocol.md)")
        if not isinstance(err.get("message"), str) or not err["message"]:
            raise FrameError("error.message must be a non-empty string")
        if not isinstance(err.get("retryable"), bool):
            raise FrameError("error.retryable must be a boolean")
        if set(err) - {"code", "message", "retryable"}:
            raise FrameError("error has unknown fields")
    return dict(frame)


# -- the start request ----------------------------------------------------------------

START_FIELDS = frozenset({"prompt", "messages", "system", "maxTokens", "temperature", "streamId"})
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class StartRequest:
    stream_id: str
    max_tokens: int
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    system: str | None = None
    temperature: float | None = None

    @property
    def input_chars(self) -> int:
        total = len(self.system or "")
        if self.prompt is not None:
            total += len(self.prompt)
        for m in self.messages or ():
            total += len(m.content)
        return total

    def to_dict(self) -> dict[str, Any]:
        """The normalized request (what the SQS message and the vectors carry)."""
        out: dict[str, Any] = {"streamId": self.stream_id, "maxTokens": self.max_tokens}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.messages is not None:
            out["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        if self.system is not None:
            out["system"] = self.system
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out


def _bad(message: str) -> StreamError:
    return StreamError(ErrorCode.BAD_REQUEST, message)


def parse_stream_id(value: Any) -> str:
    """A stream id is a UUID; returns its canonical lower-case form."""
    if not isinstance(value, str):
        raise _bad("streamId must be a UUID string")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise _bad("streamId must be a UUID") from None
    if str(parsed) != value.lower():
        raise _bad("streamId must be a UUID in 8-4-4-4-12 form")
    return str(parsed)


MAX_SEQ: int = protocol.LIMITS["maxSeq"]


def parse_after_seq(value: Any) -> int:
    """The ``afterSeq`` of a read or resume: -1 (everything) up to ``MAX_SEQ``."""
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_SEQ:
        raise _bad(f"afterSeq must be an integer from -1 to {MAX_SEQ}")
    return value


def _parse_messages(raw: Any, limits: Limits) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty array")
    if len(raw) > limits.max_messages:
        raise _bad(f"messages has {len(raw)} entries; the limit is {limits.max_messages}")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise _bad(f"messages[{i}] must be an object")
        extra = set(m) - {"role", "content"}
        if extra:
            raise _bad(f"messages[{i}] has unknown field {sorted(extra)[0]!r}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be 'user' or 'assistant'")
        if not isinstance(content, str) or not content.strip():
            raise _bad(f"messages[{i}].content must be a non-empty string")
        expected = ROLES[i % 2]
        if role != expected:
            raise _bad(
                f"messages[{i}].role must be {expected!r}: roles alternate, starting with 'user'"
            )
        out.append(Message(role, content))
    if out[-1].role != "user":
        raise _bad("the last message must have role 'user'")
    return tuple(out)


def parse_start_request(body: Any, limits: Limits) -> StartRequest:
    """Validate a start request (docs/protocol.md); BAD_REQUEST names the problem and the limit."""
    if not isinstance(body, Mapping):
        raise _bad("the request must be a JSON object")
    unknown = set(body) - START_FIELDS
    if unknown:
        raise _bad(f"unknown field {sorted(unknown)[0]!r}")
    has_prompt = body.get("prompt") is not None
    has_messages = body.get("messages") is not None
    if has_prompt == has_messages:
        raise _bad("exactly one of 'prompt' or 'messages' is required")

    prompt = messages = None
    if has_prompt:
        prompt = body["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise _bad("prompt must be a non-empty string")
    else:
        messages = _parse_messages(body["messages"], limits)

    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise _bad("system must be a string")
    system = system or None

    max_tokens = body.get("maxTokens", limits.default_max_tokens)
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        # JSON has one number type: 1.0 is the integer 1 (as JavaScript and GraphQL read it).
        max_tokens = int(max_tokens)
    if not _is_int(max_tokens) or not 1 <= max_tokens <= limits.max_tokens_limit:
        raise _bad(f"maxTokens must be an integer from 1 to {limits.max_tokens_limit}")

    temperature = body.get("temperature")
    if temperature is not None:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or not 0 <= temperature <= 1
        ):
            raise _bad("temperature must be a number from 0 to 1")
        temperature = float(temperature)

    raw_id = body.get("streamId")
    stream_id = str(uuid.uuid4()) if raw_id is None else parse_stream_id(raw_id)

    req = StartRequest(
        stream_id=stream_id,
        max_tokens=max_tokens,
        prompt=prompt,
        messages=messages,
        system=system,
        temperature=temperature,
    )
    if req.input_chars > limits.max_input_chars:
        raise _bad(
            f"input is {req.input_chars:,} characters; the limit is {limits.max_input_chars:,}"
        )
    return req
