"""The AppSync architecture's resolver and worker logic against an in-memory DynamoDB
(moto), a scripted model and a recording publisher."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws

from chalicelib import appsync_flow
from chalicelib.appsync_publish import PublishError
from chalicelib.endings import end_with_error
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import validate_frame
from chalicelib.settings import Settings
from chalicelib.stream_store import CancelWatch, StreamStore
from local.provision import create_tables
from tests.support.fake_model import FakeStreamer, answer

ALICE = {"sub": "alice", "tokenUse": "id"}
BOB = {"sub": "bob", "tokenUse": "id"}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Publisher:
    """Records publishes; ``fail`` makes the next N raise like an unreachable AppSync."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.fail = 0

    def __call__(self, stream_id: str, owner: str, frames: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise PublishError("AppSync answered 503", status=503)
        self.batches.append((stream_id, owner, list(frames)))

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [f for _, _, frames in self.batches for f in frames]


@pytest.fixture
def settings() -> Settings:
    return Settings(flush_interval_ms=1, model_id="test-model", claim_lease_s=30.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(settings, clock, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield StreamStore(settings, client_factory=lambda: ddb, clock=clock)


@pytest.fixture
def queued() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def resolver(settings, store, queued) -> appsync_flow.ResolverDeps:
    return appsync_flow.ResolverDeps(settings, store, queued.append)


@pytest.fixture
def publisher() -> Publisher:
    return Publisher()


def worker(settings, store, publisher, streamer) -> appsync_flow.WorkerDeps:
    return appsync_flow.WorkerDeps(settings, store, publisher, streamer)


def start(resolver, identity=ALICE, **fields: Any) -> dict[str, Any]:
    fields.setdefault("streamId", str(uuid.uuid4()))
    fields.setdefault("prompt", "Hello")
    return appsync_flow.resolve(
        {"field": "startStream", "arguments": {"input": fields}, "identity": identity}, resolver
    )


def sqs_record(body: dict[str, Any] | str, receive_count: int = 1, message_id: str = "m-1"):
    return SQSRecord(
        {
            "messageId": message_id,
            "receiptHandle": "rh",
            "body": body if isinstance(body, str) else json.dumps(body),
            "attributes": {"ApproximateReceiveCount": str(receive_count)},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }
    )


# -- resolvers ----------------------------------------------------------------------------


def test_start_stream_records_and_queues_the_stream(resolver, store, queued):
    sid = str(uuid.uuid4())
    result = start(resolver, streamId=sid, prompt="Hi", maxTokens=64, system=None)
    assert result == {"data": {"streamId": sid, "status": "running", "created": True}}
    record = store.get(sid)
    assert (record.owner, record.transport, record.status) == ("alice", "appsync", "running")
    (message,) = queued
    assert message["v"] == 1 and message["streamId"] == sid and message["owner"] == "alice"
    assert message["request"]["prompt"] == "Hi" and message["request"]["maxTokens"] == 64


def test_the_same_owner_retrying_a_start_queues_nothing_more(resolver, queued):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    again = start(resolver, streamId=sid)
    assert again["data"]["created"] is False
    assert len(queued) == 1


def test_another_users_stream_id_is_refused(resolver, queued):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    result = start(resolver, identity=BOB, streamId=sid)
    assert result["error"]["code"] == "FORBIDDEN"
    assert len(queued) == 1


@pytest.mark.parametrize(
    ("identity", "reason"),
    [(None, "Sign in"), ({"sub": "alice", "tokenUse": "access"}, "ID token"), ({}, "Sign in")],
)
def test_only_id_token_callers_are_served(resolver, queued, identity, reason):
    result = start(resolver, identity=identity)
    assert result["error"]["code"] == "UNAUTHORIZED"
    assert reason in result["error"]["message"]
    assert queued == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"maxTokens": 0}, "maxTokens"),
        ({"maxTokens": 5000}, "4096"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}]}, "prompt"),
        ({"prompt": "x" * 32_001}, "32,000"),
        ({"streamId": "not-a-uuid"}, "streamId"),
    ],
)
def test_bad_input_is_a_bad_request_naming_the_problem(resolver, queued, fields, named):
    result = start(resolver, **fields)
    assert result["error"]["code"] == "BAD_REQUEST"
    assert named in result["error"]["message"]
    assert queued == []


