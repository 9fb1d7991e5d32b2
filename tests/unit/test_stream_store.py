import uuid

import boto3
import pytest
from moto import mock_aws

from chalicelib.endings import end_if_abandoned
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder
from chalicelib.settings import Limits, Settings
from chalicelib.stream_store import STALE_AFTER_S, CancelWatch, StreamRef, StreamStore
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
    return Settings(limits=Limits(max_streams_per_user=3), stream_ttl_s=3600)


@pytest.fixture
def store(settings, clock, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client, settings)
        yield StreamStore(
            settings, client_factory=lambda: client, clock=clock, sleep=lambda s: None
        )


def sid() -> str:
    return str(uuid.uuid4())


def test_created_stream_is_running_and_owned(store, clock):
    s = sid()
    rec, created = store.create(s, "alice", "websocket", connection_id="c1", model="m")
    assert created
    got = store.get(s)
    assert got == rec
    assert (got.owner, got.status, got.transport, got.connection_id) == (
        "alice",
        "running",
        "websocket",
        "c1",
    )
    assert got.expires_at == int(clock.now) + 3600


def test_same_owner_creating_again_is_idempotent_and_takes_no_second_slot(store):
    s = sid()
    store.create(s, "alice", "appsync")
    rec, created = store.create(s, "alice", "appsync")
    assert not created and rec.stream_id == s
    assert store.running_count("alice") == 1


def test_another_owners_stream_id_is_refused(store):
    s = sid()
    store.create(s, "alice", "appsync")
    with pytest.raises(StreamError) as exc:
        store.create(s, "mallory", "appsync")
    assert exc.value.code is ErrorCode.FORBIDDEN
    assert store.get(s).owner == "alice"


def test_fourth_running_stream_is_refused_naming_the_cap(store):
    for _ in range(3):
        store.create(sid(), "alice", "websocket")
    with pytest.raises(StreamError) as exc:
        store.create(sid(), "alice", "websocket")
    assert exc.value.code is ErrorCode.TOO_MANY_STREAMS
    assert "At most 3 streams" in exc.value.message
    store.create(sid(), "bob", "websocket")  # other users are not affected


def test_finishing_a_stream_frees_its_slot(store):
    ids = [sid() for _ in range(3)]
    for s in ids:
        store.create(s, "alice", "websocket")
    assert store.finish(ids[0], "alice", "done", last_seq=5)
    store.create(sid(), "alice", "websocket")
    assert store.running_count("alice") == 3


def test_a_stream_that_lost_its_producer_stops_holding_a_slot(store, clock):
    for _ in range(3):
        store.create(sid(), "alice", "websocket")
    clock.now += STALE_AFTER_S + 1
    _, created = store.create(sid(), "alice", "websocket")
    assert created and store.running_count("alice") == 1


def test_finish_records_status_and_seq_and_a_second_finish_is_a_no_op(store):
    s = sid()
    store.create(s, "alice", "websocket")
    assert store.finish(s, "alice", "error", last_seq=3, error_code="MODEL_ERROR")
    assert not store.finish(s, "alice", "done", last_seq=9)
    rec = store.get(s)
    assert (rec.status, rec.last_seq, rec.error_code) == ("error", 3, "MODEL_ERROR")


def test_finish_refuses_a_non_terminal_status(store):
    with pytest.raises(ValueError):
        store.finish(sid(), "alice", "running", last_seq=0)


def test_a_stream_is_claimed_once(store):
    s = sid()
    store.create(s, "alice", "appsync")
    assert store.claim(s, "worker-1")
    assert not store.claim(s, "worker-2")
    assert store.get(s).claimed_by == "worker-1"


def test_a_finished_or_missing_stream_cannot_be_claimed(store):
    s = sid()
    store.create(s, "alice", "appsync")
    store.finish(s, "alice", "cancelled", last_seq=0)
    assert not store.claim(s, "worker-1")
    assert not store.claim(sid(), "worker-1")


def test_frames_are_read_back_in_order_after_a_seq(store):
    s = sid()
    store.create(s, "alice", "websocket")
    b = FrameBuilder(s)
    frames = [b.start("m")] + [b.delta(f"t{i}") for i in range(60)] + [b.done("end_turn")]
    store.append_frames(s, frames[:30])
    store.append_frames(s, frames[30:])
    assert store.frames_after(s, -1) == frames
    assert store.frames_after(s, 40) == frames[41:]
    assert store.frames_after(s, 10, limit=5) == frames[11:16]
    assert store.frames_after(s, 61) == []


def test_heartbeats_are_not_stored(store):
    s = sid()
    store.create(s, "alice", "websocket")
    b = FrameBuilder(s)
    store.append_frames(s, [b.start("m"), b.heartbeat(), b.delta("x")])
    assert [f["type"] for f in store.frames_after(s, -1)] == ["start", "delta"]


