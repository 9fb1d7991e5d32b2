"""An open WebSocket outlives its token (weakness 7 of the hardening round), end to end:
Cognito issues tokens that live a few seconds and the app grants no leeway, so a socket
opened with a valid token sees it expire. A new stream on it is then refused with
UNAUTHORIZED, retryable, telling the client to reconnect with a fresh token; a new
connection with a freshly issued token streams again."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.security.clients import WsConnection
from tests.support.cloud import Cloud
from tests.support.tokens import unverified_claims

pytestmark = [pytest.mark.local, pytest.mark.security("auth")]

TOKEN_VALIDITY_S = 3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(
        tmp_path_factory.mktemp("token-expiry"),
        env={"JWT_LEEWAY_S": "0", "LOCAL_COGNITO_TOKEN_VALIDITY_S": str(TOKEN_VALIDITY_S)},
    )
    yield c
    c.stop()


def _wait_past(exp: int) -> None:
    """Until the token's own expiry has passed (nothing else can be waited on for it)."""
    while time.time() <= exp + 0.2:
        time.sleep(0.1)


def test_a_stream_after_the_tokens_expiry_is_refused_and_a_fresh_token_works(cloud):
    user = cloud.ep["user"]
    token = cloud.sign_in(user["username"], user["password"])["IdToken"]
    exp = unverified_claims(token)["exp"]
    assert exp - time.time() <= TOKEN_VALIDITY_S + 1
    conn = WsConnection(cloud.ep["websocket"], token)
    try:
        _wait_past(exp)
        stream_id = str(uuid.uuid4())
        frame = conn.answer({"action": "stream", "prompt": "hi", "streamId": stream_id})
        assert frame["type"] == "error" and "seq" not in frame, frame
        assert frame["error"] == {
            "code": "UNAUTHORIZED",
            "message": "The connection's token has expired: reconnect with a fresh token.",
            "retryable": True,
        }
        assert frame["streamId"] == stream_id
        assert cloud.store().get(stream_id) is None  # nothing started
        # A cancel is still taken (it only stops what the user started).
        conn.send(json.dumps({"action": "cancel", "streamId": str(uuid.uuid4())}))
        assert conn.recv(10)["error"]["code"] == "NOT_FOUND"
    finally:
        conn.close()
    fresh = cloud.sign_in(user["username"], user["password"])["IdToken"]
    conn = WsConnection(cloud.ep["websocket"], fresh)
    try:
        stream_id = str(uuid.uuid4())
        conn.send({"action": "stream", "prompt": "hi [tokens=3]", "streamId": stream_id})
        first = conn.recv(20)
        assert first["type"] == "start" and first["streamId"] == stream_id, first
    finally:
        conn.close()
