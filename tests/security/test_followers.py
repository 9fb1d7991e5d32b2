"""Weakness: one user could starve the Function URL by following or resuming their own
stream any number of times (each follower holds an invocation polling the store). Every
read path that follows or resumes holds a leased follower slot: at most
MAX_FOLLOWERS_PER_STREAM per stream and MAX_FOLLOWERS_PER_USER per user, refused with
TOO_MANY_FOLLOWERS (429 before the SSE starts, an error frame on the WebSocket, a
GraphQL error on AppSync), released when the follower ends.
"""

from __future__ import annotations

import uuid

import pytest

from chalicelib.settings import Limits
from tests.security.checks import unique_prompt
from tests.security.clients import Live, Refused, gql_refusal, wait_until

pytestmark = pytest.mark.security("isolation")

PER_STREAM = Limits().max_followers_per_stream
PER_USER = Limits().max_followers_per_user


def _long(client, user) -> Live:
    body = {"prompt": unique_prompt("followed", 4000), "maxTokens": 4000}
    body["streamId"] = str(uuid.uuid4())
    return client.open(user.id_token, body)


def _follow(function_url, user, stream_id: str) -> Live:
    """A Function URL follower, once it is following (its first frame arrived)."""
    live = function_url.resume(user.id_token, stream_id, -1)
    live._buffer.append(live._pull(20)[0])
    return live


def _refused(call) -> Refused:
    with pytest.raises(Refused) as info:
        live = call()
        live.close()
    return info.value


def _end(rest, user, lives: list[Live]) -> None:
    for live in lives:
        rest.cancel(user.id_token, live.stream_id)
    for live in lives:
        live.close()


def test_function_url_followers_of_one_stream_are_bounded(
    users, function_url, rest, store, request
):
    user = users.new("follower")
    producer = _long(function_url, user)
    producer.until(lambda f: f["type"] == "delta")
    followers = []
    try:
        followers = [_follow(function_url, user, producer.stream_id) for _ in range(PER_STREAM)]
        refused = _refused(lambda: function_url.resume(user.id_token, producer.stream_id, -1))
        assert (refused.status, refused.code) == (429, "TOO_MANY_FOLLOWERS"), refused
        assert "MAX_FOLLOWERS_PER_STREAM" in refused.message
        # A start re-posted for the same stream follows it too: counted the same way.
        again = {"prompt": "again", "streamId": producer.stream_id}
        refused = _refused(lambda: function_url.open(user.id_token, again))
        assert (refused.status, refused.code) == (429, "TOO_MANY_FOLLOWERS"), refused
        # Followers end with their stream (Lambda is not told that a client left, so a
        # follower serves until the terminal frame) and give their slots back.
        assert rest.cancel(user.id_token, producer.stream_id)[0] == 200
        for live in followers:
            assert live.rest()[-1]["stopReason"] == "cancelled"
    finally:
        _end(rest, user, [producer, *followers])
    wait_until(
        lambda: (
            store.store.followers_of(stream_id=producer.stream_id) == 0
            and store.store.followers_of(user.sub) == 0
        ),
        10,
        "every follower slot being released",
    )
    with function_url.resume(user.id_token, producer.stream_id, -1) as replay:
        assert replay.rest()[-1]["stopReason"] == "cancelled"


def _try(call):
    try:
        return call()
    except Refused:
        return None


def test_followers_of_one_user_are_bounded_on_every_transport(
    users, function_url, websocket, appsync, rest, store
):
    user = users.new("followers")
    streams = [_long(function_url, user), _long(function_url, user), _long(websocket, user)]
    for live in streams:
        live.until(lambda f: f["type"] == "delta")
    target = streams[2].stream_id  # a WebSocket stream, nobody follows it yet
    followers: list[Live] = []
    try:
        for i in range(PER_USER):
            followers.append(_follow(function_url, user, streams[i % 2].stream_id))
        refused = _refused(lambda: function_url.resume(user.id_token, target, -1))
        assert (refused.status, refused.code) == (429, "TOO_MANY_FOLLOWERS"), refused
        assert "MAX_FOLLOWERS_PER_USER" in refused.message
        conn = websocket.connect(user.id_token)
        try:
            for message in (
                {"action": "resume", "streamId": target, "afterSeq": -1},
                {"action": "stream", "prompt": "again", "streamId": target},
            ):
                frame = conn.answer(message)
                assert frame["type"] == "error" and "seq" not in frame, frame
                assert frame["error"]["code"] == "TOO_MANY_FOLLOWERS", frame
                assert frame["error"]["retryable"] is True
        finally:
            conn.close()
        gql = gql_refusal(appsync.read(user.id_token, target, -1))
        assert gql is not None and gql.code == "TOO_MANY_FOLLOWERS", gql
        # Another user is not affected.
        other = users.new("unaffected")
        mine = _long(function_url, other)
        try:
            assert _follow(function_url, other, mine.stream_id) is not None
        finally:
            _end(rest, other, [mine])
        # Followers that end give their slots back: every read path works again.
        for live in streams[:2]:
            assert rest.cancel(user.id_token, live.stream_id)[0] == 200
        for live in followers:
            live.rest()
        wait_until(
            lambda: gql_refusal(appsync.read(user.id_token, target, -1)) is None,
            10,
            "follower slots being given back",
        )
        with websocket.resume(user.id_token, target, -1) as resumed:
            assert resumed.next()["type"] != "error"  # replay and live frames interleave
    finally:
        _end(rest, user, [*streams, *followers])
