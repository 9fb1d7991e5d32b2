"""Follower slots (bounded per stream and per user, leased) and generations (frames of an
earlier stream of the same id are never read), on the stream store against moto."""

import uuid

import boto3
import pytest
from moto import mock_aws

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder
from chalicelib.settings import Limits, Settings
from chalicelib.stream_store import StreamStore
from local.provision import create_tables


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        limits=Limits(max_streams_per_user=3, max_followers_per_stream=2, max_followers_per_user=3),
        stream_ttl_s=3600,
    )


@pytest.fixture
def client(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield ddb


@pytest.fixture
def store(settings, clock, client):
    return StreamStore(settings, client_factory=lambda: client, clock=clock, sleep=lambda s: None)


def sid() -> str:
    return str(uuid.uuid4())


def refused(store: StreamStore, owner: str, stream_id: str, follower: str) -> str:
    with pytest.raises(StreamError) as info:
        store.acquire_follower(owner, stream_id, follower, 30)
    assert info.value.code == ErrorCode.TOO_MANY_FOLLOWERS
    assert info.value.http_status == 429 and info.value.retryable
    return info.value.message


# -- followers ---------------------------------------------------------------------------


def test_followers_of_one_stream_are_bounded_by_max_followers_per_stream(store):
    s = sid()
    store.create(s, "alice", "function_url")
    store.acquire_follower("alice", s, "f1", 30)
    store.acquire_follower("alice", s, "f2", 30)
    assert "MAX_FOLLOWERS_PER_STREAM" in refused(store, "alice", s, "f3")
    assert store.followers_of(stream_id=s) == 2
    assert store.followers_of("alice") == 2  # the refused one holds nothing


def test_followers_of_one_user_are_bounded_over_all_streams(store):
    a, b = sid(), sid()
    store.create(a, "alice", "function_url")
    store.create(b, "alice", "websocket")
    store.acquire_follower("alice", a, "f1", 30)
    store.acquire_follower("alice", a, "f2", 30)
    store.acquire_follower("alice", b, "f3", 30)
    assert "MAX_FOLLOWERS_PER_USER" in refused(store, "alice", b, "f4")
    assert store.followers_of(stream_id=b) == 1  # its per-stream slot was given back


def test_a_released_slot_is_free_again(store):
    s = sid()
    store.create(s, "alice", "function_url")
    store.acquire_follower("alice", s, "f1", 30)
    store.acquire_follower("alice", s, "f2", 30)
    store.release_follower("alice", s, "f1")
    store.acquire_follower("alice", s, "f3", 30)
    assert store.followers_of(stream_id=s) == 2 and store.followers_of("alice") == 2


def test_a_slot_whose_lease_lapsed_is_taken_over(store, clock):
    """A follower whose Lambda died never releases its slot; its lease frees it."""
    s = sid()
    store.create(s, "alice", "function_url")
    store.acquire_follower("alice", s, "dead1", 30)
    store.acquire_follower("alice", s, "dead2", 30)
    clock.now += 31
    store.acquire_follower("alice", s, "alive", 30)
    assert store.followers_of(stream_id=s) == 1


def test_a_renewed_slot_outlives_its_first_lease(store, clock):
    s = sid()
    store.create(s, "alice", "function_url")
    store.acquire_follower("alice", s, "f1", 30)
    store.acquire_follower("alice", s, "f2", 30)
    clock.now += 20
    assert store.renew_follower("alice", s, "f1", 30)
    clock.now += 20  # f2 lapsed, f1 holds
    store.acquire_follower("alice", s, "f3", 30)
    refused(store, "alice", s, "f4")
    assert not store.renew_follower("alice", s, "f2", 30)  # pruned: lost


def test_the_following_context_holds_a_slot_only_while_it_runs(store):
    s = sid()
    store.create(s, "alice", "websocket")
    with store.following("alice", s, "r1", 30):
        assert store.followers_of(stream_id=s) == 1
    assert store.followers_of(stream_id=s) == 0 and store.followers_of("alice") == 0


def test_a_missing_stream_has_no_slots_and_none_is_created(store, client, settings):
    s = sid()
    refused(store, "alice", s, "f1")
    resp = client.get_item(TableName=settings.streams_table, Key={"pk": {"S": f"stream#{s}"}})
    assert "Item" not in resp


def test_items_written_before_slots_existed_get_a_map(store, client, settings):
    s = sid()
    store.create(s, "alice", "function_url")
    for key in (f"stream#{s}", "user#alice"):
        client.update_item(
            TableName=settings.streams_table,
            Key={"pk": {"S": key}},
            UpdateExpression="REMOVE followers",
        )
    store.acquire_follower("alice", s, "f1", 30)
    assert store.followers_of(stream_id=s) == 1 and store.followers_of("alice") == 1


# -- generations -------------------------------------------------------------------------


def _delete_record(client, settings, stream_id: str) -> None:
    """What DynamoDB TTL does, some time after expiresAt: the record goes, its frames stay."""
    client.delete_item(TableName=settings.streams_table, Key={"pk": {"S": f"stream#{stream_id}"}})


def test_a_reused_id_never_reads_the_earlier_owners_frames(store, client, settings):
    s = sid()
    first, _ = store.create(s, "alice", "websocket")
    b = FrameBuilder(s)
    store.append_frames(first, [b.start("m"), b.delta("alice's secret"), b.done("end_turn")])
    store.finish(s, "alice", "done", last_seq=2)
    _delete_record(client, settings, s)
    second, created = store.create(s, "mallory", "websocket")
    assert created and second.generation != first.generation
    assert store.frames_after(second, -1) == []
    assert store.frames_after(s, -1) == []
    assert store.last_stored_seq(second) == -1
    store.append_frames(second, [FrameBuilder(s).start("m")])
    assert [f["type"] for f in store.frames_after(s, -1)] == ["start"]
    assert [f["text"] for f in store.frames_after(first, -1) if "text" in f] == ["alice's secret"]


def test_an_expired_record_not_yet_deleted_is_replaced_by_a_new_generation(store, clock):
    s = sid()
    first, _ = store.create(s, "alice", "websocket")
    store.append_frames(first, [FrameBuilder(s).start("m")])
    clock.now += 3601  # past expiresAt; TTL has not deleted it yet
    assert store.get(s) is None
    second, created = store.create(s, "bob", "function_url")
    assert created and second.owner == "bob" and second.generation != first.generation
    assert store.frames_after(s, -1) == []


def test_a_stale_slot_of_a_reused_id_does_not_hold_the_earlier_owner(
    store, client, settings, clock
):
    """Alice's running slot still names an id that expired and now belongs to Bob."""
    s = sid()
    store.create(s, "alice", "websocket")
    for _ in range(2):
        store.create(sid(), "alice", "websocket")
    client.update_item(
        TableName=settings.streams_table,
        Key={"pk": {"S": f"stream#{s}"}},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(clock.now) - 1)}},
    )
    store.create(s, "bob", "websocket")
    _, created = store.create(sid(), "alice", "websocket")  # at her cap: the stale slot goes
    assert created


