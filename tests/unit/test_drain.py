"""Draining a producer's sender: the wait, the delivery guard, the undelivered end."""

from __future__ import annotations

import threading
import uuid

import boto3
import pytest
from moto import mock_aws

from chalicelib.drain import DeliveryGuard, drain_timeout_s, end_undelivered
from chalicelib.endings import end_with_error
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder
from chalicelib.settings import Settings
from chalicelib.stream_store import CancelWatch, StreamStore
from local.provision import create_tables


@pytest.fixture
def store(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield StreamStore(settings, client_factory=lambda: ddb)


@pytest.mark.parametrize(
    ("remaining_ms", "timeout_s"),
    [(900_000, 895.0), (180_000, 175.0), (3_000, 2.75), (0, 1.0)],
)
def test_the_sender_may_drain_until_half_the_deadline_margin_is_left(remaining_ms, timeout_s):
    assert drain_timeout_s(remaining_ms) == pytest.approx(timeout_s)


def test_a_stopped_guard_delivers_nothing_more():
    guard, delivered = DeliveryGuard(), []
    assert guard.run(lambda: delivered.append(1))
    assert guard.stop(1.0)
    assert not guard.run(lambda: delivered.append(2))
    assert delivered == [1] and guard.dropped == 1


def test_stop_waits_for_the_delivery_under_way_and_says_if_it_is_stuck():
    guard = DeliveryGuard()
    inside, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: guard.run(lambda: (inside.set(), release.wait(5))))
    worker.start()
    inside.wait(5)
    assert guard.stop(0.05) is False  # still delivering
    release.set()
    worker.join(5)
    assert guard.stop(0.05) is True


def test_a_guard_keeps_the_claim_and_drops_once_it_is_lost(store):
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket")
    assert store.claim(sid, "w1", lease_s=30)
    ticks = [0.0]
    guard = DeliveryGuard()
    guard.watch = CancelWatch(store, sid, 0.01, clock=lambda: ticks[0], claim=("w1", 30.0))
    ticks[0] = 11.0  # a third of the lease: the delivery renews it
    before = store.get(sid).lease_until
    assert guard.run(lambda: None)
    assert store.get(sid).lease_until > before
    end_with_error(store, store.get(sid), StreamError(ErrorCode.INTERNAL, "taken over"))
    ticks[0] = 22.0
    assert not guard.run(lambda: None) and guard.dropped == 1


def test_an_undelivered_stream_ends_after_what_the_store_holds(store):
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket")
    b = FrameBuilder(sid)
    store.append_frames(sid, [b.start("m"), b.delta("stored")])
    b.delta("built, never stored")
    ended = end_undelivered(store, sid, DeliveryGuard())
    assert ended is not None
    frame, _ = ended
    assert frame["seq"] == 2 and frame["error"]["retryable"] is True
    record = store.get(sid)
    assert (record.status, record.last_seq) == ("error", 2)
    assert [f["seq"] for f in store.frames_after(sid, -1)] == [0, 1, 2]
    assert store.running_count("alice") == 0


def test_an_undelivered_stream_with_a_stuck_delivery_is_left_to_its_lease(store, monkeypatch):
    monkeypatch.setattr("chalicelib.drain.DEADLINE_MARGIN_S", 0.2)  # stop() waits 0.05 s
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket")
    guard = DeliveryGuard()
    inside, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: guard.run(lambda: (inside.set(), release.wait(10))))
    worker.start()
    inside.wait(5)
    try:
        assert end_undelivered(store, sid, guard) is None
    finally:
        release.set()
        worker.join(5)
    assert store.get(sid).status == "running"  # its lease will lapse; a reader ends it