def test_a_missing_input_or_stream_id_is_named(resolver):
    no_input = appsync_flow.resolve(
        {"field": "startStream", "arguments": {}, "identity": ALICE}, resolver
    )
    assert no_input["error"]["code"] == "BAD_REQUEST"
    no_id = appsync_flow.resolve(
        {"field": "startStream", "arguments": {"input": {"prompt": "x"}}, "identity": ALICE},
        resolver,
    )
    assert "streamId" in no_id["error"]["message"]


def test_a_fourth_running_stream_is_too_many(resolver, settings):
    for _ in range(settings.limits.max_streams_per_user):
        assert "data" in start(resolver)
    result = start(resolver)
    assert result["error"]["code"] == "TOO_MANY_STREAMS"
    assert result["error"]["retryable"] is True


def test_a_stream_that_cannot_be_queued_ends_and_frees_its_slot(settings, store):
    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("queue down")

    deps = appsync_flow.ResolverDeps(settings, store, broken)
    sid = str(uuid.uuid4())
    result = start(deps, streamId=sid)
    assert result["error"] == {
        "code": "INTERNAL",
        "message": "The stream could not be started.",
        "retryable": False,
    }
    assert store.get(sid).status == "error"
    assert store.running_count("alice") == 0


def test_cancel_is_for_the_owner_only(resolver, store):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    other = appsync_flow.resolve(
        {"field": "cancelStream", "arguments": {"streamId": sid}, "identity": BOB}, resolver
    )
    assert other["error"]["code"] == "NOT_FOUND"
    assert store.get(sid).cancel_requested is False
    own = appsync_flow.resolve(
        {"field": "cancelStream", "arguments": {"streamId": sid}, "identity": ALICE}, resolver
    )
    assert own["data"]["cancelRequested"] is True


def test_stream_frames_returns_stored_frames_after_a_seq(resolver, store):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    store.append_frames(
        sid,
        [{"v": 1, "streamId": sid, "seq": n, "type": "delta", "text": str(n)} for n in range(3)],
    )

    def read(identity, after):
        return appsync_flow.resolve(
            {
                "field": "streamFrames",
                "arguments": {"streamId": sid, "afterSeq": after},
                "identity": identity,
            },
            resolver,
        )

    result = read(ALICE, 0)["data"]
    assert [json.loads(f)["seq"] for f in result["frames"]] == [1, 2]
    assert result["stream"]["status"] == "running" and result["hasMore"] is False
    assert len(read(ALICE, None)["data"]["frames"]) == 3  # null: from the start
    assert read(BOB, -1)["error"]["code"] == "NOT_FOUND"
    assert read(ALICE, -2)["error"]["code"] == "BAD_REQUEST"


def test_an_unknown_field_is_named(resolver):
    result = appsync_flow.resolve({"field": "dropTables", "identity": ALICE}, resolver)
    assert result["error"]["code"] == "BAD_REQUEST"
    assert "dropTables" in result["error"]["message"]


# -- the worker -----------------------------------------------------------------------------


def queue_stream(resolver, queued, **fields) -> dict[str, Any]:
    start(resolver, **fields)
    return queued[-1]


