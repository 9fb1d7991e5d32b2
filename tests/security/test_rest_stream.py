"""The REST API's streaming routes (architecture 4) under the suite's cases that are
specific to a front door authenticated at the gateway:

* auth: every bad token is refused by API Gateway (401, its own body) and the streaming
  function is not invoked at all, on start and on resume;
* input: bad bodies and positions are named by the function, a body over API Gateway's
  10 MB is refused by the gateway without invoking it, unknown routes are the gateway's 403;
* transport: a dropped client resumes from the store with no frame lost or duplicated,
  and a resume after the terminal frame is 204.

Cancel, isolation and logs cover this front door in their own modules (test_cancel.py,
test_isolation.py, test_secrets_in_logs.py)."""

# The auth fixtures are imported from test_auth.py; pytest passes them by name.
# ruff: noqa: F811

from __future__ import annotations

import json
import uuid

import pytest

from tests.security.checks import assert_transcript, model_streams, unique_prompt
from tests.security.clients import Refused, bearer, http_call

# The auth case's tokens and victim (one set per run of test_auth.py's fixtures).
from tests.security.test_auth import (  # noqa: F401  (pytest fixtures)
    KINDS,
    SECRET_TEXT,
    bad_tokens,
    victim,
    victim_streams,
)

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def user(users):
    return users.new("rest-streamer")


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.security("auth")
@pytest.mark.parametrize("kind", KINDS)
def test_rest_stream_start_is_refused_at_the_gateway_and_invokes_nothing(
    kind, bad_tokens, rest_stream, store, model, victim
):
    stream_id, prompt = str(uuid.uuid4()), unique_prompt("never streamed")
    slots = store.running_ids(victim)
    before = rest_stream.invocations()
    with pytest.raises(Refused) as refused:
        rest_stream.open(bad_tokens[kind], {"prompt": prompt, "streamId": stream_id})
    assert refused.value.status == 401
    # API Gateway's answer for a missing token or a failed TOKEN authorizer: no reason.
    assert json.loads(refused.value.body) == {"message": "Unauthorized"}
    assert rest_stream.invocations() == before, "the function ran for a refused request"
    assert store.nothing_for(stream_id)
    assert store.running_ids(victim) == slots
    assert model_streams(model, prompt) == []


@pytest.mark.security("auth")
@pytest.mark.parametrize("kind", KINDS)
def test_rest_stream_resume_is_refused_at_the_gateway_and_replays_nothing(
    kind, bad_tokens, rest_stream, victim_streams
):
    before = rest_stream.invocations()
    with pytest.raises(Refused) as refused:
        rest_stream.resume(bad_tokens[kind], victim_streams["done"], -1)
    assert refused.value.status == 401
    assert json.loads(refused.value.body) == {"message": "Unauthorized"}
    assert SECRET_TEXT not in refused.value.body
    assert rest_stream.invocations() == before


# -- input -----------------------------------------------------------------------------------


@pytest.mark.security("input")
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "JSON"),
        ({"prompt": "hi", "maxTokens": 5000}, "maxTokens"),
        ({"prompt": "hi", "streamId": "not-a-uuid"}, "streamId"),
        ({"prompt": "x" * 32_001}, "32,000"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "exactly one"),
    ],
)
def test_rest_stream_names_a_bad_body(body, needle, rest_stream, user, store):
    with pytest.raises(Refused) as refused:
        rest_stream.open(user.id_token, body)
    assert refused.value.status == 400
    assert refused.value.code == "BAD_REQUEST" and needle in refused.value.message
    assert store.running_ids(user) == []


@pytest.mark.security("input")
@pytest.mark.parametrize(
    ("stream_id", "query", "needle"),
    [("not-a-uuid", "", "streamId"), (None, "?afterSeq=x", "integer")],
)
def test_rest_stream_names_a_bad_position(stream_id, query, needle, rest_stream, user):
    target = stream_id or str(uuid.uuid4())
    status, _, raw = http_call(
        rest_stream.events_url(target) + query, headers=bearer(user.id_token)
    )
    error = json.loads(raw)["error"]
    assert status == 400 and error["code"] == "BAD_REQUEST" and needle in error["message"]


@pytest.mark.security("input")
def test_a_body_over_the_gateway_limit_is_refused_without_invoking(rest_stream, user):
    before = rest_stream.invocations()
    body = b'{"prompt": "' + b"x" * API_GATEWAY_MAX_BODY + b'"}'
    status, _, raw = http_call(
        rest_stream.url,
        "POST",
        body,
        headers={**bearer(user.id_token), "Content-Type": "application/json"},
    )
    assert status == 413 and json.loads(raw) == {"message": "Request Too Long"}
    assert rest_stream.invocations() == before


@pytest.mark.security("input")
@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("PUT", ""), ("POST", "/x/events"), ("GET", "/a/b")]
)
def test_routes_the_api_lacks_are_the_gateways_403(method, suffix, rest_stream, user):
    before = rest_stream.invocations()
    status, _, raw = http_call(
        rest_stream.url + suffix, method, b"{}", headers=bearer(user.id_token)
    )
    assert status == 403 and json.loads(raw) == {"message": "Missing Authentication Token"}
    assert rest_stream.invocations() == before


