"""The deployed-stack target's pure parts: the outputs file, the figures taken from the
``done`` frame's model metrics, the command line and the costs left out."""

from __future__ import annotations

import json

import pytest

from bench import costs
from bench.__main__ import parse
from bench.deployed import DeployedError, load_outputs, local_stack_outputs
from bench.metrics import Received, reported_stream_metrics

SID = "6f1c2b8e-7d0a-4c1e-9b1a-2f3e4d5c6b7a"
OUTPUTS = {
    "RestApiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/api/",
    "WebsocketUrl": "wss://def.execute-api.eu-west-1.amazonaws.com/ws",
    "FunctionUrl": "https://ghi.lambda-url.eu-west-1.on.aws/",
    "RestStreamUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/api/streams",
    "AppsyncGraphqlUrl": "https://jkl.appsync-api.eu-west-1.amazonaws.com/graphql",
    "AppsyncRealtimeUrl": "wss://jkl.appsync-realtime-api.eu-west-1.amazonaws.com/graphql",
    "UserPoolId": "eu-west-1_abc",
    "UserPoolClientId": "client123",
    "Region": "eu-west-1",
    "ClientUrl": "https://d111.cloudfront.net/",
}


def frame(seq, type_="delta", **fields):
    return {"v": 1, "streamId": SID, "seq": seq, "type": type_, **fields}


def test_outputs_are_read_from_the_cdk_outputs_file(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"LlmStream": OUTPUTS, "Other": {}}))
    o = load_outputs(path)
    assert (o.stack, o.region, o.client_url, o.cognito_endpoint) == (
        "LlmStream",
        "eu-west-1",
        "https://d111.cloudfront.net/",
        None,
    )
    assert o.endpoints() == {
        "functionUrl": OUTPUTS["FunctionUrl"],
        "restStream": OUTPUTS["RestStreamUrl"],
        "websocket": OUTPUTS["WebsocketUrl"],
        "appsync": {
            "graphql": OUTPUTS["AppsyncGraphqlUrl"],
            "realtime": OUTPUTS["AppsyncRealtimeUrl"],
        },
    }
    # A single stack of another name is taken as it is.
    path.write_text(json.dumps({"MyStack": OUTPUTS}))
    assert load_outputs(path).stack == "MyStack"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "does not exist: deploy with `cdk deploy --outputs-file"),
        ("not json", "is not JSON"),
        ([1], "should map stack names to their outputs"),
        ({"A": OUTPUTS, "B": OUTPUTS}, "has no stack 'LlmStream' (it has A, B); pass --stack"),
        ({"LlmStream": {**OUTPUTS, "FunctionUrl": "", "Region": None}}, "FunctionUrl, Region"),
    ],
)
def test_a_bad_outputs_file_says_what_is_wrong(tmp_path, doc, message):
    path = tmp_path / "o.json"
    if doc is not None:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DeployedError) as info:
        load_outputs(path)
    assert message in str(info.value)


def test_the_local_clouds_endpoints_make_an_outputs_file_with_its_cognito(tmp_path):
    ep = {
        "client": "http://127.0.0.1:1/",
        "rest": "http://127.0.0.1:2/",
        "functionUrl": "http://127.0.0.1:3/",
        "websocket": "ws://127.0.0.1:4/",
        "appsync": {"graphql": "http://127.0.0.1:5/graphql", "realtime": "ws://127.0.0.1:5/rt"},
        "cognito": {
            "endpoint": "http://127.0.0.1:6/",
            "userPoolId": "us-east-1_x",
            "clientId": "c",
            "region": "us-east-1",
        },
    }
    path = tmp_path / "o.json"
    path.write_text(json.dumps(local_stack_outputs(ep)))
    o = load_outputs(path)
    assert (o.cognito_endpoint, o.rest_url, o.websocket_url) == (
        "http://127.0.0.1:6/",
        "http://127.0.0.1:2/",
        "ws://127.0.0.1:4/",
    )
    # The endpoints file itself is read the same way (a dry run against `make run`).
    path.write_text(json.dumps(ep))
    assert load_outputs(path) == o


