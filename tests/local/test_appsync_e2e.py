"""The AppSync + SQS architecture end to end on the local cloud: GraphQL over HTTP,
the real-time protocol, the SQS event source and the worker publishing over IAM."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from local.appsync import AppSyncControl
from local.simulated_model import answer_text, request_for_prompt
from tests.support.appsync import CANCEL, FRAMES, PUBLISH, START, Realtime, graphql
from tests.support.cloud import Cloud, model_stream, text_of

pytestmark = pytest.mark.usefixtures("reset_model")

FLUSH_INTERVAL_MS = 50


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(
        tmp_path_factory.mktemp("appsync-cloud"),
        env={"FLUSH_INTERVAL_MS": str(FLUSH_INTERVAL_MS)},
    )
    yield c
    c.stop()


@pytest.fixture(scope="module")
def appsync(cloud) -> AppSyncControl:
    return AppSyncControl(cloud.ep["appsync"]["graphql"].removesuffix("graphql"))


@pytest.fixture
def reset_appsync(appsync):
    appsync.reset()
    yield
    appsync.reset()


def realtime(cloud: Cloud, token: str) -> Realtime:
    return Realtime(cloud.ep["appsync"]["graphql"], cloud.ep["appsync"]["realtime"], token)


def call(cloud: Cloud, token: str, query: str, **variables: Any) -> dict[str, Any]:
    return graphql(cloud.ep["appsync"]["graphql"], token, query, variables)


def start(cloud: Cloud, token: str, stream_id: str, prompt: str) -> dict[str, Any]:
    answer = call(cloud, token, START, input={"streamId": stream_id, "prompt": prompt})
    assert "errors" not in answer, answer
    return answer["data"]["startStream"]


def test_a_stream_arrives_whole_in_order_and_really_streams(cloud, token, model):
    prompt = f"Explain AppSync streaming {uuid.uuid4()} [tokens=120]"
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        assert rt.connection_timeout_ms > 0
        rt.subscribe(stream_id)
        assert start(cloud, token, stream_id, prompt) == {
            "streamId": stream_id,
            "status": "running",
            "created": True,
        }
        received = rt.frames()
    frames = [f for _, f in received]
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert frames[0]["type"] == "start"
    assert [f["type"] for f in frames].count("done") == 1 and frames[-1]["type"] == "done"
    assert text_of(frames) == answer_text(request_for_prompt(prompt))
    record = model_stream(model, prompt)
    streamed = [at for at, f in received if f["type"] == "delta" and at < record["lastTokenAt"]]
    assert len(streamed) >= 3, "frames arrived only after the model had finished"
    # The store holds the same transcript, for catch-up.
    stored = call(cloud, token, FRAMES, streamId=stream_id, afterSeq=-1)["data"]["streamFrames"]
    assert [json.loads(f) for f in stored["frames"]] == frames
    assert stored["stream"]["status"] == "done"


def test_a_retried_start_is_one_generation(cloud, token, model):
    prompt = f"Only once {uuid.uuid4()} [tokens=20]"
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, prompt)
        assert start(cloud, token, stream_id, prompt)["created"] is False
        frames = [f for _, f in rt.frames()]
    assert text_of(frames) == answer_text(request_for_prompt(prompt))
    model_stream(model, prompt)  # exactly one model stream for the prompt


def test_another_user_subscribed_to_the_stream_receives_nothing(
    cloud, token, appsync, reset_appsync
):
    other = cloud.add_user(f"eve-{uuid.uuid4().hex[:8]}", "Eve-password-1")
    stream_id = str(uuid.uuid4())
    with realtime(cloud, other) as eve, realtime(cloud, token) as owner:
        eve.subscribe(stream_id)
        owner.subscribe(stream_id)
        start(cloud, token, stream_id, f"Private {uuid.uuid4()} [tokens=30]")
        frames = owner.frames()
        with pytest.raises(TimeoutError):
            eve.next_message(0.3)
    stats = appsync.stats()
    # Every publish reached the owner's subscription and no other.
    assert stats["deliveries"] == stats["publishes"] >= len(frames)
    # Nor can the other user read, cancel or take over the stream.
    read = call(cloud, other, FRAMES, streamId=stream_id, afterSeq=-1)
    assert read["errors"][0]["errorType"] == "NOT_FOUND"
    assert call(cloud, other, CANCEL, streamId=stream_id)["errors"][0]["errorType"] == "NOT_FOUND"
    taken = call(cloud, other, START, input={"streamId": stream_id, "prompt": "mine"})
    assert taken["errors"][0]["errorType"] == "FORBIDDEN"


def test_a_user_token_cannot_publish(cloud, token):
    stream_id = str(uuid.uuid4())
    frame = json.dumps({"v": 1, "streamId": stream_id, "seq": 0, "type": "start", "model": "x"})
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        answer = call(cloud, token, PUBLISH, streamId=stream_id, owner="x", frames=[frame])
        assert answer["data"] == {"publishFrames": None}
        (error,) = answer["errors"]
        assert error["errorType"] == "Unauthorized"
        assert "publishFrames" in error["message"]
        with pytest.raises(TimeoutError):
            rt.next_message(0.3)


def test_an_access_token_is_refused(cloud):
    tokens = cloud.sign_in(cloud.ep["user"]["username"], cloud.ep["user"]["password"])
    answer = call(
        cloud, tokens["AccessToken"], START, input={"streamId": str(uuid.uuid4()), "prompt": "x"}
    )
    assert answer["errors"][0]["errorType"] == "UNAUTHORIZED"
    assert call(cloud, "garbage", START, input={"streamId": "x"})["status"] == 401


def test_bad_input_is_named_and_the_api_keeps_working(cloud, token):
    bad = call(
        cloud, token, START, input={"streamId": str(uuid.uuid4()), "prompt": "x", "maxTokens": 5000}
    )
    assert bad["errors"][0]["errorType"] == "BAD_REQUEST"
    assert "4096" in bad["errors"][0]["message"]
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, f"After a bad one {uuid.uuid4()} [tokens=5]")
        assert rt.frames()[-1][1]["type"] == "done"


def test_cancel_closes_the_model_stream_within_one_flush_interval(cloud, token, model):
    prompt = f"A long answer to cancel {uuid.uuid4()} [tokens=2000]"
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, prompt)
        while True:
            message = rt.next_message(20)
            batch = message["payload"]["data"]["onStreamFrame"]["frames"]
            if any(json.loads(f)["type"] == "delta" for f in batch):
                break
        answer = call(cloud, token, CANCEL, streamId=stream_id)
        cancelled_at = time.time()
        assert answer["data"]["cancelStream"]["cancelRequested"] is True
        frames = [f for _, f in rt.frames()]
    assert frames[-1]["type"] == "done" and frames[-1]["stopReason"] == "cancelled"
    record = model_stream(model, prompt)
    assert record["closedBy"] == "client"
    assert record["closedAt"] - cancelled_at < FLUSH_INTERVAL_MS / 1000


def test_a_late_subscriber_catches_up_from_the_store(cloud, token):
    prompt = f"Catch me up {uuid.uuid4()} [tokens=60]"
    stream_id = str(uuid.uuid4())
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        start(cloud, token, stream_id, prompt)
        first = rt.next_message(20)["payload"]["data"]["onStreamFrame"]["frames"]
    seen = [json.loads(f) for f in first]
    # Disconnected: the stream goes on. Reconnect, then read what was missed.
    with realtime(cloud, token) as rt:
        rt.subscribe(stream_id)
        page = call(cloud, token, FRAMES, streamId=stream_id, afterSeq=seen[-1]["seq"])
        missed = [json.loads(f) for f in page["data"]["streamFrames"]["frames"]]
        live: list[dict[str, Any]] = []
        if not missed or missed[-1]["type"] not in ("done", "error"):
            live = [f for _, f in rt.frames()]
    merged = {f["seq"]: f for f in [*seen, *missed, *live]}
    frames = [merged[s] for s in sorted(merged)]
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert frames[-1]["type"] == "done"
    assert text_of(frames) == answer_text(request_for_prompt(prompt))


def test_gqls_appsync_transport_subscribes_and_receives_frames(cloud, token):
    from gql import Client, gql
    from gql.transport.appsync_auth import AppSyncJWTAuthentication
    from gql.transport.appsync_websockets import AppSyncWebsocketsTransport

    from tests.support.appsync import SUBSCRIBE

    prompt = f"Through gql {uuid.uuid4()} [tokens=40]"
    stream_id = str(uuid.uuid4())
    url = cloud.ep["appsync"]["graphql"]

    async def run() -> list[dict[str, Any]]:
        auth = AppSyncJWTAuthentication(host=url.split("//", 1)[1].split("/", 1)[0], jwt=token)
        transport = AppSyncWebsocketsTransport(url=cloud.ep["appsync"]["realtime"], auth=auth)
        frames: list[dict[str, Any]] = []
        async with Client(transport=transport) as session:
            request = gql(SUBSCRIBE)
            request.variable_values = {"streamId": stream_id}
            subscription = session.subscribe(request)
            first = asyncio.ensure_future(subscription.__anext__())
            # gql exposes no start_ack hook: start once the server counts the subscription.
            await asyncio.to_thread(start_when_subscribed)
            result = await asyncio.wait_for(first, 20)
            while True:
                frames.extend(json.loads(f) for f in result["onStreamFrame"]["frames"])
                if frames and frames[-1]["type"] in ("done", "error"):
                    return frames
                result = await asyncio.wait_for(subscription.__anext__(), 20)

    control = AppSyncControl(url.removesuffix("graphql"))
    before = control.stats()["subscriptions"]

    def start_when_subscribed() -> None:
        deadline = time.monotonic() + 10
        while control.stats()["subscriptions"] <= before:
            assert time.monotonic() < deadline, "gql's subscription never started"
            time.sleep(0.01)
        start(cloud, token, stream_id, prompt)

    frames = [f for f in asyncio.run(run()) if f["type"] != "heartbeat"]
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert text_of(frames) == answer_text(request_for_prompt(prompt))
