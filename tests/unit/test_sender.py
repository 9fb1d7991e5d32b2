import json
import threading
import uuid
from pathlib import Path

import pytest

from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameBuilder, max_text_chars, validate_frame
from chalicelib.producer import coalescing_sender, produce
from chalicelib.sender import CLOSE, OrderedSender, PerTokenSender, SenderCore
from chalicelib.settings import Settings
from tests.support.fake_model import FakeModelStream, FakeStreamer, answer

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


# -- the per-token baseline (SENDER_MODE=per_token) ---------------------------------------

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "sender.json").read_text("utf-8")
)


def per_token(deliver, max_chars=1000, heartbeat_s=60.0, **kw) -> PerTokenSender:
    return PerTokenSender(
        FrameBuilder(str(uuid.uuid4())),
        deliver,
        max_chars,
        heartbeat_interval_s=heartbeat_s,
        **kw,
    ).start()


@pytest.mark.parametrize("case", VECTORS["perToken"], ids=lambda c: c["name"])
def test_per_token_vector(case):
    rec = Recorder()
    sender = per_token(rec, max_chars=case["maxChars"])
    for step in case["steps"]:
        if "text" in step:
            sender.send_text(step["text"])
        elif step["frame"] == "start":
            sender.send_frame(lambda b: b.start("m"))
        else:
            sender.send_frame(lambda b: b.done("end_turn"))
        # Synchronous: everything sent so far was delivered before the call returned.
        assert len(rec.frames) == sender.frames_sent
    assert sender.close(WAIT)
    got = [{k: f[k] for k in ("seq", "type", "text") if k in f} for f in rec.frames]
    assert got == case["frames"]
    for f in rec.frames:
        validate_frame(f)


def test_per_token_send_text_returns_only_after_its_frame_was_delivered():
    gate = threading.Event()
    rec = Recorder(gate)
    sender = per_token(rec)
    returned = threading.Event()

    def produce():
        sender.send_text("one")
        returned.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not returned.wait(0.05)  # the producer waits on the slow delivery
    assert rec.frames == []
    gate.set()
    assert returned.wait(WAIT)
    producer.join(WAIT)
    assert [f["text"] for f in rec.frames] == ["one"]
    assert sender.close(WAIT)


def test_per_token_heartbeat_after_silence_carries_no_seq():
    rec = Recorder()
    sender = per_token(rec, heartbeat_s=0.05)
    sender.send_frame(lambda b: b.start("m"))
    assert rec.wait_for(lambda fs: any(f["type"] == "heartbeat" for f in fs))
    sender.send_text("after")
    assert sender.close(WAIT)
    assert [f["seq"] for f in transcript(rec.frames)] == [0, 1]
    assert "seq" not in next(f for f in rec.frames if f["type"] == "heartbeat")
    assert sender.heartbeats_sent >= 1


def test_per_token_failure_is_reported_and_later_frames_still_go_out():
    seen, failures = [], []

    def deliver(frame):
        if frame["seq"] == 1:
            raise ConnectionError("gone")
        seen.append(frame["seq"])

    sender = per_token(deliver, on_failure=failures.append)
    sender.send_frame(lambda b: b.start("m"))
    sender.send_text("a")
    sender.send_text("b")
    sender.send_frame(lambda b: b.done("end_turn"))
    assert sender.close(WAIT)
    assert seen == [0, 2, 3]
    assert sender.failure is not None and sender.failure.frame["seq"] == 1
    assert [f.frame["seq"] for f in failures] == [1]


def test_per_token_bad_control_frame_is_reported_and_sending_after_close_is_an_error():
    rec = Recorder()
    sender = per_token(rec)

    def broken(builder):
        raise ValueError("bad frame")

    sender.send_frame(broken)
    sender.send_text("still delivered")
    assert isinstance(sender.failure.error, ValueError)
    assert sender.close(WAIT)
    assert [f["text"] for f in rec.frames] == ["still delivered"]
    with pytest.raises(RuntimeError):
        sender.send_text("late")


@pytest.mark.parametrize(
    ("mode", "kind"), [("coalesce", OrderedSender), ("per_token", PerTokenSender)]
)
def test_producers_get_the_sender_of_the_configured_mode(mode, kind):
    rec = Recorder()
    settings = Settings(sender_mode=mode, flush_interval_ms=0)
    limit = 256 + 10 * 6  # a transport message with room for 10 characters of delta text
    assert max_text_chars(limit) == 10
    sender = coalescing_sender(FrameBuilder(str(uuid.uuid4())), rec, settings, limit, "t")
    assert isinstance(sender, kind)
    sender.send_text("y" * 25)
    assert sender.close(WAIT)
    assert "".join(f["text"] for f in rec.frames) == "y" * 25
    assert all(len(f["text"]) <= max_text_chars(limit) for f in rec.frames)


class _NeverCancelled:
    def cancelled(self) -> bool:
        return False


