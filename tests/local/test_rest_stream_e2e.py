"""Architecture 4 end to end on the local cloud: the REST API's streaming routes.

API Gateway's authorizer runs first (the app's ``jwt_auth``), then the Node streaming
function is invoked with a REST proxy event and its response relayed as written."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from local.simulated_model import answer_text, request_for_prompt
from tests.support.cloud import Cloud, model_stream, text_of
from tests.support.sse import SseEvent, events, request
from tests.support.tokens import SigningKey, id_claims, sign

pytestmark = pytest.mark.usefixtures("reset_model")

FLUSH_INTERVAL_MS = 100
# The gateway's idle timeout, shortened; heartbeats (well under it) keep a stalled
# model's stream open.
IDLE_TIMEOUT_S = 1.5
HEARTBEAT_INTERVAL_S = 0.4


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(
        tmp_path_factory.mktemp("rest-stream-cloud"),
        env={
            "FLUSH_INTERVAL_MS": str(FLUSH_INTERVAL_MS),
            "HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
            "LOCAL_REST_STREAM_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        },
    )
    yield c
    c.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def invocations(cloud: Cloud) -> int:
    """How often the Node function was invoked through the REST API's integration."""
    conn, resp = request(cloud.ep["functionInvoke"] + "_local/invocations")
    counts = json.loads(resp.read())
    conn.close()
    return int(counts["streaming"])


def start(cloud: Cloud, token: str, prompt: str):
    stream_id = str(uuid.uuid4())
    conn, resp = request(
        cloud.ep["restStream"], "POST", {"prompt": prompt, "streamId": stream_id}, auth(token)
    )
    return stream_id, conn, resp


def follow_url(cloud: Cloud, stream_id: str, query: str = "") -> str:
    return f"{cloud.ep['restStream']}/{stream_id}/events{query}"


def frames_until_terminal(resp) -> list[SseEvent]:
    got = []
    for ev in events(resp):
        if ev.data is None:
            continue  # heartbeat
        got.append(ev)
        if ev.event in ("done", "error"):
            return got
    raise AssertionError(f"the stream ended without a terminal frame after {len(got)} events")


def test_config_and_endpoints_publish_the_rest_stream_routes(cloud):
    conn, resp = request(cloud.ep["rest"] + "config")
    body = json.loads(resp.read())
    conn.close()
    assert cloud.ep["restStream"].endswith("/streams")
    assert body["endpoints"]["restStream"] == cloud.ep["restStream"]


def test_a_stream_arrives_whole_in_order_incrementally(cloud, token, model):
    before = invocations(cloud)
    prompt = f"Explain REST response streaming {uuid.uuid4()} [tokens=100]"
    stream_id, conn, resp = start(cloud, token, prompt)
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    assert resp.getheader("x-amzn-RequestId")
    received = frames_until_terminal(resp)
    conn.close()
    frames = [ev.frame() for ev in received]
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert [ev.id for ev in received] == [str(f["seq"]) for f in frames]
    assert sum(f["type"] in ("done", "error") for f in frames) == 1
    assert frames[0]["type"] == "start" and frames[-1]["type"] == "done"
    assert all(f["streamId"] == stream_id for f in frames)
    assert text_of(frames) == answer_text(request_for_prompt(prompt))
    # Incremental: the first delta arrived before the model emitted its last token.
    record = model_stream(model, prompt)
    first_delta = next(ev for ev in received if ev.event == "delta")
    assert first_delta.at < record["lastTokenAt"]
    stored = cloud.store().get(stream_id)
    assert stored is not None and stored.transport == "rest_stream"
    assert invocations(cloud) == before + 1


@pytest.mark.parametrize("kind", ["none", "forged", "expired", "garbage", "not-bearer"])
def test_a_bad_token_is_refused_at_the_gateway_and_invokes_nothing(cloud, kind):
    aud = cloud.ep["cognito"]["clientId"]
    headers = {"Content-Type": "application/json"}
    if kind != "none":
        headers["Authorization"] = {
            "forged": "Bearer " + sign(id_claims(aud=aud), SigningKey()),
            "expired": "Bearer "
            + sign(id_claims(aud=aud, exp=int(time.time()) - 3600), SigningKey()),
            "garbage": "Bearer garbage",
            "not-bearer": "Basic dXNlcjpwYXNz",
        }[kind]
    before = invocations(cloud)
    stream_id = str(uuid.uuid4())
    conn, resp = request(
        cloud.ep["restStream"], "POST", {"prompt": "hi", "streamId": stream_id}, headers
    )
    body = resp.read()
    conn.close()
    assert resp.status == 401
    assert json.loads(body) == {"message": "Unauthorized"}
    assert invocations(cloud) == before, "the function ran for a refused request"
    assert cloud.store().get(stream_id) is None


