"""The WebSocket flow with a real (in-process moto) store, fake sockets and a fake model."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice import WebsocketDisconnectedError
from moto import mock_aws

from chalicelib import ws_flow
from chalicelib.bedrock import TextEvent
from chalicelib.endings import end_with_error
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import FrameBuilder, validate_frame
from chalicelib.gateway_auth import Unauthorized
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from local.provision import create_tables
from tests.support.fake_model import FakeStreamer, answer
from tests.support.tokens import CLIENT_ID, ISSUER, SigningKey, id_claims, sign

KEY = SigningKey()
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:api1/api/$connect"


class Sockets:
    """Fake @connections: records posts per connection; closed ones raise Gone."""

    def __init__(self) -> None:
        self.posts: dict[str, list[dict]] = {}
        self.closed: set[str] = set()
        self.limit_exceeded = 0

    def send(self, connection_id: str, data: str) -> None:
        if connection_id in self.closed:
            raise WebsocketDisconnectedError(connection_id)
        if self.limit_exceeded:
            self.limit_exceeded -= 1
            raise ClientError({"Error": {"Code": "LimitExceededException"}}, "PostToConnection")
        self.posts.setdefault(connection_id, []).append(json.loads(data))


@pytest.fixture
def settings() -> Settings:
    return Settings(flush_interval_ms=1, model_id="test-model")


@pytest.fixture
def store(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield StreamStore(settings, client_factory=lambda: ddb)


@pytest.fixture
def sockets() -> Sockets:
    return Sockets()


class Started(list):
    def __call__(self, payload: dict) -> None:
        self.append(payload)


@pytest.fixture
def started() -> Started:
    return Started()


@pytest.fixture
def deps(settings, store, sockets, started) -> ws_flow.MessageDeps:
    return ws_flow.MessageDeps(settings, store, sockets.send, started)


def message(
    body: Any, conn: str = "c1", sub: str | None = "alice", exp: float | None = None
) -> dict:
    ctx: dict[str, Any] = {"connectionId": conn, "routeKey": "$default"}
    if sub:
        exp = time.time() + 3600 if exp is None else exp
        ctx["authorizer"] = {"sub": sub, "principalId": sub, "exp": int(exp)}
    raw = body if isinstance(body, str) else json.dumps(body)
    return {"requestContext": ctx, "body": raw}


def only_error(sockets: Sockets, conn: str = "c1") -> dict:
    (frame,) = sockets.posts[conn]
    validate_frame(frame)
    assert frame["type"] == "error" and "seq" not in frame
    return frame["error"]


# -- authorizer and connect -----------------------------------------------------------------


@pytest.fixture
def verifier() -> JwtVerifier:
    jwks = JwksCache("http://jwks.invalid", fetch=lambda url, t: {"keys": [KEY.jwk()]})
    return JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=jwks)


def connect_event(protocols: str | None) -> dict:
    headers = {"Host": "x"} if protocols is None else {"Sec-WebSocket-Protocol": protocols}
    return {"type": "REQUEST", "methodArn": METHOD_ARN, "headers": headers}


def test_authorizer_allows_a_valid_id_token_offered_as_a_subprotocol(verifier):
    token = sign(id_claims("alice"), KEY)
    result = ws_flow.authorize(connect_event(f"llm-stream.v1, auth.{token}"), verifier)
    assert result["principalId"] == "alice"
    assert result["context"]["sub"] == "alice"
    (statement,) = result["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}


@pytest.mark.parametrize(
    "protocols",
    [None, "llm-stream.v1", "llm-stream.v1, auth.garbage", "llm-stream.v1, auth."],
    ids=["no header", "no token", "garbage", "empty token"],
)
def test_authorizer_refuses_with_unauthorized(verifier, protocols):
    with pytest.raises(Unauthorized) as exc:
        ws_flow.authorize(connect_event(protocols), verifier)
    assert str(exc.value) == "Unauthorized"


def test_authorizer_refuses_an_expired_token_and_never_logs_it(verifier, caplog):
    token = sign(id_claims("alice", exp=1), KEY)
    with caplog.at_level(logging.DEBUG), pytest.raises(Unauthorized):
        ws_flow.authorize(connect_event(f"llm-stream.v1, auth.{token}"), verifier)
    assert "token expired" in caplog.text or any(
        getattr(r, "reason", None) == "token expired" for r in caplog.records
    )
    assert token not in caplog.text


def test_connect_selects_the_protocol_for_an_authorized_connection():
    event = {
        "headers": {"sec-websocket-protocol": "llm-stream.v1, auth.x"},
        "requestContext": {"authorizer": {"sub": "alice"}},
    }
    assert ws_flow.connect(event) == {
        "statusCode": 200,
        "headers": {"Sec-WebSocket-Protocol": "llm-stream.v1"},
    }


def test_connect_without_an_authorizer_context_is_refused():
    event = {"headers": {"Sec-WebSocket-Protocol": "llm-stream.v1"}, "requestContext": {}}
    assert ws_flow.connect(event)["statusCode"] == 401


# -- messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("not json", "must be JSON"),
        ("[1]", "JSON object"),
        ({"action": "dance"}, "unknown action 'dance'"),
        ({"prompt": "hi"}, "'action' is required"),
        ({"action": "stream", "prompt": "hi", "maxTokens": 0}, "maxTokens"),
        ({"action": "stream", "prompt": "hi", "topK": 3}, "unknown field 'topK'"),
        ({"action": "stream"}, "exactly one of 'prompt' or 'messages'"),
        ({"action": "cancel", "streamId": "nope"}, "streamId must be a UUID"),
        ({"action": "resume", "streamId": str(uuid.uuid4()), "afterSeq": "x"}, "afterSeq"),
    ],
)
def test_bad_messages_get_a_bad_request_frame_naming_the_problem(deps, sockets, body, needle):
    assert ws_flow.handle_message(message(body), deps) == {"statusCode": 200}
    err = only_error(sockets)
    assert err["code"] == "BAD_REQUEST" and needle in err["message"]


def test_a_stream_is_recorded_and_handed_to_the_generator(deps, store, started):
    sid = str(uuid.uuid4())
    ws_flow.handle_message(message({"action": "stream", "prompt": "hi", "streamId": sid}), deps)
    (payload,) = started
    assert payload["streamId"] == sid and payload["owner"] == "alice"
    assert payload["request"]["prompt"] == "hi"
    rec = store.get(sid)
    assert (rec.owner, rec.transport, rec.connection_id) == ("alice", "websocket", "c1")


def test_a_fourth_running_stream_is_refused(deps, sockets, started):
    for _ in range(3):
        ws_flow.handle_message(message({"action": "stream", "prompt": "hi"}), deps)
    ws_flow.handle_message(message({"action": "stream", "prompt": "hi"}), deps)
    assert len(started) == 3
    assert only_error(sockets)["code"] == "TOO_MANY_STREAMS"


def test_another_users_stream_id_is_refused(deps, store, sockets, started):
    sid = str(uuid.uuid4())
    store.create(sid, "bob", "websocket")
    ws_flow.handle_message(message({"action": "stream", "prompt": "x", "streamId": sid}), deps)
    assert started == []
    assert only_error(sockets)["code"] == "FORBIDDEN"


def test_retrying_a_start_replays_instead_of_generating_twice(deps, store, sockets, started):
    sid = str(uuid.uuid4())
    body = {"action": "stream", "prompt": "x", "streamId": sid}
    ws_flow.handle_message(message(body), deps)
    b = FrameBuilder(sid)
    store.append_frames(sid, [b.start("m"), b.delta("a")])
    store.mark_delivered(sid, 1)
    ws_flow.handle_message(message(body, conn="c2"), deps)
    assert len(started) == 1
    assert [f["seq"] for f in sockets.posts["c2"]] == [0, 1]


def test_a_generator_that_cannot_start_frees_the_slot(deps, store, sockets):
    def broken(payload: dict) -> None:
        raise RuntimeError("lambda unavailable")

    deps.start_generation = broken
    ws_flow.handle_message(message({"action": "stream", "prompt": "x"}), deps)
    assert only_error(sockets)["code"] == "INTERNAL"
    assert store.running_count("alice") == 0


def test_cancel_sets_the_flag_of_the_owners_stream_only(deps, store, sockets):
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket")
    ws_flow.handle_message(message({"action": "cancel", "streamId": sid}, sub="mallory"), deps)
    assert only_error(sockets)["code"] == "NOT_FOUND"
    assert not store.is_cancel_requested(sid)
    ws_flow.handle_message(message({"action": "cancel", "streamId": sid}), deps)
    assert store.is_cancel_requested(sid)


def test_resume_replays_exactly_the_missed_delivered_frames_and_reattaches(deps, store, sockets):
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket", connection_id="old")
    b = FrameBuilder(sid)
    frames = [b.start("m"), b.delta("a"), b.delta("b"), b.delta("c")]
    store.append_frames(sid, frames)
    store.mark_delivered(sid, 2)  # seq 3 is stored but its delivery has not started
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": 0}, "c2"), deps
    )
    assert [f["seq"] for f in sockets.posts["c2"]] == [1, 2]
    assert store.mark_delivered(sid, 3) == "c2"


def test_resume_of_another_users_stream_is_not_found(deps, store, sockets):
    sid = str(uuid.uuid4())
    store.create(sid, "bob", "websocket", connection_id="old")
    ws_flow.handle_message(message({"action": "resume", "streamId": sid}), deps)
    assert only_error(sockets)["code"] == "NOT_FOUND"
    assert store.get(sid).connection_id == "old"


def test_a_message_on_an_unauthenticated_connection_is_refused(deps, sockets):
    ws_flow.handle_message(message({"action": "stream", "prompt": "x"}, sub=None), deps)
    assert only_error(sockets)["code"] == "UNAUTHORIZED"


def test_a_client_gone_before_the_answer_is_not_an_error(deps, sockets):
    sockets.closed.add("c1")
    assert ws_flow.handle_message(message("oops"), deps) == {"statusCode": 200}


# -- the generator ---------------------------------------------------------------------------


def start_stream(store: StreamStore, conn: str = "c1") -> str:
    sid = str(uuid.uuid4())
    store.create(sid, "alice", "websocket", connection_id=conn)
    return sid


def run(settings, store, sockets, streamer, sid) -> str:
    deps = ws_flow.GenerateDeps(settings, store, sockets.send, streamer)
    payload = {"streamId": sid, "owner": "alice", "request": {"prompt": "hi", "streamId": sid}}
    return ws_flow.generate(payload, deps, worker_id="w1")


def transcript(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] != "heartbeat"]


def test_generation_posts_and_stores_every_frame_in_order(settings, store, sockets):
    sid = start_stream(store)
    assert run(settings, store, sockets, FakeStreamer(answer("Hello", " world")), sid) == "done"
    posted = transcript(sockets.posts["c1"])
    assert [f["seq"] for f in posted] == list(range(len(posted)))
    assert posted[0] == {"v": 1, "streamId": sid, "seq": 0, "type": "start", "model": "test-model"}
    assert "".join(f["text"] for f in posted if f["type"] == "delta") == "Hello world"
    assert posted[-1]["type"] == "done" and posted[-1]["usage"]["outputTokens"] == 2
    assert store.frames_after(sid, -1) == posted
    assert store.get(sid).status == "done" and store.running_count("alice") == 0


def test_generation_goes_on_into_the_store_when_the_socket_is_gone(settings, store, sockets):
    sid = start_stream(store)
    streamer = FakeStreamer(answer("a", "b", "c"), hooks={1: lambda: sockets.closed.add("c1")})
    assert run(settings, store, sockets, streamer, sid) == "done"
    stored = store.frames_after(sid, -1)
    assert stored[-1]["type"] == "done"
    assert "".join(f.get("text", "") for f in stored) == "abc"
    assert len(transcript(sockets.posts.get("c1", []))) < len(stored)


def test_frames_follow_a_resumed_stream_to_its_new_connection(settings, store, sockets, deps):
    sid = start_stream(store, conn="old")

    def reconnect() -> None:
        sockets.closed.add("old")
        seen = transcript(sockets.posts.get("old", []))
        after = seen[-1]["seq"] if seen else -1  # what the client holds
        body = {"action": "resume", "streamId": sid, "afterSeq": after}
        ws_flow.handle_message(message(body, "new"), deps)

    streamer = FakeStreamer(answer("a", "b", "c", "d"), hooks={2: reconnect})
    run(settings, store, sockets, streamer, sid)
    got = sorted(
        transcript(sockets.posts.get("old", []) + sockets.posts["new"]), key=lambda f: f["seq"]
    )
    assert [f["seq"] for f in got] == list(range(len(got)))  # no gap, no duplicate
    assert got == store.frames_after(sid, -1)


def test_cancel_ends_the_stream_as_cancelled_and_closes_the_model(settings, store, sockets):
    sid = start_stream(store)
    streamer = FakeStreamer(
        answer("a", "b", "c", "d"), hooks={2: lambda: store.request_cancel(sid, "alice")}
    )
    settings = settings.with_overrides(flush_interval_ms=0)  # check the flag every event
    assert run(settings, store, sockets, streamer, sid) == "cancelled"
    assert streamer.stream.closed
    last = store.frames_after(sid, -1)[-1]
    assert last["type"] == "done" and last["stopReason"] == "cancelled"
    assert store.get(sid).status == "cancelled"


def test_a_model_error_ends_the_stream_with_an_error_frame(settings, store, sockets):
    sid = start_stream(store)
    failure = StreamError(ErrorCode.MODEL_ERROR, "The model failed while answering.")
    assert run(settings, store, sockets, FakeStreamer([TextEvent("a"), failure]), sid) == "error"
    last = transcript(sockets.posts["c1"])[-1]
    assert last["type"] == "error" and last["error"]["code"] == "MODEL_ERROR"
    rec = store.get(sid)
    assert (rec.status, rec.error_code) == ("error", "MODEL_ERROR")


def test_a_second_invocation_for_a_claimed_stream_produces_nothing(settings, store, sockets):
    sid = start_stream(store)
    run(settings, store, sockets, FakeStreamer(answer("a")), sid)
    before = store.frames_after(sid, -1)
    assert run(settings, store, sockets, FakeStreamer(answer("z")), sid) == "skipped"
    assert store.frames_after(sid, -1) == before


def test_limit_exceeded_posts_are_retried_in_order(settings, store, sockets):
    sid = start_stream(store)
    sockets.limit_exceeded = 2
    run(settings, store, sockets, FakeStreamer(answer("a", "b")), sid)
    posted = transcript(sockets.posts["c1"])
    assert [f["seq"] for f in posted] == list(range(len(posted)))
    assert posted[-1]["type"] == "done"


def test_resuming_an_abandoned_stream_replays_it_to_a_terminal_error(deps, store, sockets):
    from chalicelib.stream_store import STALE_AFTER_S

    sid = str(uuid.uuid4())
    clock = [1_800_000_000.0]
    store._clock = lambda: clock[0]
    store.create(sid, "alice", "websocket", connection_id="old")
    b = FrameBuilder(sid)
    store.append_frames(sid, [b.start("m"), b.delta("a")])
    store.mark_delivered(sid, 1)
    clock[0] += STALE_AFTER_S + 1  # the producer died long ago
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": 0}, "c2"), deps
    )
    assert [(f["seq"], f["type"]) for f in sockets.posts["c2"]] == [(1, "delta"), (2, "error")]


def test_the_generator_holds_its_claim_as_a_lease_while_it_runs(settings, store, sockets):
    sid = start_stream(store)
    seen: list[Any] = []
    streamer = FakeStreamer(answer("a", "b"), hooks={1: lambda: seen.append(store.get(sid))})
    assert run(settings, store, sockets, streamer, sid) == "done"
    (running,) = seen
    assert running.claimed_by == "w1"
    assert running.lease_until is not None and running.lease_until > running.updated_at


def test_a_crashed_generators_lease_lapses_and_a_resume_ends_the_stream(
    settings, store, sockets, deps
):
    """A generator that died leaves a claim nobody renews: the next resume ends the
    stream with one terminal error frame instead of waiting for a Lambda's lifetime."""
    clock = [1_800_000_000.0]
    store._clock = lambda: clock[0]
    sid = start_stream(store, conn="old")
    assert store.claim(sid, "w1", settings.claim_lease_s)
    b = FrameBuilder(sid)
    store.append_frames(sid, [b.start("m"), b.delta("a")])
    store.mark_delivered(sid, 1)
    clock[0] += settings.claim_lease_s + 1  # not renewed: its Lambda is gone
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": 1}, "new"), deps
    )
    (error,) = sockets.posts["new"]
    assert (error["seq"], error["type"], error["error"]["code"]) == (2, "error", "INTERNAL")
    assert error["error"]["retryable"] is True
    assert store.get(sid).status == "error" and store.running_count("alice") == 0