@pytest.mark.security("input")
def test_the_service_keeps_working_after_bad_input(rest_stream, user, store):
    body = {"prompt": unique_prompt("after the bad input") + " [tokens=5]"}
    body["streamId"] = str(uuid.uuid4())
    with rest_stream.open(user.id_token, body) as live:
        frames = live.rest()
    assert_transcript(frames, body["prompt"])
    store.assert_consistent(live.stream_id, user, status="done", client_frames=frames)


# -- transport -------------------------------------------------------------------------------


@pytest.mark.security("transport")
@pytest.mark.parametrize("trial", range(5))
def test_a_dropped_client_resumes_with_no_frame_lost_or_duplicated(trial, rest_stream, user, store):
    prompt = f"Resume trial {trial} {uuid.uuid4()} [tokens=120]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
    live = rest_stream.open(user.id_token, body)
    live.until(lambda f: f["type"] == "delta" and f["seq"] >= 2 + trial)
    seen = list(live.received)
    live.drop()
    with rest_stream.resume(user.id_token, live.stream_id, seen[-1]["seq"]) as resumed:
        rest = resumed.rest()
    frames = seen + rest
    assert_transcript(frames, prompt)
    store.assert_consistent(live.stream_id, user, status="done", client_frames=frames)


@pytest.mark.security("transport")
def test_resuming_after_the_terminal_frame_is_204(rest_stream, user, store):
    prompt = f"Short {uuid.uuid4()} [tokens=5]"
    with rest_stream.open(user.id_token, {"prompt": prompt, "streamId": str(uuid.uuid4())}) as live:
        frames = live.rest()
    assert_transcript(frames, prompt)
    store.assert_consistent(live.stream_id, user, status="done")
    status, _, raw = http_call(
        rest_stream.events_url(live.stream_id),
        headers={**bearer(user.id_token), "Last-Event-ID": str(frames[-1]["seq"])},
    )
    assert (status, raw) == (204, b"")


# -- isolation -------------------------------------------------------------------------------
# (test_isolation.py runs its victims on the other three transports: a fourth stream of the
# same victim would hit the per-user cap.)


@pytest.fixture(scope="module")
def running_victim(users, rest_stream):
    alice = users.new("rest-alice")
    prompt = f"Alice's private question {uuid.uuid4()} [tokens=4096]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "maxTokens": 4096}
    live = rest_stream.open(alice.id_token, body)
    live.until(lambda f: f["type"] == "delta")
    yield alice, live, prompt
    live.close()


def _refusal(call) -> Refused:
    with pytest.raises(Refused) as refused:
        call()
    return refused.value


@pytest.mark.security("isolation")
@pytest.mark.parametrize("way", ["rest_stream", "function_url"])
def test_another_user_cannot_resume_a_rest_stream(way, running_victim, users, transports, store):
    alice, live, _ = running_victim
    mallory = users.new("rest-mallory")
    nobody = str(uuid.uuid4())
    client = transports[way]
    refused = _refusal(lambda: client.resume(mallory.id_token, live.stream_id, -1))
    assert (refused.status, refused.code) == (404, "NOT_FOUND")
    other = _refusal(lambda: client.resume(mallory.id_token, nobody, -1))
    assert refused.body == other.body.replace(nobody, live.stream_id)  # existence never leaks
    record = store.store.get(live.stream_id)
    assert record.owner == alice.sub and record.status == "running"
    assert store.running_ids(mallory) == []


@pytest.mark.security("isolation")
def test_another_user_cannot_take_over_a_rest_streams_id(
    running_victim, users, rest_stream, rest, model, store
):
    alice, live, _ = running_victim
    mallory = users.new("rest-mallory")
    prompt = f"Mallory's takeover {uuid.uuid4()} [tokens=5]"
    refused = _refusal(
        lambda: rest_stream.open(mallory.id_token, {"prompt": prompt, "streamId": live.stream_id})
    )
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    assert model_streams(model, prompt) == []
    assert rest.cancel(mallory.id_token, live.stream_id)[0] == 404
    record = store.store.get(live.stream_id)
    assert record.owner == alice.sub and record.cancel_requested is False


@pytest.mark.security("isolation")
def test_the_rest_stream_victim_is_intact_after_the_attacks(running_victim, rest, model, store):
    alice, live, prompt = running_victim
    assert rest.cancel(alice.id_token, live.stream_id)[0] == 200
    live.rest()
    frames = list(live.received)
    assert_transcript(frames)
    assert frames[-1]["type"] == "done" and frames[-1]["stopReason"] == "cancelled"
    (only,) = model_streams(model, prompt)  # one generation
    assert only["closedBy"] == "client"
    store.assert_consistent(live.stream_id, alice, status="cancelled", client_frames=frames)