def test_a_bad_token_on_resume_is_refused_too(cloud):
    before = invocations(cloud)
    conn, resp = request(follow_url(cloud, str(uuid.uuid4())), "GET", None, auth("garbage"))
    assert resp.status == 401
    assert json.loads(resp.read()) == {"message": "Unauthorized"}
    conn.close()
    assert invocations(cloud) == before


def test_routes_the_api_does_not_define_are_refused_without_invoking(cloud, token):
    before = invocations(cloud)
    for method, url in [
        ("GET", cloud.ep["restStream"]),
        ("DELETE", follow_url(cloud, str(uuid.uuid4()))),
        ("POST", cloud.ep["restStream"] + "/x/y/z"),
    ]:
        conn, resp = request(url, method, None, auth(token))
        assert resp.status == 403, (method, url)
        assert json.loads(resp.read()) == {"message": "Missing Authentication Token"}
        conn.close()
    assert invocations(cloud) == before


def test_a_bad_body_is_400_naming_the_problem(cloud, token):
    conn, resp = request(
        cloud.ep["restStream"], "POST", {"prompt": "hi", "maxTokens": 5000}, auth(token)
    )
    error = json.loads(resp.read())["error"]
    conn.close()
    assert resp.status == 400
    assert error["code"] == "BAD_REQUEST" and "maxTokens" in error["message"]


def test_cancel_through_rest_ends_the_stream_cancelled(cloud, token, model):
    prompt = f"A long answer to cancel {uuid.uuid4()} [tokens=2000]"
    stream_id, conn, resp = start(cloud, token, prompt)
    stream = events(resp)
    while next(stream).event != "delta":
        pass
    c2, cancel = request(cloud.ep["rest"] + f"streams/{stream_id}/cancel", "POST", b"", auth(token))
    assert cancel.status == 200
    cancel.read()
    c2.close()
    rest = []
    for ev in stream:
        if ev.data is not None:
            rest.append(ev.frame())
            if ev.event in ("done", "error"):
                break
    conn.close()
    assert rest[-1]["type"] == "done" and rest[-1]["stopReason"] == "cancelled"
    assert model_stream(model, prompt)["closedBy"] == "client"


@pytest.mark.parametrize("how", ["Last-Event-ID", "afterSeq"])
def test_a_dropped_client_resumes_without_gap_or_duplicate(cloud, token, how):
    prompt = f"Resume me {uuid.uuid4()} [tokens=150]"
    stream_id, conn, resp = start(cloud, token, prompt)
    seen: list[dict[str, Any]] = []
    stream = events(resp)
    while len([f for f in seen if f["type"] == "delta"]) < 3:
        ev = next(stream)
        if ev.data is not None:
            seen.append(ev.frame())
    conn.close()  # the client goes away; the generation goes on into the store
    last = seen[-1]["seq"]
    if how == "afterSeq":
        url, headers = follow_url(cloud, stream_id, f"?afterSeq={last}"), auth(token)
    else:
        url, headers = follow_url(cloud, stream_id), {**auth(token), "Last-Event-ID": str(last)}
    c2, resumed = request(url, "GET", None, headers)
    assert resumed.status == 200
    rest = [ev.frame() for ev in frames_until_terminal(resumed)]
    c2.close()
    frames = seen + rest
    seqs = [f["seq"] for f in frames]
    assert len(seqs) == len(set(seqs)), "duplicate frames"
    assert seqs == list(range(len(seqs))), "gap or disorder"
    assert text_of(frames) == answer_text(request_for_prompt(prompt))


def test_resuming_another_users_stream_is_404(cloud, token):
    prompt = f"Mine {uuid.uuid4()} [tokens=5]"
    stream_id, conn, resp = start(cloud, token, prompt)
    frames_until_terminal(resp)
    conn.close()
    other = cloud.add_user(f"eve-{uuid.uuid4().hex[:6]}", "Eve-password-1")
    c2, resumed = request(follow_url(cloud, stream_id), "GET", None, auth(other))
    assert resumed.status == 404
    assert json.loads(resumed.read())["error"]["code"] == "NOT_FOUND"
    c2.close()


def test_heartbeats_keep_a_stalled_stream_under_the_idle_timeout(cloud, token, model):
    stall_s = IDLE_TIMEOUT_S * 2
    model.faults(stallAfterTokens=3, stallSeconds=stall_s)
    prompt = f"Stall me {uuid.uuid4()} [tokens=10]"
    _, conn, resp = start(cloud, token, prompt)
    assert resp.status == 200
    got, beats, last_at, longest_gap = [], 0, time.time(), 0.0
    for ev in events(resp):
        longest_gap = max(longest_gap, ev.at - last_at)
        last_at = ev.at
        if ev.data is None:
            beats += 1
            continue
        got.append(ev.frame())
        if ev.event in ("done", "error"):
            break
    conn.close()
    assert got[-1]["type"] == "done", "the gateway cut the stream"
    assert beats >= 2
    assert longest_gap < IDLE_TIMEOUT_S
    assert text_of(got) == answer_text(request_for_prompt(prompt))