def test_a_generator_whose_stream_was_ended_for_it_delivers_nothing_more(store, sockets):
    """If a reader took the generator for dead (its lease lapsed during a long pause)
    and ended the stream, the generator must not overwrite or follow that end."""
    from chalicelib.endings import ABANDONED
    from chalicelib.stream_store import CancelWatch

    sid = start_stream(store)
    assert store.claim(sid, "w1", lease_s=30)
    ticks = [0.0]
    delivery = ws_flow.WebsocketDelivery(store, sockets.send, store.get(sid))
    delivery.guard.watch = CancelWatch(store, sid, 0.01, clock=lambda: ticks[0], claim=("w1", 30))
    builder = FrameBuilder(sid)
    delivery(builder.start("m"))
    ended = end_with_error(store, store.get(sid), ABANDONED)
    ticks[0] = 11.0  # the next renewal finds the claim gone
    delivery(builder.delta("late"))
    stored = store.frames_after(sid, -1)
    assert [f["type"] for f in stored] == ["start", "error"] and stored[-1] == ended[0]
    assert [f["type"] for f in sockets.posts["c1"]] == ["start"]
    assert delivery.guard.dropped == 1


def test_a_sender_still_blocked_at_the_deadline_ends_the_stream_after_what_is_stored(
    settings, store, sockets
):
    """Posts so slow the frames cannot all go out before the Lambda ends: the record
    must not claim frames the store never got, and its end is an error frame."""
    import time as time_

    slow_send = sockets.send

    def send(connection_id: str, data: str) -> None:
        time_.sleep(0.8)  # three posts take 2.4 s; 1.5 s are left
        slow_send(connection_id, data)

    sid = start_stream(store)
    deps = ws_flow.GenerateDeps(
        settings, store, send, FakeStreamer(answer("a", "b")), remaining_ms=lambda: 1_500
    )
    payload = {"streamId": sid, "owner": "alice", "request": {"prompt": "hi", "streamId": sid}}
    status = ws_flow.generate(payload, deps, worker_id="w1")
    stored = store.frames_after(sid, -1)
    assert [f["seq"] for f in stored] == list(range(len(stored)))
    # Exactly one terminal frame, the last: the error frame after what was stored, or
    # the done frame if it was stored (and the record finished) before the sender stopped.
    terminals = [f for f in stored if f["type"] in ("done", "error")]
    assert terminals == [stored[-1]]
    if stored[-1]["type"] == "error":
        assert stored[-1]["error"]["code"] == "INTERNAL"
    record = store.get(sid)
    assert (record.status, record.last_seq) == (status, stored[-1]["seq"])
    assert status == ("error" if stored[-1]["type"] == "error" else "done")
    time_.sleep(1.0)  # the sender thread is stopped: nothing is stored after the end
    assert store.frames_after(sid, -1) == stored
    assert store.running_count("alice") == 0


