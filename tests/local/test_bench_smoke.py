"""The benchmark's own correctness, on a tiny scenario (``make bench`` runs the real one).

Both local clouds (coalescing and per-token), every architecture, one stream and two
concurrent streams, 60 tokens: every frame is counted, none lost or repeated, the text
is complete, and the call counts agree with the frames on both sides of the wire. No
timing is asserted: speed is what the benchmark measures, not what tests check.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import runner
from bench.__main__ import write
from bench.scenario import ARCHITECTURES, Scenario

pytestmark = pytest.mark.local

TOKENS = 60
SCENARIO = Scenario(
    tokens=TOKENS,
    tokens_per_second=400.0,
    first_token_ms=50.0,
    levels=(1, 2),
    repeats=1,
)


@pytest.fixture(scope="module")
def results():
    return asyncio.run(runner.run(SCENARIO, progress=lambda line: None))


def _levels(results, mode):
    run = results["modes"][mode]
    for arch in ARCHITECTURES:
        yield from ((arch, level) for level in run["single"][arch]["runs"])
        yield from ((arch, level) for level in run["sweep"][arch])


@pytest.mark.parametrize("mode", ["coalesce", "per_token"])
def test_every_stream_is_complete_with_no_frame_lost_or_repeated(results, mode):
    levels = list(_levels(results, mode))
    # coalesce: one stream and two at once per architecture; per_token: one stream each.
    assert sorted((a, lv["concurrency"]) for a, lv in levels) == sorted(
        (a, n) for a in ARCHITECTURES for n in ((1, 2) if mode == "coalesce" else (1,))
    )
    for arch, level in levels:
        assert level["errors"] == [], (arch, level["errors"])
        assert len(level["streams"]) == level["concurrency"]
        for s in level["streams"]:
            assert s["error"] is None
            assert (s["terminal"], s["stopReason"]) == ("done", "end_turn")
            assert (s["lost"], s["duplicates"]) == (0, 0), (arch, s)
            assert s["textComplete"], arch
            assert s["modelTokens"] == s["modelTokensSent"] >= TOKENS
            # start + deltas + done, seq 0..n-1, every one of them measured
            assert s["transcriptFrames"] == s["deltaFrames"] + 2
            assert len(s["lagsMs"]) == s["deltaFrames"]
            assert s["ttftAddedMs"] is not None and s["completionDelayMs"] is not None


def test_the_baseline_sends_one_frame_per_token_and_coalescing_far_fewer(results):
    for arch in ARCHITECTURES:
        (baseline,) = results["modes"]["per_token"]["single"][arch]["runs"][0]["streams"]
        assert baseline["deltaFrames"] == baseline["modelTokens"]
        for _, level in _levels(results, "coalesce"):
            for s in level["streams"]:
                assert 1 <= s["deltaFrames"] < s["modelTokens"]


@pytest.mark.parametrize("mode", ["coalesce", "per_token"])
def test_call_counts_agree_with_the_frames(results, mode):
    for arch, level in _levels(results, mode):
        frames = sum(s["transcriptFrames"] for s in level["streams"])
        messages = sum(s["messages"] for s in level["streams"])
        # One post / publish / SSE event per frame: no heartbeat is due in so short a stream.
        assert messages == frames, arch
        if arch not in ("function_url", "rest_stream"):  # SSE: the response is the count
            # What the gateway posted / AppSync published, counted on the server side.
            assert level["serverCalls"] == frames, arch
    for arch in ARCHITECTURES:
        single = results["modes"][mode]["single"][arch]
        frames = sum(s["transcriptFrames"] for lv in single["runs"] for s in lv["streams"])
        recorded = single["calls"]
        # Every transcript frame is stored once (DynamoDB, counted at the local cloud).
        assert recorded["wru"] >= frames, (arch, recorded)
        if arch == "appsync":
            assert recorded["operations"].get("sqs.SendMessage") == len(single["runs"])


def test_resources_of_the_cloud_are_measured(results):
    for _, level in _levels(results, "coalesce"):
        res = level["resources"]
        assert res["cpuSeconds"] > 0 and res["peakRssMb"] > 50


def test_the_report_has_every_table_and_the_plot(results, tmp_path):
    text = write(results, tmp_path)
    assert (tmp_path / "latest.md").read_text() == text + "\n"
    for heading in ("## One stream", "## Targets", "## Concurrency sweep", "## Cost per 1,000"):
        assert heading in text
    for label in ("Function URL (SSE)", "WebSocket (API Gateway)", "AppSync + SQS"):
        # the figures, the cost and the usage tables
        assert text.count(f"| {label} | per-token baseline |") == 3
    assert (tmp_path / "lag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["single"]["per_token:websocket"]["lost"] == 0
