"""Limits on the shape of input (weaknesses 4, 5 and 11 of the hardening round):

* JSON nested deeper than 32 levels is a BAD_REQUEST naming the limit on every entry
  point that parses client JSON (WebSocket messages, the Function URL body, the AppSync
  emulator's bodies and real-time messages), never a RecursionError, a 500 or a lost
  connection, and the same connection keeps working;
* the AppSync API refuses operations over its query depth (5) and resolver count (3)
  limits before any resolver runs: 50 aliased ``streamFrames`` invoke nothing;
* ``maxTokens: 1.0`` means 1 on every transport, and 1.5 is refused on every transport.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from tests.security.checks import assert_transcript, model_streams, unique_prompt
from tests.security.clients import Refused, gql_refusal
from tests.support.appsync import FRAMES

pytestmark = pytest.mark.security("input")

NESTING = "the JSON is nested deeper than the limit of 32 levels"
DEEP = 100_000  # far past Python's recursion limit
WS_DEEP = 16_000  # as deep as fits in one WebSocket frame (32 KB)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def user(users):
    return users.new("limits")


def _post(url: str, token: str, raw: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=raw.encode(),
        headers={"Authorization": token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("depth", [33, WS_DEEP])
def test_a_deeply_nested_websocket_message_is_a_bad_request_and_the_socket_works(
    depth, websocket, user
):
    conn = websocket.connect(user.id_token)
    try:
        raw = '{"action":"stream","prompt":"hi","system":' + _nested(depth) + "}"
        frame = conn.answer(raw)
        assert frame["type"] == "error" and "seq" not in frame, frame
        assert frame["error"]["code"] == "BAD_REQUEST"
        assert NESTING in frame["error"]["message"]
        prompt = unique_prompt("after deep json", tokens=3)
        body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
        assert_transcript(websocket.open(user.id_token, body, conn).rest(), prompt)
    finally:
        conn.close()


@pytest.mark.parametrize("depth", [33, DEEP])
def test_a_deeply_nested_function_url_body_is_a_bad_request(depth, function_url, user):
    raw = '{"prompt":"hi","system":' + _nested(depth) + "}"
    with pytest.raises(Refused) as refused:
        function_url.open(user.id_token, raw)
    assert (refused.value.status, refused.value.code) == (400, "BAD_REQUEST")
    assert NESTING in refused.value.message


@pytest.mark.parametrize("depth", [40, DEEP])
def test_deeply_nested_appsync_variables_are_a_bad_request_not_a_500(depth, appsync, user):
    raw = json.dumps({"query": FRAMES, "variables": {"streamId": str(uuid.uuid4())}})
    raw = raw[:-1] + ',"extensions":' + _nested(depth) + "}"
    status, body = _post(appsync.graphql_url, user.id_token, raw)
    assert status == 400, body
    (error,) = body["errors"]
    assert error["errorType"] == "BadRequestException"
    assert "nested deeper than the limit of 32 levels" in error["message"]


def test_deeply_nested_appsync_realtime_data_is_refused_and_the_connection_works(appsync, user):
    with appsync.realtime(user.id_token) as rt:
        host = appsync.graphql_url.split("/")[2]
        data = '{"query":"subscription { x }","variables":' + _nested(DEEP) + "}"
        rt.ws.send(
            json.dumps(
                {
                    "id": "deep",
                    "type": "start",
                    "payload": {
                        "data": data,
                        "extensions": {
                            "authorization": {"Authorization": user.id_token, "host": host}
                        },
                    },
                }
            )
        )
        refused = rt.next_message(10)
        assert refused["type"] == "error" and refused["id"] == "deep", refused
        assert "32 levels" in refused["payload"]["errors"][0]["message"]
        rt.subscribe(str(uuid.uuid4()))  # the connection still serves subscriptions


def _aliased_frames(n: int, stream_id: str) -> str:
    fields = " ".join(
        f'a{i}: streamFrames(streamId: "{stream_id}", afterSeq: -1) {{ frames hasMore }}'
        for i in range(n)
    )
    return "query Many { " + fields + " }"


def test_fifty_aliased_stream_frames_are_refused_without_invoking_the_resolver(
    appsync, appsync_control, user
):
    stream_id = str(uuid.uuid4())
    before = appsync_control.stats()["resolverInvocations"]
    answer = appsync.call(user.id_token, _aliased_frames(50, stream_id))
    assert answer["status"] == 200 and answer.get("data") is None, answer
    (error,) = answer["errors"]
    assert error["errorType"] == "ResolverCountLimitExceeded"
    assert "resolver count limit is 3" in error["message"]
    assert appsync_control.stats()["resolverInvocations"] == before
    # Three are within the limit and run.
    answer = appsync.call(user.id_token, _aliased_frames(3, stream_id))
    assert appsync_control.stats()["resolverInvocations"] == before + 3
    assert all(e["errorType"] == "NOT_FOUND" for e in answer["errors"]), answer


def test_an_operation_deeper_than_five_levels_is_refused(appsync, appsync_control, user):
    query = "query Deep { __schema { types { fields { type { ofType { name } } } } } }"
    before = appsync_control.stats()["resolverInvocations"]
    answer = appsync.call(user.id_token, query)
    assert answer.get("data") is None
    (error,) = answer["errors"]
    assert error["errorType"] == "QueryDepthLimitExceeded"
    assert "query depth limit is 5" in error["message"]
    assert appsync_control.stats()["resolverInvocations"] == before


STREAMING = ("function_url", "websocket", "appsync")


@pytest.mark.parametrize("name", STREAMING)
def test_max_tokens_one_point_zero_is_one_on_every_transport(name, transports, user, model):
    prompt = unique_prompt("one token", tokens=3)
    body = {"prompt": prompt, "maxTokens": 1.0, "streamId": str(uuid.uuid4())}
    with transports[name].open(user.id_token, body) as live:
        frames = live.rest()
    # The model was asked for one token: it stopped there.
    assert frames[-1]["type"] == "done" and frames[-1]["stopReason"] == "max_tokens", frames
    (opened,) = model_streams(model, prompt)
    assert opened["tokensSent"] == 1, opened


@pytest.mark.parametrize("name", STREAMING)
def test_a_fractional_max_tokens_is_refused_on_every_transport(
    name, transports, user, store, model
):
    prompt = unique_prompt("fractional")
    body = {"prompt": prompt, "maxTokens": 1.5, "streamId": str(uuid.uuid4())}
    client = transports[name]
    if name == "appsync":
        refused = gql_refusal(client.start(user.id_token, body))
        assert refused is not None
    else:
        with pytest.raises(Refused) as raised:
            client.open(user.id_token, body).close()
        refused = raised.value
    assert "maxTokens" in refused.message or "Int" in refused.message, refused
    assert store.nothing_for(body["streamId"]) and model_streams(model, prompt) == []