@pytest.mark.security("auth")
@pytest.mark.parametrize("action", ["stream", "resume"])
def test_stream_and_resume_after_the_tokens_expiry_are_refused_with_reconnect(
    deps, sockets, started, store, action
):
    stream_id = str(uuid.uuid4())
    body = {"action": action, "streamId": stream_id}
    body.update({"prompt": "hi"} if action == "stream" else {"afterSeq": -1})
    ws_flow.handle_message(message(body, exp=time.time() - 121), deps)
    err = only_error(sockets)
    assert err["code"] == "UNAUTHORIZED" and err["retryable"] is True
    assert "reconnect with a fresh token" in err["message"]
    assert started == [] and store.get(stream_id) is None


def test_within_the_leeway_a_stream_still_starts(deps, sockets, started):
    body = {"action": "stream", "prompt": "hi", "streamId": str(uuid.uuid4())}
    ws_flow.handle_message(message(body, exp=time.time() - 30), deps)
    assert len(started) == 1 and "c1" not in sockets.posts


def test_a_connection_context_without_exp_counts_as_expired(deps, sockets, started):
    event = message({"action": "stream", "prompt": "hi"})
    del event["requestContext"]["authorizer"]["exp"]
    ws_flow.handle_message(event, deps)
    assert only_error(sockets)["code"] == "UNAUTHORIZED" and started == []


