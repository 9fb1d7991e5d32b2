"""Case 3: bad input on every transport. Each bad request gets an error naming the problem
(and the limit, where there is one); nothing is stored or sent to the model; and the same
connection (WebSocket) or service keeps working for the next valid request."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.security.checks import assert_transcript, model_streams, unique_prompt
from tests.security.clients import Refused, gql_refusal

pytestmark = pytest.mark.security("input")

STREAMING = ("function_url", "websocket", "appsync")
LIMIT = 32_000
INVALID_JSON = "{not json"

# name -> (request body, words the error message must contain). The body's prompt gets a
# unique marker and a streamId, so "nothing stored, nothing modelled" can be checked.
BAD_REQUESTS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "invalid_json": (INVALID_JSON, ("JSON",)),
    "neither_prompt_nor_messages": ({"maxTokens": 10}, ("exactly one", "prompt", "messages")),
    "both_prompt_and_messages": (
        {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
        ("exactly one", "prompt", "messages"),
    ),
    "input_over_the_limit": ({"prompt": "x" * (LIMIT + 1)}, ("32,001", "32,000")),
    "max_tokens_zero": ({"prompt": "hi", "maxTokens": 0}, ("maxTokens", "4096")),
    "max_tokens_5000": ({"prompt": "hi", "maxTokens": 5000}, ("maxTokens", "4096")),
    "max_tokens_not_a_number": ({"prompt": "hi", "maxTokens": "x"}, ("maxTokens",)),
    "temperature_above_1": ({"prompt": "hi", "temperature": 1.5}, ("temperature", "0", "1")),
    "temperature_below_0": ({"prompt": "hi", "temperature": -0.1}, ("temperature", "0", "1")),
    "max_tokens_fractional": ({"prompt": "hi", "maxTokens": 10.5}, ("maxTokens",)),
    "max_tokens_boolean": ({"prompt": "hi", "maxTokens": True}, ("maxTokens",)),
    "temperature_not_a_number": ({"prompt": "hi", "temperature": "warm"}, ("temperature",)),
    "blank_prompt": ({"prompt": "   "}, ("prompt",)),
    "too_many_messages": (
        {"messages": [{"role": ("user", "assistant")[i % 2], "content": "m"} for i in range(101)]},
        ("101", "100"),
    ),
    "messages_out_of_order": (
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]},
        ("role", "user"),
    ),
    "unknown_field": ({"prompt": "hi", "colour": "blue"}, ("colour",)),
    "malformed_stream_id": ({"prompt": "hi", "streamId": "123"}, ("streamId", "UUID")),
}


@pytest.fixture(scope="module")
def user(users):
    return users.new("input")


def _marked(body: Any) -> tuple[Any, str | None, str | None]:
    """The body with a unique prompt marker and a fresh streamId (when it is an object)."""
    if not isinstance(body, dict):
        return body, None, None
    body = dict(body)
    stream_id = body.setdefault("streamId", str(uuid.uuid4()))
    prompt = None
    if body.get("prompt") == "hi":
        prompt = body["prompt"] = unique_prompt("bad input")
    return body, stream_id, prompt


class Session:
    """One transport, one user; the WebSocket keeps one connection for the whole case."""

    def __init__(self, name: str, transports: dict[str, Any], user: Any) -> None:
        self.name = name
        self.client = transports[name]
        self.user = user
        self.conn = self.client.connect(user.id_token) if name == "websocket" else None

    def refusal(self, body: Any) -> Refused:
        token = self.user.id_token
        if self.name == "function_url":
            with pytest.raises(Refused) as refused:
                self.client.open(token, body).close()
            return refused.value
        if self.name == "websocket":
            message = body if isinstance(body, str) else {"action": "stream", **body}
            frame = self.conn.answer(message)
            assert frame["type"] == "error" and "seq" not in frame, frame
            return Refused(None, frame["error"]["code"], frame["error"]["message"])
        if isinstance(body, str):  # not JSON: refused by AppSync before any resolver
            return _appsync_raw(self.client.graphql_url, token, body)
        refusal = gql_refusal(self.client.start(token, body))
        assert refusal is not None
        return refusal

    def valid_stream(self) -> None:
        prompt = unique_prompt("still working", tokens=3)
        body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
        if self.name == "websocket":
            live = self.client.open(self.user.id_token, body, conn=self.conn)
        else:
            live = self.client.open(self.user.id_token, body)
        with live:
            assert_transcript(live.rest(), prompt)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _appsync_raw(url: str, token: str, raw: str) -> Refused:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url,
        data=raw.encode(),
        headers={"Authorization": token, "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    (error,) = json.loads(err.value.read())["errors"]
    return Refused(err.value.code, error["errorType"], error["message"])


@pytest.fixture
def session(request, transports, user):
    s = Session(request.param, transports, user)
    yield s
    s.close()


@pytest.mark.parametrize("case", BAD_REQUESTS)
@pytest.mark.parametrize("session", STREAMING, indirect=True)
def test_a_bad_request_is_named_and_the_service_keeps_working(case, session, store, model, user):
    body, needles = BAD_REQUESTS[case]
    body, stream_id, prompt = _marked(body)
    refused = session.refusal(body)
    for needle in needles:
        assert needle in refused.message, (needle, refused)
    if session.name == "function_url":
        assert refused.status == 400 and refused.code == "BAD_REQUEST"
    elif session.name == "websocket":
        assert refused.code == "BAD_REQUEST"
    elif not isinstance(body, str) and refused.code is not None:
        # Resolver errors are the protocol's; GraphQL's own (types, unknown input fields)
        # come from AppSync before any resolver runs.
        assert refused.code == "BAD_REQUEST", refused
    if stream_id is not None and case != "malformed_stream_id":
        assert store.nothing_for(stream_id)
    if prompt is not None:
        assert model_streams(model, prompt) == []
    assert store.running_ids(user) == []
    session.valid_stream()


@pytest.mark.parametrize("session", STREAMING, indirect=True)
def test_a_fourth_concurrent_stream_is_too_many_and_a_freed_slot_works_again(
    session, users, transports, rest, appsync, store, model
):
    owner = users.new("busy")
    session.user = owner
    if session.conn is not None:
        session.conn.close()
        session.conn = session.client.connect(owner.id_token)
    client = transports[session.name]
    running = []
    for _ in range(3):
        body = {"prompt": unique_prompt("a long one", 4000), "maxTokens": 4000}
        body["streamId"] = str(uuid.uuid4())
        running.append(client.open(owner.id_token, body))
    fourth_prompt = unique_prompt("one too many")
    fourth = {"prompt": fourth_prompt, "streamId": str(uuid.uuid4())}
    refused = session.refusal(fourth)
    assert refused.code == "TOO_MANY_STREAMS" and "3" in refused.message, refused
    if session.name == "function_url":
        assert refused.status == 429
    assert store.nothing_for(fourth["streamId"])
    assert model_streams(model, fourth_prompt) == []
    assert len(store.running_ids(owner)) == 3
    # Cancel one; once it ended, its slot serves a new stream.
    first = running.pop(0)
    assert rest.cancel(owner.id_token, first.stream_id)[0] == 200
    assert first.rest()[-1]["stopReason"] == "cancelled"
    store.assert_consistent(first.stream_id, owner, status="cancelled")
    session.valid_stream()
    for live in running:
        assert rest.cancel(owner.id_token, live.stream_id)[0] == 200
        assert live.rest()[-1]["stopReason"] == "cancelled"
        live.close()
    first.close()


def test_a_websocket_message_over_128_kb_closes_that_socket_only(websocket, user, store, model):
    prompt = unique_prompt("too big")
    stream_id = str(uuid.uuid4())
    other = websocket.connect(user.id_token)  # another client of the same user
    conn = websocket.connect(user.id_token)
    message = {"action": "stream", "streamId": stream_id, "prompt": prompt + "x" * (130 * 1024)}
    conn.send(json.dumps(message))
    with pytest.raises(ConnectionClosed) as closed:
        conn.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert closed.value.rcvd.reason == "Message too big"  # as API Gateway says it
    assert store.nothing_for(stream_id) and model_streams(model, prompt) == []
    # The other socket and a new one both work.
    for conn in (other, websocket.connect(user.id_token)):
        prompt = unique_prompt("after a big one", tokens=3)
        body = {"prompt": prompt, "streamId": str(uuid.uuid4())}
        assert_transcript(websocket.open(user.id_token, body, conn).rest(), prompt)
        conn.close()


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("streams/123", "streamId"),
        ("streams/{id}?afterSeq=x", "afterSeq"),
        ("streams/{id}?afterSeq=-5", "afterSeq"),
    ],
)
def test_a_bad_rest_request_is_named_and_the_api_keeps_working(path, needle, rest, user):
    from tests.security.clients import bearer, http_call

    stream_id = str(uuid.uuid4())
    status, _, raw = http_call(rest.url + path.format(id=stream_id), headers=bearer(user.id_token))
    error = json.loads(raw)["error"]
    assert status == 400 and error["code"] == "BAD_REQUEST" and needle in error["message"]
    assert rest.read(user.id_token, stream_id)[0] == 404  # a well-formed read still answers


def test_concurrent_starts_on_every_transport_never_exceed_the_cap(
    users, transports, rest, store, model
):
    """Six starts at once, two per transport, for one user: exactly three run."""
    import threading

    owner = users.new("racer")
    outcomes: list[Any] = []
    barrier = threading.Barrier(6)

    def start(name: str) -> None:
        body = {"prompt": unique_prompt("racing", 4000), "maxTokens": 4000}
        body["streamId"] = str(uuid.uuid4())
        barrier.wait()
        try:
            outcomes.append(transports[name].open(owner.id_token, body))
        except Refused as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=start, args=(n,)) for n in STREAMING for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    running = [o for o in outcomes if not isinstance(o, Refused)]
    refused = [o for o in outcomes if isinstance(o, Refused)]
    try:
        assert len(outcomes) == 6
        assert [r.code for r in refused] == ["TOO_MANY_STREAMS"] * 3, refused
        assert sorted(live.stream_id for live in running) == store.running_ids(owner)
    finally:
        for live in running:
            rest.cancel(owner.id_token, live.stream_id)
            live.rest()
            live.close()
