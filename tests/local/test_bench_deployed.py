"""The benchmark's deployed-stack target, end to end, without AWS: a stack-outputs file
that points at a local cloud (its Cognito through ``CognitoEndpoint``), the bench user
from ``BENCH_USERNAME`` / ``BENCH_PASSWORD`` and, in a second run, users created and
deleted with admin calls. Tiny streams; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from botocore.exceptions import ClientError

from bench import deployed
from bench.__main__ import main
from bench.deployed import local_stack_outputs
from bench.scenario import ARCHITECTURES, Scenario
from local.bedrock import EmulatorControl
from local.simulated_model import prompt_hash, request_for_prompt
from tests.support.cloud import Cloud

pytestmark = pytest.mark.local

TOKENS = 40


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("bench-deployed"))
    EmulatorControl(c.ep["bedrock"]).faults(firstTokenDelayMs=50, tokensPerSecond=400)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def outputs_file(cloud, tmp_path_factory):
    path = tmp_path_factory.mktemp("outputs") / "stack-outputs.json"
    path.write_text(json.dumps(local_stack_outputs(cloud.ep)))
    return path


@pytest.fixture(scope="module")
def report(cloud, outputs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    user = cloud.ep["user"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_USERNAME", user["username"])
        mp.setenv("BENCH_PASSWORD", user["password"])
        args = ["--target", "deployed", "--outputs", str(outputs_file), "--out", str(out)]
        assert main([*args, "--tokens", str(TOKENS), "--levels", "1,2", "--repeats", "1"]) == 0
    return out


def test_every_stream_completes_and_is_measured_from_the_done_frames_metrics(cloud, report):
    doc = json.loads((report / "deployed.json").read_text())
    assert doc["target"]["modelLabel"] == "local simulated model"  # from GET /config
    assert doc["target"]["flushIntervalMs"] == 50
    records = {s["promptHash"]: s for s in EmulatorControl(cloud.ep["bedrock"]).streams()}
    for arch in ARCHITECTURES:
        one = doc["single"][f"deployed:{arch}"]
        assert (one["streams"], one["failed"], one["lost"], one["duplicates"]) == (1, 0, 0, 0)
        assert one["modelTokens"] == TOKENS  # usage.outputTokens of the done frame
        assert one["completionP99Ms"] is not None and one["ttftAddedP99Ms"] is not None
        assert one["lagP99Ms"] is not None
        (_, two) = doc["sweep"][arch]
        assert (two["concurrency"], two["failed"], two["lost"]) == (2, 0, 0)
        assert two["errors"] == [] and two["serverCalls"] is None
        # No DynamoDB/SQS counting on AWS: those costs are left out, not made up.
        usage = doc["costsPer1000Streams"][f"deployed:{arch}"]["usage"]
        assert not any(k.startswith(("dynamodb", "sqs")) for k in usage)
    assert len(records) >= 9  # every stream reached the local model


def test_the_reported_model_metrics_are_the_producers_own(cloud, report, outputs_file):
    """modelLatencyMs covers the model's whole answer: at least its first-to-last token
    span as the emulator recorded it (what the estimates are anchored on)."""
    outputs = deployed.load_outputs(outputs_file)
    assert outputs.cognito_endpoint == cloud.ep["cognito"]["endpoint"]
    model = EmulatorControl(cloud.ep["bedrock"])
    model.clear_streams()
    # One more stream through the session API, to see its per-stream figures.
    users = deployed.BenchUsers(
        outputs,
        username=cloud.ep["user"]["username"],
        password=cloud.ep["user"]["password"],
        create=False,
        streams_per_user=3,
    )
    session = deployed.DeployedSession(outputs, users, Scenario(tokens=TOKENS))
    level = asyncio.run(session.run_level("websocket", 1))
    (s,) = level["streams"]
    (record,) = model.streams()
    assert record["promptHash"] == prompt_hash(
        request_for_prompt(deployed.prompt(s["streamId"], TOKENS), TOKENS)
    )
    assert s["modelTokensSent"] == record["tokensSent"] == TOKENS
    span_ms = (record["lastTokenAt"] - record["firstTokenAt"]) * 1000
    assert s["modelLatencyMs"] >= s["modelFirstTokenMs"] >= 0
    assert s["modelLatencyMs"] >= span_ms - 5
    assert len(s["lagsMs"]) == s["deltaFrames"] >= 1 and s["textComplete"]


def test_the_report_says_what_stands_in_for_the_model_and_what_is_not_counted(report):
    text = (report / "deployed.md").read_text()
    assert text.startswith("# Benchmark results: deployed stack")
    for heading in ("## One stream", "## Targets (as deployed)", "## Concurrency sweep"):
        assert heading in text
    assert "`metrics.modelFirstTokenMs`" in text and "`metrics.modelLatencyMs`" in text
    assert "DynamoDB and SQS requests are not counted on AWS" in text
    assert "![Per-frame lag over time](deployed-lag.png)" in text
    assert (report / "deployed-lag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (report / "latest.md").exists()  # local results are not overwritten
    for label in ("Function URL (SSE)", "WebSocket (API Gateway)", "AppSync + SQS"):
        assert f"| {label} | as deployed |" in text
        assert f"| {label} | per-token baseline |" not in text


def test_created_bench_users_run_the_levels_and_are_deleted(
    cloud, outputs_file, tmp_path, monkeypatch
):
    # Admin calls need credentials (any, locally); the default chain finds these.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bench-admin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench-admin")
    monkeypatch.delenv("BENCH_USERNAME", raising=False)
    args = ["--target", "deployed", "--outputs", str(outputs_file), "--out", str(tmp_path)]
    # 4 streams at once need two users at 3 running streams each.
    opts = ["--architectures", "websocket", "--tokens", "20", "--levels", "1,4", "--repeats", "1"]
    assert main([*args, *opts, "--create-users"]) == 0
    doc = json.loads((tmp_path / "deployed.json").read_text())
    (_, four) = doc["sweep"]["websocket"]
    assert (four["concurrency"], four["failed"], four["lost"]) == (4, 0, 0)
    idp = cloud.cognito()
    pool = cloud.ep["cognito"]["userPoolId"]
    for i in (1, 2):
        names = [u for u in _bench_user_names(tmp_path) if u.endswith(f"-{i:03d}")]
        assert names, "the run printed no bench user"
        with pytest.raises(ClientError, match="UserNotFound"):
            idp.admin_get_user(UserPoolId=pool, Username=names[0])


def _bench_user_names(out):
    return json.loads((out / "deployed.json").read_text())["target"]["benchUsers"]


def test_without_a_bench_user_or_enough_of_them_it_says_what_to_do(
    cloud, outputs_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("BENCH_USERNAME", raising=False)
    monkeypatch.delenv("BENCH_PASSWORD", raising=False)
    args = ["--target", "deployed", "--outputs", str(outputs_file), "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "set BENCH_USERNAME and BENCH_PASSWORD" in err and "--create-users" in err
    monkeypatch.setenv("BENCH_USERNAME", cloud.ep["user"]["username"])
    monkeypatch.setenv("BENCH_PASSWORD", cloud.ep["user"]["password"])
    assert main([*args, "--levels", "1,4"]) == 2
    assert "4 concurrent streams need 2 bench users" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_PASSWORD", "Wrong-password-1a")
    assert main(args) == 2
    assert f"sign-in of the bench user {cloud.ep['user']['username']} failed" in (
        capsys.readouterr().err
    )
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written