def test_cancel_after_the_tokens_expiry_still_stops_the_stream(deps, sockets, store):
    stream_id = str(uuid.uuid4())
    store.create(stream_id, "alice", "websocket")
    body = {"action": "cancel", "streamId": stream_id}
    ws_flow.handle_message(message(body, exp=time.time() - 3600), deps)
    assert store.get(stream_id).cancel_requested is True


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deeply_nested_json_is_a_bad_request_naming_the_limit(deps, sockets, depth):
    raw = '{"action":"stream","prompt":"hi","system":' + "[" * depth + "]" * depth + "}"
    assert ws_flow.handle_message(message(raw), deps) == {"statusCode": 200}
    err = only_error(sockets)
    assert err["code"] == "BAD_REQUEST"
    assert "nested deeper than the limit of 32 levels" in err["message"]


# -- the slot, follower bounds, the failure destination --------------------------------------


def test_the_slot_is_free_when_the_client_receives_the_terminal_frame(settings, store, sockets):
    sid = start_stream(store)
    seen: list[tuple[str, int]] = []
    post = sockets.send

    def send(connection_id: str, data: str) -> None:
        frame = json.loads(data)
        if frame["type"] == "done":
            seen.append((store.get(sid).status, store.running_count("alice")))
        post(connection_id, data)

    deps = ws_flow.GenerateDeps(settings, store, send, FakeStreamer(answer("a", "b")))
    payload = {"streamId": sid, "owner": "alice", "request": {"prompt": "hi", "streamId": sid}}
    assert ws_flow.generate(payload, deps, worker_id="w1") == "done"
    assert seen == [("done", 0)]


