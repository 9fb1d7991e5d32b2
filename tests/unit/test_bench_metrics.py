"""The benchmark's measurements (bench/metrics.py, calls.py, costs.py) on made-up streams:
if these are wrong, every figure in the benchmark is."""

import base64
import json

import pytest

from bench import calls, costs
from bench.metrics import Received, check_transcript, percentile, stream_metrics, summarize

SID = "6f1c2b8e-7d0a-4c1e-9b1a-2f3e4d5c6b7a"


def frame(seq, type_="delta", **fields):
    return {"v": 1, "streamId": SID, "seq": seq, "type": type_, **fields}


def test_a_complete_transcript_has_nothing_lost_or_repeated():
    got = check_transcript(
        [(1.0, frame(0, "start")), (1.1, frame(1, text="ab")), (1.2, frame(2, "done"))], "ab"
    )
    assert (got["lost"], got["duplicates"], got["textComplete"]) == (0, 0, True)
    assert got["transcriptFrames"] == 3 and got["terminal"] == "done"


def test_gaps_a_missing_terminal_and_repeats_are_counted():
    frames = [(1.0, frame(0, "start")), (1.1, frame(1, text="a")), (1.3, frame(3, text="c"))]
    got = check_transcript(frames, "abc")
    assert got["lost"] == 2  # seq 2, and the terminal frame that never came
    assert not got["textComplete"]
    repeated = [*frames[:2], (1.2, frame(1, text="a")), (1.3, frame(2, text="bc")),
                (1.4, frame(3, "done"))]  # fmt: skip
    got = check_transcript(repeated, "abc")
    assert (got["lost"], got["duplicates"]) == (0, 1)
    assert got["textComplete"]  # de-duplicated by seq, as a client shows it


def test_lag_is_charged_to_the_last_token_a_frame_carries():
    tokens = ["ab", "cd", "ef", "gh"]  # emitted at 100.0, 100.1, 100.2, 100.3
    r = Received("websocket", SID, "p", sent_at=99.0)
    r.frames = [
        (99.9, frame(0, "start")),
        (100.15, frame(1, text="abc")),  # completes token 1 only in part: charged token 1
        (100.35, frame(2, text="defgh")),  # ends with token 3
        (100.4, frame(3, "done")),
    ]
    model = {"openedAt": 99.5, "firstTokenAt": 100.0, "lastTokenAt": 100.3, "rate": 10.0}
    m = stream_metrics(r, tokens, model)
    assert m["lagsMs"] == pytest.approx([50.0, 50.0])
    assert m["ttftAddedMs"] == pytest.approx(150.0)
    assert m["completionDelayMs"] == pytest.approx(100.0)
    assert m["modelDriftMs"] == pytest.approx(0.0, abs=1e-6)
    assert m["startToModelMs"] == pytest.approx(500.0)
    assert (m["lost"], m["deltaFrames"], m["textComplete"]) == (0, 2, True)


def test_summaries_and_percentiles():
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3
    assert percentile(list(range(1, 101)), 0.99) == 99
    row = {
        "lagsMs": [10.0, 30.0],
        "ttftAddedMs": 5.0,
        "completionDelayMs": 7.0,
        "modelDriftMs": 0.0,
        "startToModelMs": None,
        "modelTokens": 500,
        "messages": 52,
        "terminal": "done",
        "textComplete": True,
        "lost": 0,
        "duplicates": 0,
        "transcriptFrames": 52,
        "deltaFrames": 50,
        "wireBytes": 1000,
    }
    s = summarize([row, {**row, "lagsMs": [20.0]}])
    assert s["callsPer1kTokens"] == pytest.approx(104.0)
    assert (s["lagP50Ms"], s["lagMaxMs"], s["failed"]) == (20.0, 30.0, 0)


def _entry(target, body=None, encoded=False):
    raw = json.dumps(body or {})
    if encoded:
        raw = base64.b64encode(raw.encode()).decode()
    return {"headers": {"X-Amz-Target": target}, "body": raw, "body_encoded": encoded}


def test_recorded_calls_become_billed_units():
    got = calls.count(
        [
            _entry("DynamoDB_20120810.PutItem"),
            _entry("DynamoDB_20120810.BatchWriteItem", {"RequestItems": {"t": [{}, {}]}}, True),
            _entry("DynamoDB_20120810.TransactWriteItems", {"TransactItems": [{}, {}]}),
            _entry("DynamoDB_20120810.GetItem", {"ConsistentRead": True}),
            _entry("DynamoDB_20120810.GetItem", {}),
            _entry("AmazonSQS.SendMessage"),
            {"headers": {}, "body": ""},  # not an AWS JSON call: ignored
        ]
    )
    assert (got["wru"], got["rru"], got["sqsRequests"]) == (7, 1.5, 1)
    assert got["operations"]["dynamodb.GetItem"] == 2


def test_costs_follow_the_prices():
    usd = costs.cost_per_1000_streams({"lambda_request": 2, "apigw_ws_message": 200})
    assert usd["lambda"] == pytest.approx(2 * 0.20 / 1e6 * 1000)
    assert usd["apigw"] == pytest.approx(200 * 1.00 / 1e6 * 1000)
    assert usd["total"] == pytest.approx(usd["lambda"] + usd["apigw"])