def test_figures_come_from_the_done_frames_model_metrics():
    # Sent at 100.0; the model's first text 0.5 s later, its last 1.5 s after the start.
    r = Received("websocket", SID, "p", sent_at=100.0)
    r.frames = [
        (100.2, frame(0, "start")),
        (100.6, frame(1, text="abcde")),  # chars 1-5 of 11
        (101.7, frame(2, text="fghijk")),  # ends with the last char: emitted at 101.5
        (
            101.8,
            frame(
                3,
                "done",
                stopReason="max_tokens",
                usage={"inputTokens": 9, "outputTokens": 4},
                metrics={"modelFirstTokenMs": 500, "modelLatencyMs": 1500},
            ),
        ),
    ]
    m = reported_stream_metrics(r)
    assert m["ttftAddedMs"] == pytest.approx(100.0)
    # char 5 of 11 is emitted at 100.5 + 1.0 * 4/10 = 100.9; char 11 at 101.5
    assert m["lagsMs"] == pytest.approx([-300.0, 200.0])
    assert m["completionDelayMs"] == pytest.approx(300.0)
    assert (m["modelTokens"], m["modelTokensSent"]) == (4, 4)
    assert (m["lost"], m["duplicates"], m["terminal"], m["textComplete"]) == (0, 0, "done", True)
    assert m["modelDriftMs"] is None and m["startToModelMs"] is None
    assert m["streamSeconds"] == pytest.approx(1.8)


def test_without_metrics_or_a_done_frame_nothing_is_made_up():
    r = Received("appsync", SID, "p", sent_at=100.0)
    r.frames = [(100.2, frame(0, "start")), (100.6, frame(1, text="ab"))]
    m = reported_stream_metrics(r)
    assert m["ttftAddedMs"] is None and m["completionDelayMs"] is None and m["lagsMs"] == []
    assert (m["lost"], m["terminal"], m["textComplete"]) == (1, None, False)
    r.frames.append((100.9, frame(2, "done", stopReason="end_turn")))
    m = reported_stream_metrics(r)
    assert m["textComplete"] and m["lagsMs"] == [] and m["modelTokens"] == 1  # delta frames
    r.frames = [(100.2, frame(0, "start")), (100.9, frame(1, "done", stopReason="end_turn"))]
    assert not reported_stream_metrics(r)["textComplete"]  # no text at all


def test_the_command_line_keeps_local_settings_away_from_a_deployed_stack(capsys):
    o = parse(["--target", "deployed"])
    s = o.scenario
    assert (o.target, s.tokens, s.levels, s.repeats, s.baseline) == (
        "deployed",
        400,
        (1, 10),
        3,
        False,
    )
    assert parse([]).scenario.baseline and parse([]).scenario.tokens == 1000
    for bad in (["--rate", "50"], ["--flush-ms", "10"], ["--no-baseline"]):
        with pytest.raises(SystemExit):
            parse(["--target", "deployed", *bad])
        assert "local cloud settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--create-users"])
    assert "apply to --target deployed only" in capsys.readouterr().err


def test_costs_without_recorded_calls_leave_dynamodb_and_sqs_out():
    stream = {
        "messages": 40,
        "streamSeconds": 2.0,
        "connectSeconds": 0.1,
        "startAnsweredMs": 50.0,
    }
    usage = costs.usage_per_stream("appsync", [stream], None)
    assert not any(k.startswith(("dynamodb", "sqs")) for k in usage)
    usd = costs.cost_per_1000_streams(usage)
    assert set(usd) == {"lambda", "appsync", "total"}
    recorded = {"operations": {"sqs.SendMessage": 1}, "wru": 50.0, "rru": 2.0}
    assert {"dynamodb_wru", "sqs_request"} <= set(
        costs.usage_per_stream("appsync", [stream], recorded)
    )


def test_the_rest_streaming_row_bills_two_invocations_and_one_rest_call():
    stream = {"messages": 40, "streamSeconds": 2.0, "connectSeconds": None}
    usage = costs.usage_per_stream("rest_stream", [stream], None)
    assert usage == {"lambda_request": 2, "lambda_gb_s": 1.0, "apigw_rest_request": 1.0}
    usd = costs.cost_per_1000_streams(usage)
    assert usd["apigw"] == pytest.approx(1000 * 3.50 / 1e6)
    assert (
        usd["total"]
        > costs.cost_per_1000_streams(costs.usage_per_stream("function_url", [stream], None))[
            "total"
        ]
    )