def test_the_generator_payload_names_the_generation_and_a_stale_one_produces_nothing(
    settings, store, sockets, deps, started
):
    sid = str(uuid.uuid4())
    ws_flow.handle_message(message({"action": "stream", "prompt": "hi", "streamId": sid}), deps)
    (payload,) = started
    assert payload["generation"] == store.get(sid).generation
    stale = {**payload, "generation": "0" * 16}
    gen_deps = ws_flow.GenerateDeps(settings, store, sockets.send, FakeStreamer(answer("x")))
    assert ws_flow.generate(stale, gen_deps, worker_id="w1") == "skipped"
    assert ws_flow.generate(payload, gen_deps, worker_id="w2") == "done"


def test_a_resume_past_the_follower_bound_gets_too_many_followers(settings, store, sockets, deps):
    sid = start_stream(store)
    for n in range(settings.limits.max_followers_per_stream):
        store.acquire_follower("alice", sid, f"held-{n}", 30)
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": -1}, "c2"), deps
    )
    error = only_error(sockets, "c2")
    assert error["code"] == "TOO_MANY_FOLLOWERS" and error["retryable"] is True
    assert "MAX_FOLLOWERS_PER_STREAM" in error["message"]
    assert store.get(sid).connection_id == "c1"  # not attached


def test_a_resent_stream_message_counts_as_a_follower(settings, store, sockets, deps):
    sid = start_stream(store)
    for n in range(settings.limits.max_followers_per_stream):
        store.acquire_follower("alice", sid, f"held-{n}", 30)
    body = {"action": "stream", "prompt": "hi", "streamId": sid}
    ws_flow.handle_message(message(body, "c3"), deps)
    assert only_error(sockets, "c3")["code"] == "TOO_MANY_FOLLOWERS"