def test_per_token_mode_reads_the_model_only_after_each_token_was_delivered():
    rec = Recorder()
    settings = Settings(sender_mode="per_token")
    sender = coalescing_sender(FrameBuilder(str(uuid.uuid4())), rec, settings, 32 * 1024, "t")
    sender.send_frame(lambda b: b.start("m"))
    tokens = ["Serverless", " stream", "ing", " works"]
    delivered_before = {}
    hooks = {i: (lambda i=i: delivered_before.setdefault(i, len(rec.frames))) for i in range(4)}
    status, error = produce(
        {"prompt": "hi"},
        settings=settings,
        streamer=FakeStreamer(answer(*tokens), hooks),
        sender=sender,
        watch=_NeverCancelled(),
        remaining_ms=60_000,
        stream_id="s",
    )
    assert sender.close(WAIT)
    assert (status, error) == ("done", None)
    # Before model event i was read, the start frame and the i tokens before it were out.
    assert delivered_before == {0: 1, 1: 2, 2: 3, 3: 4}
    assert [f.get("text", f["type"]) for f in rec.frames] == ["start", *tokens, "done"]


class _CountingWatch:
    """Every check is a (slow) read of the flag; cancelled from check ``cancel_at`` on."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.checks = 0
        self.cancel_at = cancel_at

    def cancelled(self) -> bool:
        self.checks += 1
        return self.cancel_at is not None and self.checks >= self.cancel_at


def test_a_slow_cancel_read_does_not_slow_reading_the_model_to_one_event_per_read():
    rec = Recorder()
    settings = Settings(flush_interval_ms=1000)  # checks at least every 0.5 s
    sender = coalescing_sender(FrameBuilder(str(uuid.uuid4())), rec, settings, 32 * 1024, "t")
    tokens = [f" t{i}" for i in range(500)]
    watch = _CountingWatch()
    status, _ = produce(
        {"prompt": "hi"},
        settings=settings,
        streamer=FakeStreamer(answer(*tokens)),  # the model is far ahead of the loop
        sender=sender,
        watch=watch,
        remaining_ms=60_000,
        stream_id="s",
    )
    assert sender.close(WAIT)
    assert status == "done"
    assert "".join(f.get("text", "") for f in rec.frames) == "".join(tokens)
    # What had arrived was taken in batches between checks, not one event per check.
    assert watch.checks < 10


def test_cancel_is_still_seen_while_the_model_is_always_ahead():
    rec = Recorder()
    settings = Settings(flush_interval_ms=2)  # batches of at most 1 ms between checks
    sender = coalescing_sender(FrameBuilder(str(uuid.uuid4())), rec, settings, 32 * 1024, "t")
    streamer = FakeStreamer(answer(*(["x"] * 200_000)))
    status, _ = produce(
        {"prompt": "hi"},
        settings=settings,
        streamer=streamer,
        sender=sender,
        watch=_CountingWatch(cancel_at=2),
        remaining_ms=60_000,
        stream_id="s",
    )
    assert sender.close(WAIT)
    assert status == "cancelled"
    assert streamer.stream.closed
    assert len("".join(f.get("text", "") for f in rec.frames)) < 200_000


class _TricklingStream(FakeModelStream):
    """A model whose next event arrives while the caller waits (a positive timeout), never
    before: nothing is ever already there when the caller asks without waiting."""

    def next_event(self, timeout: float):
        if timeout <= 0:
            return None
        return super().next_event(timeout)


def test_reads_of_the_cancel_flag_are_spaced_while_events_trickle_in():
    rec = Recorder()
    settings = Settings(flush_interval_ms=40)  # a check every 20 ms
    sender = coalescing_sender(FrameBuilder(str(uuid.uuid4())), rec, settings, 32 * 1024, "t")
    tokens = [f" t{i}" for i in range(2000)]
    streamer = FakeStreamer([])
    streamer.stream = _TricklingStream(answer(*tokens), {})
    watch = _CountingWatch()
    status, _ = produce(
        {"prompt": "hi"},
        settings=settings,
        streamer=streamer,
        sender=sender,
        watch=watch,
        remaining_ms=60_000,
        stream_id="s",
    )
    assert sender.close(WAIT)
    assert status == "done"
    assert "".join(f.get("text", "") for f in rec.frames) == "".join(tokens)
    # Events keep coming for the whole half interval after a check; only then the next
    # check: not one check (one flag read) per event.
    assert watch.checks < len(tokens) / 10


# -- the ordered sender's decision core (shared vectors) ------------------------------------


def _core_item(d: dict) -> object:
    if "text" in d:
        return d["text"]
    if d.get("close"):
        return CLOSE
    return ("frame", d["frame"])  # a control item: anything that is not text


def _decision(kind: str, value: object) -> dict:
    if kind == "delta":
        return {"delta": value}
    if kind == "heartbeat":
        return {"heartbeat": True}
    return {"frame": value[1]}  # type: ignore[index]


@pytest.mark.parametrize("case", VECTORS["ordered"], ids=lambda c: c["name"])
def test_ordered_sender_decision_vector(case):
    core = SenderCore(
        FlushPolicy(case["intervalMs"], case["maxChars"]), case["heartbeatMs"] / 1000, 0
    )
    for step in case["steps"]:
        now = step["t"] / 1000
        got = [_decision(k, v) for k, v in core.step([_core_item(d) for d in step["items"]], now)]
        assert got == step["out"], step
        assert core.closed == step.get("closed", False)
        if not core.closed:
            assert core.wait_s(now) * 1000 == pytest.approx(step["waitMs"]), step