def test_a_job_streams_every_frame_stored_and_published_in_order(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    streamer = FakeStreamer(answer("Hello", ", ", "world"))
    status = appsync_flow.process_record(
        sqs_record(message), worker(settings, store, publisher, streamer)
    )
    assert status == "done"
    sid = message["streamId"]
    published = publisher.frames
    assert [f["seq"] for f in published] == list(range(len(published)))
    assert published[0]["type"] == "start" and published[-1]["type"] == "done"
    assert "".join(f.get("text", "") for f in published) == "Hello, world"
    assert all(batch[:2] == (sid, "alice") for batch in publisher.batches)
    for frame in published:
        validate_frame(frame)
    assert store.frames_after(sid, -1) == published
    record = store.get(sid)
    assert record.status == "done" and record.last_seq == published[-1]["seq"]
    assert store.running_count("alice") == 0


def test_a_redelivered_finished_stream_publishes_nothing(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    deps = worker(settings, store, publisher, FakeStreamer(answer("once")))
    appsync_flow.process_record(sqs_record(message), deps)
    count = len(publisher.frames)
    again = worker(settings, store, publisher, FakeStreamer(answer("twice")))
    assert appsync_flow.process_record(sqs_record(message, receive_count=2), again) == "finished"
    assert len(publisher.frames) == count
    assert again.streamer.requests == []


def test_a_duplicate_delivery_leaves_a_live_producer_alone(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    assert store.claim(message["streamId"], "other-worker", lease_s=30)
    streamer = FakeStreamer(answer("never"))
    result = appsync_flow.process_record(
        sqs_record(message, receive_count=2), worker(settings, store, publisher, streamer)
    )
    assert result == "running"
    assert publisher.frames == [] and streamer.requests == []
    assert store.get(message["streamId"]).status == "running"


def test_a_stream_whose_producer_died_ends_with_one_error_frame_after_the_stored_ones(
    settings, store, resolver, queued, publisher, clock
):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    assert store.claim(sid, "dead-worker", lease_s=30)
    stored = [
        {"v": 1, "streamId": sid, "seq": 0, "type": "start", "model": "m"},
        {"v": 1, "streamId": sid, "seq": 1, "type": "delta", "text": "Hel"},
    ]
    store.append_frames(sid, stored)
    clock.now += 31  # the lease lapsed: nobody renewed it
    streamer = FakeStreamer(answer("never"))
    result = appsync_flow.process_record(
        sqs_record(message, receive_count=2), worker(settings, store, publisher, streamer)
    )
    assert result == "abandoned"
    assert streamer.requests == []
    (frame,) = publisher.frames
    assert frame["seq"] == 2 and frame["type"] == "error"
    assert frame["error"]["code"] == "INTERNAL" and frame["error"]["retryable"] is True
    assert store.frames_after(sid, -1) == [*stored, frame]
    assert store.get(sid).status == "error"
    assert store.running_count("alice") == 0


def test_an_unpublishable_start_releases_the_claim_so_a_retry_starts_cleanly(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    publisher.fail = settings.publish_retries + 1
    streamer = FakeStreamer(answer("Hi"))
    deps = worker(settings, store, publisher, streamer)
    with pytest.raises(PublishError):
        appsync_flow.process_record(sqs_record(message), deps)
    assert streamer.requests == []  # no model call, no tokens spent
    assert store.get(sid).claimed_by is None
    publisher.fail = 0
    assert appsync_flow.process_record(sqs_record(message, receive_count=2), deps) == "done"
    assert [f["seq"] for f in publisher.frames] == list(range(len(publisher.frames)))
    assert publisher.frames[0]["type"] == "start"


def test_the_last_failed_attempt_ends_the_stream_before_the_message_fails(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    publisher.fail = 1  # the start frame's publish, then the terminal frame goes out
    deps = worker(settings.with_overrides(publish_retries=0), store, publisher, FakeStreamer([]))
    last = settings.worker_max_receive_count
    with pytest.raises(PublishError):
        appsync_flow.process_record(sqs_record(message, receive_count=last), deps)
    (frame,) = publisher.frames
    assert frame["type"] == "error" and frame["error"]["retryable"] is True
    stored = store.frames_after(sid, -1)
    assert [f["type"] for f in stored] == ["start", "error"]
    assert frame == stored[-1]
    assert store.get(sid).status == "error"


def test_an_earlier_failed_attempt_leaves_the_stream_running(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    publisher.fail = 1
    deps = worker(settings.with_overrides(publish_retries=0), store, publisher, FakeStreamer([]))
    with pytest.raises(PublishError):
        appsync_flow.process_record(sqs_record(message, receive_count=1), deps)
    assert store.get(message["streamId"]).status == "running"
    assert publisher.frames == []


def test_publish_failures_mid_stream_lose_nothing_from_the_store(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    settings = settings.with_overrides(publish_retries=0)
    streamer = FakeStreamer(answer("a", "b", "c"), hooks={1: lambda: setattr(publisher, "fail", 1)})
    status = appsync_flow.process_record(
        sqs_record(message), worker(settings, store, publisher, streamer)
    )
    assert status == "done"
    stored = store.frames_after(sid, -1)
    assert [f["seq"] for f in stored] == list(range(len(stored)))
    assert "".join(f.get("text", "") for f in stored) == "abc"
    assert len(publisher.frames) == len(stored) - 1  # the one refused publish


def test_a_cancel_stops_the_model_and_ends_cancelled(settings, store, resolver, queued, publisher):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    streamer = FakeStreamer(
        answer("a", "b", "c", "d"), hooks={2: lambda: store.request_cancel(sid, "alice")}
    )
    status = appsync_flow.process_record(
        sqs_record(message), worker(settings, store, publisher, streamer)
    )
    assert status == "cancelled"
    assert streamer.stream.closed
    assert publisher.frames[-1]["type"] == "done"
    assert publisher.frames[-1]["stopReason"] == "cancelled"


def test_a_lost_claim_is_noticed_at_the_next_renewal(settings, store, resolver, queued):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    assert store.claim(sid, "w1", lease_s=30)
    ticks = Clock(0.0)
    watch = CancelWatch(store, sid, 0.01, clock=ticks, claim=("w1", 30.0))
    ticks.now = 10.0
    assert watch.cancelled() is False and watch.claim_lost is False  # renewed
    end_with_error(store, store.get(sid), StreamError(ErrorCode.INTERNAL, "taken over"))
    ticks.now = 20.0
    assert watch.cancelled() is True and watch.claim_lost is True


def test_after_a_lost_claim_nothing_more_is_stored_or_published(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    delivery = appsync_flow.AppSyncDelivery(store, publisher, store.get(sid))
    delivery.guard.watch = CancelWatch(store, sid, 0.01)
    delivery({"v": 1, "streamId": sid, "seq": 0, "type": "start", "model": "m"})
    error, _ = end_with_error(store, store.get(sid), StreamError(ErrorCode.INTERNAL, "taken over"))
    delivery.guard.watch.claim_lost = True
    delivery({"v": 1, "streamId": sid, "seq": 1, "type": "delta", "text": "late"})
    assert store.frames_after(sid, -1)[-1] == error
    assert [f["seq"] for f in publisher.frames] == [0]
    assert delivery.guard.dropped == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"v": 2, "streamId": str(uuid.uuid4()), "owner": "a", "request": {}},
        {"v": 1, "streamId": "x", "owner": "a", "request": {}},
        {"v": 1, "streamId": str(uuid.uuid4()), "request": {}},
    ],
)
def test_a_poison_message_fails(settings, store, publisher, body):
    deps = worker(settings, store, publisher, FakeStreamer([]))
    with pytest.raises(appsync_flow.PoisonMessage):
        appsync_flow.process_record(sqs_record(body, receive_count=3), deps)
    assert publisher.frames == []


def test_a_job_for_a_missing_stream_is_acknowledged(settings, store, publisher):
    body = {"v": 1, "streamId": str(uuid.uuid4()), "owner": "alice", "request": {"prompt": "x"}}
    deps = worker(settings, store, publisher, FakeStreamer(answer("x")))
    assert appsync_flow.process_record(sqs_record(body), deps) == "missing"
    assert publisher.frames == []


def test_a_publisher_still_blocked_at_the_deadline_ends_the_stream_after_what_is_stored(
    settings, store, resolver, queued, publisher
):
    import time as time_

    message = queue_stream(resolver, queued)
    sid = message["streamId"]
    record = publisher.__call__

    def slow(stream_id: str, owner: str, frames: Any) -> None:
        if frames[0]["type"] != "error":
            time_.sleep(0.8)  # three publishes take 2.4 s; 1.5 s are left
        record(stream_id, owner, frames)

    deps = appsync_flow.WorkerDeps(
        settings, store, slow, FakeStreamer(answer("a", "b")), remaining_ms=lambda: 1_500
    )
    status = appsync_flow.process_record(sqs_record(message), deps)
    stored = store.frames_after(sid, -1)
    assert [f["seq"] for f in stored] == list(range(len(stored)))
    # One terminal frame, the last (the done frame if it was stored before the stop).
    assert [f for f in stored if f["type"] in ("done", "error")] == [stored[-1]]
    assert status == ("error" if stored[-1]["type"] == "error" else "done")
    assert store.get(sid).last_seq == stored[-1]["seq"]
    assert publisher.frames[-1] == stored[-1]  # the subscriber is told too
    assert store.running_count("alice") == 0


# -- the slot, follower bounds, generations --------------------------------------------------


def test_the_slot_is_free_when_the_terminal_frame_is_published(settings, store, resolver, queued):
    message = queue_stream(resolver, queued)
    seen: list[tuple[str, int]] = []

    def publish(stream_id: str, owner: str, frames: Any) -> None:
        if frames[-1]["type"] == "done":
            seen.append((store.get(stream_id).status, store.running_count(owner)))

    deps = appsync_flow.WorkerDeps(settings, store, publish, FakeStreamer(answer("a")))
    assert appsync_flow.process_record(sqs_record(message), deps) == "done"
    assert seen == [("done", 0)]


def read_frames(resolver, sid: str, after: Any = -1) -> dict[str, Any]:
    return appsync_flow.resolve(
        {
            "field": "streamFrames",
            "arguments": {"streamId": sid, "afterSeq": after},
            "identity": ALICE,
        },
        resolver,
    )


def test_stream_frames_past_the_follower_bound_is_too_many_followers(settings, resolver, store):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    for n in range(settings.limits.max_followers_per_stream):
        store.acquire_follower(ALICE["sub"], sid, f"held-{n}", 30)
    error = read_frames(resolver, sid)["error"]
    assert error["code"] == "TOO_MANY_FOLLOWERS" and error["retryable"] is True
    store.release_follower(ALICE["sub"], sid, "held-0")
    assert "data" in read_frames(resolver, sid)
    assert store.followers_of(stream_id=sid) == settings.limits.max_followers_per_stream - 1


def test_stream_frames_never_returns_an_earlier_generations_frames(resolver, store, settings):
    sid = str(uuid.uuid4())
    start(resolver, streamId=sid)
    old = store.get(sid)
    store.append_frames(old, [{"v": 1, "streamId": sid, "seq": 0, "type": "start", "model": "m"}])
    store.finish(sid, ALICE["sub"], "done", last_seq=0)
    store.client.delete_item(
        TableName=settings.streams_table, Key={"pk": {"S": f"stream#{sid}"}}
    )  # TTL
    start(resolver, identity=BOB, streamId=sid)
    bob_read = appsync_flow.resolve(
        {"field": "streamFrames", "arguments": {"streamId": sid}, "identity": BOB}, resolver
    )
    assert bob_read["data"]["frames"] == []


def test_a_job_for_another_generation_of_its_id_is_acknowledged(
    settings, store, resolver, queued, publisher
):
    message = queue_stream(resolver, queued)
    stale = {**message, "generation": "0" * 16}
    deps = worker(settings, store, publisher, FakeStreamer(answer("x")))
    assert appsync_flow.process_record(sqs_record(stale), deps) == "missing"
    assert publisher.frames == []