def test_a_resume_releases_its_follower_slot(settings, store, sockets, deps):
    sid = start_stream(store)
    store.append_frames(sid, [FrameBuilder(sid).start("m")])
    store.mark_delivered(sid, 0)
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": -1}, "c2"), deps
    )
    assert [f["type"] for f in sockets.posts["c2"]] == ["start"]
    assert store.followers_of(stream_id=sid) == 0 and store.followers_of("alice") == 0


def failure_record(payload: dict) -> dict:
    return {
        "version": "1.0",
        "requestContext": {"requestId": "r1", "condition": "RetriesExhausted"},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
    }


def test_a_failed_generator_ends_its_stream_at_once_and_tells_the_connection(
    settings, store, sockets
):
    sid = start_stream(store)
    rec = store.claim(sid, "w1", 30)
    b = FrameBuilder(sid)
    store.append_frames(rec, [b.start("m"), b.delta("partial")])
    deps = ws_flow.GenerateDeps(settings, store, sockets.send, FakeStreamer([]))
    payload = {"streamId": sid, "owner": "alice", "generation": rec.generation}
    assert ws_flow.generate_failed(failure_record(payload), deps) == "ended"
    stored = store.frames_after(sid, -1)
    assert [f["type"] for f in stored] == ["start", "delta", "error"]
    assert stored[-1]["error"]["code"] == "INTERNAL" and stored[-1]["error"]["retryable"]
    assert sockets.posts["c1"] == [stored[-1]]
    record = store.get(sid)
    assert (record.status, record.last_seq) == ("error", 2)
    assert store.running_count("alice") == 0
    # A second record (or a redelivered one) changes nothing.
    assert ws_flow.generate_failed(failure_record(payload), deps) == "finished"
    assert store.frames_after(sid, -1) == stored