def test_a_claim_or_finish_for_another_generation_does_nothing(store, client, settings):
    s = sid()
    first, _ = store.create(s, "alice", "websocket")
    _delete_record(client, settings, s)
    second, _ = store.create(s, "bob", "websocket")
    assert store.claim(s, "late-worker", 30, generation=first.generation) is None
    assert store.finish(s, "alice", "done", last_seq=0, generation=first.generation) is None
    assert store.get(s).status == "running"
    assert store.claim(s, "worker", 30, generation=second.generation) is not None


def test_finish_returns_the_record_with_its_connection_and_cursor(store):
    s = sid()
    store.create(s, "alice", "websocket", connection_id="c1")
    finished = store.finish(s, "alice", "done", last_seq=4)
    assert finished is not None
    assert (finished.status, finished.connection_id, finished.delivered_seq) == ("done", "c1", 4)
    assert store.finish(s, "alice", "done", last_seq=4) is None


def test_a_user_item_made_for_a_follower_slot_expires(store, client, settings, clock):
    s = sid()
    store.create(s, "alice", "function_url")
    client.delete_item(TableName=settings.streams_table, Key={"pk": {"S": "user#alice"}})
    store.acquire_follower("alice", s, "f1", 30)
    item = client.get_item(TableName=settings.streams_table, Key={"pk": {"S": "user#alice"}})
    assert int(item["Item"]["expiresAt"]["N"]) == int(clock.now) + settings.stream_ttl_s