def test_unprocessed_batch_items_are_resent(settings, clock):
    class Flaky:
        def __init__(self):
            self.calls = []

        def batch_write_item(self, RequestItems):
            self.calls.append(RequestItems)
            items = next(iter(RequestItems.values()))
            if len(self.calls) == 1:
                return {"UnprocessedItems": {settings.frames_table: items[1:]}}
            return {}

    flaky = Flaky()
    st = StreamStore(settings, client_factory=lambda: flaky, clock=clock, sleep=lambda s: None)
    b = FrameBuilder("s")
    st.append_frames(StreamRef("s", "g1"), [b.start("m"), b.delta("a"), b.delta("b")])
    assert [len(next(iter(c.values()))) for c in flaky.calls] == [3, 2]


def test_owner_sets_the_cancel_flag_and_repeating_is_harmless(store):
    s = sid()
    store.create(s, "alice", "websocket")
    assert not store.is_cancel_requested(s)
    assert store.request_cancel(s, "alice").cancel_requested
    assert store.request_cancel(s, "alice").cancel_requested
    assert store.is_cancel_requested(s)


@pytest.mark.parametrize("owner", ["mallory"])
def test_cancel_of_another_users_or_missing_stream_is_not_found(store, owner):
    s = sid()
    store.create(s, "alice", "websocket")
    for target in (s, sid()):
        with pytest.raises(StreamError) as exc:
            store.request_cancel(target, owner)
        assert exc.value.code is ErrorCode.NOT_FOUND
    assert not store.is_cancel_requested(s)


def test_get_owned_hides_other_users_streams(store):
    s = sid()
    store.create(s, "alice", "websocket")
    assert store.get_owned(s, "alice").stream_id == s
    with pytest.raises(StreamError) as exc:
        store.get_owned(s, "mallory")
    assert exc.value.code is ErrorCode.NOT_FOUND


def test_expired_streams_read_as_missing(store, clock):
    s = sid()
    store.create(s, "alice", "websocket")
    clock.now += 3601
    assert store.get(s) is None


def test_attach_moves_the_stream_to_a_new_connection_for_its_owner_only(store):
    s = sid()
    store.create(s, "alice", "websocket", connection_id="old")
    assert store.attach(s, "alice", "new").connection_id == "new"
    with pytest.raises(StreamError):
        store.attach(s, "mallory", "evil")
    assert store.get(s).connection_id == "new"


def test_delivery_reads_the_connection_current_at_that_moment(store):
    s = sid()
    store.create(s, "alice", "websocket", connection_id="old")
    store.append_frames(s, [FrameBuilder(s).start("m")])
    assert store.mark_delivered(s, 0) == "old"
    attached = store.attach(s, "alice", "new")
    assert attached.delivered_seq == 0  # the caller replays seq <= 0
    assert store.mark_delivered(s, 1) == "new"  # later frames go to the new socket


def test_cancel_watch_reads_the_store_at_most_once_per_interval(store):
    s = sid()
    store.create(s, "alice", "websocket")
    reads = []
    original = store.is_cancel_requested
    store.is_cancel_requested = lambda x: reads.append(x) or original(x)
    now = [0.0]
    watch = CancelWatch(store, s, interval_s=0.05, clock=lambda: now[0])
    assert not watch.cancelled()
    store.request_cancel(s, "alice")
    assert not watch.cancelled()  # cached within the interval
    now[0] += 0.05
    assert watch.cancelled()
    assert watch.cancelled()  # once cancelled, stays cancelled without reading
    assert len(reads) == 2


def test_an_abandoned_stream_gets_a_terminal_error_frame_once(store, clock):
    s = sid()
    store.create(s, "alice", "websocket")
    b = FrameBuilder(s)
    store.append_frames(s, [b.start("m"), b.delta("partial")])
    clock.now += STALE_AFTER_S + 1
    rec = end_if_abandoned(store, store.get(s))
    assert (rec.status, rec.error_code, rec.last_seq) == ("error", "INTERNAL", 2)
    assert end_if_abandoned(store, rec) == rec  # a second reader changes nothing
    frames = store.frames_after(s, -1)
    assert [f["type"] for f in frames] == ["start", "delta", "error"]
    assert frames[-1]["seq"] == 2 and frames[-1]["error"]["code"] == "INTERNAL"
    assert store.running_count("alice") == 0


def test_a_stream_within_a_lambda_lifetime_is_not_abandoned(store, clock):
    s = sid()
    store.create(s, "alice", "websocket")
    clock.now += STALE_AFTER_S - 1
    assert end_if_abandoned(store, store.get(s)).status == "running"
    assert store.frames_after(s, -1) == []


def test_a_stream_whose_producer_lease_lapsed_stops_holding_a_slot(store, clock):
    ids = [sid() for _ in range(3)]
    for s in ids:
        store.create(s, "alice", "websocket")
    assert store.claim(ids[0], "worker-1", lease_s=30)
    assert store.claim(ids[1], "worker-2", lease_s=30)
    clock.now += 20
    assert not store.renew_claim(ids[1], "worker-2", lease_s=30)  # this one is alive
    clock.now += 11  # the first was never renewed: its producer died
    _, created = store.create(sid(), "alice", "websocket")
    assert created and store.running_count("alice") == 3
    with pytest.raises(StreamError):
        store.create(sid(), "alice", "websocket")  # the live ones keep theirs
    # Its next reader ends it with the terminal frame.
    assert end_if_abandoned(store, store.get(ids[0])).status == "error"
