"""The AppSync worker's failure paths end to end: a worker that dies mid-stream, and a
message that fails every time. The queue's visibility timeout, the worker's timeout and
its claim lease are shortened so redeliveries come within seconds."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import boto3
import pytest

from local.appsync import AppSyncControl
from tests.support.appsync import FRAMES, START, Realtime, graphql
from tests.support.cloud import CREDS, Cloud

# Case 5 of the fault and security suite: the worker killed mid-stream, and the message
# that fails every time (tests/security counts them in its transport group).
pytestmark = [pytest.mark.usefixtures("reset_model"), pytest.mark.security("transport")]

VISIBILITY_S = 3
LEASE_S = 0.6


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(
        tmp_path_factory.mktemp("appsync-faults"),
        env={
            "FLUSH_INTERVAL_MS": "50",
            "WORKER_TIMEOUT_S": str(VISIBILITY_S),
            "LOCAL_SQS_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "CLAIM_LEASE_S": str(LEASE_S),
            "PUBLISH_RETRIES": "0",
        },
    )
    yield c
    c.stop()


@pytest.fixture
def appsync(cloud):
    control = AppSyncControl(cloud.ep["appsync"]["graphql"].removesuffix("graphql"))
    control.reset()
    yield control
    control.reset()


def model_streams_for(model: Any, prompt: str) -> list[dict[str, Any]]:
    from local.simulated_model import prompt_hash, request_for_prompt

    wanted = prompt_hash(request_for_prompt(prompt))
    return [s for s in model.streams() if s["promptHash"] == wanted]


def realtime(cloud: Cloud, token: str) -> Realtime:
    return Realtime(cloud.ep["appsync"]["graphql"], cloud.ep["appsync"]["realtime"], token)


def start(cloud: Cloud, token: str, stream_id: str, prompt: str) -> None:
    answer = graphql(
        cloud.ep["appsync"]["graphql"],
        token,
        START,
        {"input": {"streamId": stream_id, "prompt": prompt}},
    )
    assert "errors" not in answer, answer


def stored(cloud: Cloud, token: str, stream_id: str) -> dict[str, Any]:
    answer = graphql(
        cloud.ep["appsync"]["graphql"], token, FRAMES, {"streamId": stream_id, "afterSeq": -1}
    )
    page = answer["data"]["streamFrames"]
    return {**page, "frames": [json.loads(f) for f in page["frames"]]}


def crash_worker(cloud: Cloud) -> int:
    req = urllib.request.Request(
        cloud.ep["lambda"] + "_local/functions/appsync_worker/crash", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["crashed"]


def test_a_worker_dying_mid_stream_ends_in_one_error_frame_never_a_second_generation(
    cloud, token, model
):
    prompt = f"Crash in the middle {uuid.uuid4()} [tokens=2000]"
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, prompt)
        live: list[dict[str, Any]] = []
        while len([f for f in live if f["type"] == "delta"]) < 3:
            message = rt.next_message(20)
            live += [json.loads(f) for f in message["payload"]["data"]["onStreamFrame"]["frames"]]
        assert crash_worker(cloud) == 1
        # The message comes back after the visibility timeout; the retry finds the
        # claim's lease lapsed and ends the stream.
        live += [f for _, f in rt.frames(timeout=VISIBILITY_S * 4)]
    transcript = [f for f in live if f["type"] != "heartbeat"]
    seqs = [f["seq"] for f in transcript]
    assert len(seqs) == len(set(seqs)), "duplicate frames"
    assert seqs == sorted(seqs)
    final = transcript[-1]
    assert final["type"] == "error" and final["error"]["code"] == "INTERNAL"
    assert final["error"]["retryable"] is True
    # Nothing is missing: the store holds every frame the client saw, and the same end.
    page = stored(cloud, token, stream_id)
    assert [f["seq"] for f in page["frames"]] == list(range(final["seq"] + 1))
    by_seq = {f["seq"]: f for f in page["frames"]}
    assert all(by_seq[f["seq"]] == f for f in transcript)
    assert page["stream"]["status"] == "error"
    (only,) = model_streams_for(model, prompt)  # never a second generation
    assert only["closedAt"] is not None


def test_a_message_failing_every_time_ends_the_stream_and_lands_in_the_dlq(
    cloud, token, model, appsync
):
    prompt = f"Undeliverable {uuid.uuid4()} [tokens=20]"
    stream_id = str(uuid.uuid4())
    # Every attempt fails publishing its start frame (maxReceiveCount 3, no retries).
    appsync.faults(publishFailures=3, publishFailureStatus=503)
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, prompt)
        got = [f for _, f in rt.frames(timeout=VISIBILITY_S * 5)]
    (error,) = got
    assert error["type"] == "error" and error["error"]["retryable"] is True
    page = stored(cloud, token, stream_id)
    assert [f["type"] for f in page["frames"]] == ["start", "error"]
    assert page["stream"]["status"] == "error"
    assert model_streams_for(model, prompt) == []  # no tokens spent on it
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=cloud.ep["aws"], **CREDS)
    deadline = time.monotonic() + VISIBILITY_S * 4
    bodies: list[dict[str, Any]] = []
    while not any(b.get("streamId") == stream_id for b in bodies):
        assert time.monotonic() < deadline, "the message never reached the DLQ"
        resp = sqs.receive_message(
            QueueUrl=cloud.ep["queues"]["dlq"], WaitTimeSeconds=1, MaxNumberOfMessages=10
        )
        bodies += [json.loads(m["Body"]) for m in resp.get("Messages", [])]
