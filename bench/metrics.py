"""What one stream's client saw, against what the model emitted (pure functions).

The client records every frame with its receive time; the Bedrock emulator records,
per model stream, when it wrote the first and the last token (``/_emulator/streams``),
on the same machine clock. The emulator writes token ``i`` on a fixed schedule
(``first + i / rate``); under load its event loop can fall behind that schedule, so a
token's emit time is interpolated between the observed first and last token times,
and the difference from the schedule is reported as ``modelDriftMs``.

Per-frame lag is the frame's receive time minus the emit time of the last token whose
text it carries (a frame that completes half a token is charged the token it
completes).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("done", "error")


@dataclass
class Received:
    """One stream as its client saw it."""

    architecture: str
    stream_id: str
    prompt: str
    max_tokens: int = 4096  # the start request's maxTokens
    # (time.time() at receipt, frame), heartbeats excluded, in arrival order.
    frames: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    messages: int = 0  # transport messages carrying frames: posts, publishes, SSE events
    wire_bytes: int = 0  # payload bytes of those messages as received
    heartbeats: int = 0
    connect_started: float | None = None  # socket opening began (WebSocket, AppSync)
    connected_at: float | None = None  # ready to start (handshake / subscription done)
    sent_at: float | None = None  # the start request left the client
    start_answered_at: float | None = None  # startStream answered (AppSync)
    closed_at: float | None = None  # the client was done with the connection
    error: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def token_ends(tokens: Sequence[str]) -> list[int]:
    """Cumulative character count at the end of each token."""
    ends, total = [], 0
    for t in tokens:
        total += len(t)
        ends.append(total)
    return ends


def check_transcript(
    frames: Sequence[tuple[float, Mapping[str, Any]]], answer: str | None
) -> dict[str, Any]:
    """Lost and duplicate frames and text completeness of one received stream.

    ``seq`` must run from 0 to the terminal frame's seq: a missing seq is a lost
    frame (so is a missing terminal frame), a seq seen twice a duplicate. ``answer`` is
    the model's whole text; None when it is not known (a real model): the text then
    counts as complete when it is not empty and the transcript ended with ``done``.
    """
    seqs = [f["seq"] for _, f in frames if "seq" in f]
    seen: dict[int, int] = {}
    for s in seqs:
        seen[s] = seen.get(s, 0) + 1
    terminal = [f for _, f in frames if f.get("type") in TERMINAL]
    last = terminal[-1]["seq"] if terminal and "seq" in terminal[-1] else max(seqs, default=-1)
    lost = sum(1 for s in range(last + 1) if s not in seen) + (0 if terminal else 1)
    duplicates = sum(n - 1 for n in seen.values())
    # The text as a client that orders by seq and drops repeats would show it.
    by_seq: dict[int, Mapping[str, Any]] = {}
    for _, f in frames:
        if "seq" in f:
            by_seq.setdefault(f["seq"], f)
    shown = "".join(
        by_seq[s].get("text", "") for s in sorted(by_seq) if by_seq[s].get("type") == "delta"
    )
    return {
        "transcriptFrames": len(seen),
        "lost": lost,
        "duplicates": duplicates,
        "terminal": terminal[-1]["type"] if terminal else None,
        "stopReason": terminal[-1].get("stopReason") if terminal else None,
        "textComplete": shown == answer
        if answer is not None
        else bool(shown) and bool(terminal) and terminal[-1]["type"] == "done",
    }


def stream_metrics(
    received: Received, tokens: Sequence[str], model: Mapping[str, Any]
) -> dict[str, Any]:
    """Every per-stream figure: TTFT added, per-frame lags, completion delay, counts.

    ``model`` is the emulator's record of the stream (openedAt, firstTokenAt,
    lastTokenAt, tokensSent).
    """
    n = len(tokens)
    first, last = float(model["firstTokenAt"]), float(model["lastTokenAt"])
    step = (last - first) / (n - 1) if n > 1 else 0.0
    ends = token_ends(tokens)
    lags: list[tuple[float, float]] = []  # (seconds since the model's first token, lag ms)
    chars = 0
    first_delta_at: float | None = None
    for at, frame in received.frames:
        if frame.get("type") != "delta":
            continue
        first_delta_at = at if first_delta_at is None else first_delta_at
        chars += len(frame.get("text", ""))
        k = min(bisect.bisect_left(ends, chars), n - 1)
        lags.append((at - first, (at - (first + k * step)) * 1000.0))
    terminal_at = next((at for at, f in received.frames if f.get("type") in TERMINAL), None)
    transcript = check_transcript(received.frames, "".join(tokens))
    lag_ms = [lag for _, lag in lags]
    return {
        "architecture": received.architecture,
        "streamId": received.stream_id,
        "modelTokens": n,
        "modelTokensSent": model.get("tokensSent"),
        **transcript,
        "deltaFrames": len(lags),
        "messages": received.messages,
        "wireBytes": received.wire_bytes,
        "heartbeats": received.heartbeats,
        "ttftAddedMs": None if first_delta_at is None else (first_delta_at - first) * 1000.0,
        "lagsMs": lag_ms,
        "lagSeries": lags,
        "completionDelayMs": None if terminal_at is None else (terminal_at - last) * 1000.0,
        "modelDriftMs": ((last - first) - (n - 1) / model["rate"]) * 1000.0
        if "rate" in model and n > 1
        else None,
        # The queue hop (AppSync): start request sent -> the model stream opened.
        "startToModelMs": None
        if received.sent_at is None
        else (float(model["openedAt"]) - received.sent_at) * 1000.0,
        "streamSeconds": None
        if received.sent_at is None or terminal_at is None
        else terminal_at - received.sent_at,
        "connectionSeconds": None
        if received.connect_started is None or received.closed_at is None
        else received.closed_at - received.connect_started,
        "connectSeconds": None
        if received.connect_started is None or received.connected_at is None
        else received.connected_at - received.connect_started,
    }


def summarize(streams: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Figures over a set of streams of one architecture (one run or one level)."""
    rows = list(streams)
    lags = [lag for r in rows for lag in r["lagsMs"]]
    ttft = [r["ttftAddedMs"] for r in rows if r["ttftAddedMs"] is not None]
    completion = [r["completionDelayMs"] for r in rows if r["completionDelayMs"] is not None]
    drift = [r["modelDriftMs"] for r in rows if r["modelDriftMs"] is not None]
    hop = [r["startToModelMs"] for r in rows if r["startToModelMs"] is not None]
    tokens = sum(r["modelTokens"] for r in rows)
    messages = sum(r["messages"] for r in rows)
    return {
        "streams": len(rows),
        # Streams that did not end with done and their whole text (a failed start, an
        # error frame, a client that gave up).
        "failed": sum(1 for r in rows if r["terminal"] != "done" or not r["textComplete"]),
        "lost": sum(r["lost"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
        "textComplete": all(r["textComplete"] for r in rows),
        "modelTokens": tokens,
        "frames": sum(r["transcriptFrames"] for r in rows),
        "deltaFrames": sum(r["deltaFrames"] for r in rows),
        "messages": messages,
        "wireBytes": sum(r["wireBytes"] for r in rows),
        "callsPer1kTokens": messages * 1000.0 / tokens if tokens else math.nan,
        "ttftAddedP50Ms": percentile(ttft, 0.5),
        "ttftAddedP99Ms": percentile(ttft, 0.99),
        "lagP50Ms": percentile(lags, 0.5),
        "lagP99Ms": percentile(lags, 0.99),
        "lagMaxMs": max(lags) if lags else math.nan,
        "completionP50Ms": percentile(completion, 0.5),
        "completionP99Ms": percentile(completion, 0.99),
        "modelDriftMaxMs": max(drift) if drift else math.nan,
        "startToModelP50Ms": percentile(hop, 0.5) if hop else None,
    }


def terminal_metrics(received: Received) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``usage`` and ``metrics`` of the stream's ``done`` frame (empty if none)."""
    done = next((f for _, f in received.frames if f.get("type") == "done"), {})
    return dict(done.get("usage") or {}), dict(done.get("metrics") or {})


def reported_stream_metrics(received: Received) -> dict[str, Any]:
    """Every per-stream figure of ``stream_metrics`` without the model's emit times (a
    deployed stack, a real model): the producer's own report in the ``done`` frame
    stands in for them.

    The model call is taken to start when the client sent its start request, so its
    first token is at ``sent + modelFirstTokenMs`` and its last at ``sent +
    modelLatencyMs``; the emit time of a character is interpolated between the two by
    its position in the text. Every delay is therefore an upper bound: it includes the
    start request's way to the producer (the queue hop on AppSync, the generator's
    invocation on WebSocket). ``modelDriftMs`` and ``startToModelMs`` are unknown.
    """
    usage, reported = terminal_metrics(received)
    first_ms, latency_ms = reported.get("modelFirstTokenMs"), reported.get("modelLatencyMs")
    deltas = [(at, f) for at, f in received.frames if f.get("type") == "delta"]
    total = sum(len(f.get("text", "")) for _, f in deltas)
    sent = received.sent_at
    first = last = None
    if sent is not None and isinstance(first_ms, int | float):
        first = sent + float(first_ms) / 1000.0
        if isinstance(latency_ms, int | float):
            last = sent + max(float(latency_ms), float(first_ms)) / 1000.0
    lags: list[tuple[float, float]] = []
    if first is not None and last is not None and total:
        chars = 0
        for at, frame in deltas:
            chars += len(frame.get("text", ""))
            emit = first + (last - first) * ((chars - 1) / (total - 1) if total > 1 else 0.0)
            lags.append((at - first, (at - emit) * 1000.0))
    first_delta_at = deltas[0][0] if deltas else None
    terminal_at = next((at for at, f in received.frames if f.get("type") in TERMINAL), None)
    output_tokens = usage.get("outputTokens")
    return {
        "architecture": received.architecture,
        "streamId": received.stream_id,
        "modelTokens": int(output_tokens) if isinstance(output_tokens, int) else len(deltas),
        "modelTokensSent": output_tokens,
        **check_transcript(received.frames, None),
        "deltaFrames": len(deltas),
        "messages": received.messages,
        "wireBytes": received.wire_bytes,
        "heartbeats": received.heartbeats,
        "ttftAddedMs": None
        if first is None or first_delta_at is None
        else (first_delta_at - first) * 1000.0,
        "lagsMs": [lag for _, lag in lags],
        "lagSeries": lags,
        "completionDelayMs": None
        if last is None or terminal_at is None
        else (terminal_at - last) * 1000.0,
        "modelDriftMs": None,
        "startToModelMs": None,
        "modelFirstTokenMs": first_ms,
        "modelLatencyMs": latency_ms,
        "streamSeconds": None if sent is None or terminal_at is None else terminal_at - sent,
        "connectionSeconds": None
        if received.connect_started is None or received.closed_at is None
        else received.closed_at - received.connect_started,
        "connectSeconds": None
        if received.connect_started is None or received.connected_at is None
        else received.connected_at - received.connect_started,
    }