def test_a_failure_record_for_a_finished_or_foreign_stream_changes_nothing(
    settings, store, sockets
):
    sid = start_stream(store)
    store.finish(sid, "alice", "done", last_seq=-1)
    deps = ws_flow.GenerateDeps(settings, store, sockets.send, FakeStreamer([]))
    assert ws_flow.generate_failed(failure_record({"streamId": sid, "owner": "alice"}), deps) == (
        "finished"
    )
    other = start_stream(store)
    record = failure_record({"streamId": other, "owner": "mallory"})
    assert ws_flow.generate_failed(record, deps) == "finished"
    assert store.get(other).status == "running"
    assert ws_flow.generate_failed({"requestPayload": "junk"}, deps) == "ignored"
    assert ws_flow.generate_failed(failure_record({"streamId": "nope"}), deps) == "ignored"
    assert sockets.posts == {}


def test_a_stream_ending_during_a_resume_sends_its_terminal_frame_after_the_replay(
    settings, store, sockets
):
    """The producer finishes while the resume is still replaying to the new socket: it
    leaves the terminal frame to the replay, so the client never sees the stream end
    before the frames it was missing."""
    sid = start_stream(store, conn="old")
    record = store.claim(sid, "w1", 30)
    delivery = ws_flow.WebsocketDelivery(store, sockets.send, record)
    b = FrameBuilder(sid)
    for frame in (b.start("m"), b.delta("a"), b.delta("b")):
        delivery(frame)
    sockets.closed.add("old")  # the client dropped after seq 0
    done = b.done("end_turn")
    post = sockets.send

    def send(connection_id: str, data: str) -> None:
        post(connection_id, data)
        if connection_id == "new" and json.loads(data)["seq"] == 1:
            delivery(done)  # the producer ends the stream mid-replay

    deps = ws_flow.MessageDeps(settings, store, send, lambda payload: None)
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": 0}, "new"), deps
    )
    assert [f["seq"] for f in sockets.posts["new"]] == [1, 2, 3]
    assert sockets.posts["new"][-1] == done
    assert store.get(sid).status == "done"


def test_a_replay_done_before_the_stream_ends_leaves_the_terminal_frame_to_the_producer(
    settings, store, sockets, deps
):
    sid = start_stream(store, conn="old")
    record = store.claim(sid, "w1", 30)
    delivery = ws_flow.WebsocketDelivery(store, sockets.send, record)
    b = FrameBuilder(sid)
    delivery(b.start("m"))
    ws_flow.handle_message(
        message({"action": "resume", "streamId": sid, "afterSeq": -1}, "new"), deps
    )
    delivery(b.done("end_turn"))
    assert [f["type"] for f in sockets.posts["new"]] == ["start", "done"]
