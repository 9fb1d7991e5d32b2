import threading
import uuid

import pytest

from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameBuilder, validate_frame
from chalicelib.sender import OrderedSender

WAIT = 5.0  # upper bound for waiting on an event; never reached when things work


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.frames: list[dict] = []
        self.gate = gate
        self.arrived = threading.Condition()

    def __call__(self, frame: dict) -> None:
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        with self.arrived:
            self.frames.append(frame)
            self.arrived.notify_all()

    def wait_for(self, predicate) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: predicate(self.frames), WAIT)


def make(deliver, interval_ms=50, max_chars=1000, heartbeat_s=60.0, **kw) -> OrderedSender:
    return OrderedSender(
        FrameBuilder(str(uuid.uuid4())),
        deliver,
        FlushPolicy(interval_ms, max_chars),
        heartbeat_interval_s=heartbeat_s,
        **kw,
    ).start()


def transcript(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] != "heartbeat"]


def test_frames_arrive_in_order_with_contiguous_seq_and_all_text():
    rec = Recorder()
    sender = make(rec)
    sender.send_frame(lambda b: b.start("m"))
    words = [f"w{i} " for i in range(300)]
    for w in words:
        sender.send_text(w)
    sender.send_frame(lambda b: b.done("end_turn"))
    assert sender.close(WAIT)
    frames = transcript(rec.frames)
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert frames[0]["type"] == "start" and frames[-1]["type"] == "done"
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == "".join(words)
    for f in frames:
        validate_frame(f)


def test_producer_never_waits_for_a_slow_delivery_and_text_is_coalesced():
    gate = threading.Event()
    rec = Recorder(gate)
    sender = make(rec, max_chars=100_000)
    sender.send_frame(lambda b: b.start("m"))
    for i in range(1000):  # all of these return while the first delivery is stuck
        sender.send_text(f"{i},")
    assert not gate.is_set() and rec.frames == []
    gate.set()
    assert sender.close(WAIT)
    deltas = [f for f in rec.frames if f["type"] == "delta"]
    assert "".join(d["text"] for d in deltas) == "".join(f"{i}," for i in range(1000))
    assert len(deltas) <= 2  # everything that piled up leaves together


def test_pending_text_is_flushed_when_its_interval_passes_without_new_text():
    rec = Recorder()
    sender = make(rec, interval_ms=20)
    sender.send_text("first")
    assert rec.wait_for(lambda fs: len(fs) == 1)
    sender.send_text("second")  # within the interval: held, then sent by the timer
    assert rec.wait_for(lambda fs: [f.get("text") for f in fs] == ["first", "second"])
    sender.close(WAIT)


def test_chunks_never_exceed_max_chars():
    rec = Recorder()
    sender = make(rec, max_chars=7)
    sender.send_text("x" * 100)
    assert sender.close(WAIT)
    assert [len(f["text"]) for f in rec.frames] == [7] * 14 + [2]


def test_delivery_failure_is_reported_and_later_frames_still_go_out():
    seen = []
    failures = []

    def deliver(frame):
        if frame["seq"] == 1:
            raise ConnectionError("gone")
        seen.append(frame["seq"])

    sender = make(deliver, interval_ms=0, on_failure=failures.append)
    sender.send_frame(lambda b: b.start("m"))
    sender.send_text("a")
    sender.send_frame(lambda b: b.done("end_turn"))
    assert sender.close(WAIT)
    assert seen == [0, 2]
    assert sender.failure is not None and sender.failure.frame["seq"] == 1
    assert isinstance(sender.failure.error, ConnectionError)
    assert [f.frame["seq"] for f in failures] == [1]


def test_a_failing_failure_callback_does_not_stop_delivery():
    rec = Recorder()
    failed = threading.Event()

    def deliver(frame):
        if frame["seq"] == 0:
            raise RuntimeError("first fails")
        rec(frame)

    def bad_callback(_failure):
        failed.set()
        raise ValueError("callback bug")

    sender = make(deliver, interval_ms=0, on_failure=bad_callback)
    sender.send_text("a")
    assert failed.wait(WAIT)
    sender.send_text("b")
    assert sender.close(WAIT)
    assert [f["text"] for f in rec.frames] == ["b"]


def test_heartbeat_is_sent_after_silence_and_carries_no_seq():
    rec = Recorder()
    sender = make(rec, heartbeat_s=0.05)
    sender.send_frame(lambda b: b.start("m"))
    assert rec.wait_for(lambda fs: any(f["type"] == "heartbeat" for f in fs))
    sender.send_text("after")
    assert sender.close(WAIT)
    hb = next(f for f in rec.frames if f["type"] == "heartbeat")
    assert "seq" not in hb
    assert [f["seq"] for f in transcript(rec.frames)] == [0, 1]
    assert sender.heartbeats_sent >= 1


def test_close_drains_everything_queued():
    rec = Recorder()
    sender = make(rec, interval_ms=10_000)  # nothing is due by time before close
    sender.send_text("a")
    sender.send_text("b")
    sender.send_text("c")
    assert sender.close(WAIT)
    assert "".join(f["text"] for f in rec.frames) == "abc"


def test_close_reports_a_delivery_that_does_not_finish_in_time():
    gate = threading.Event()
    sender = make(Recorder(gate))
    sender.send_text("stuck")
    assert sender.close(timeout=0.05) is False
    gate.set()
    assert sender.close(WAIT) is True


def test_sending_after_close_is_an_error():
    sender = make(Recorder())
    sender.close(WAIT)
    with pytest.raises(RuntimeError):
        sender.send_text("late")


def test_a_failing_control_frame_is_reported_and_does_not_stop_the_sender():
    rec = Recorder()
    sender = make(rec, interval_ms=0)

    def broken(builder):
        raise ValueError("bad frame")

    sender.send_frame(broken)
    sender.send_text("still delivered")
    assert sender.close(WAIT)
    assert [f["text"] for f in rec.frames] == ["still delivered"]
    assert isinstance(sender.failure.error, ValueError)
