"""The WebSocket entry points as Chalice wires them: constructed API Gateway events
through the Chalice test client, @connections stubbed with botocore's Stubber."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from chalice.test import Client

import app as app_module
from chalicelib import services
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from tests.support.tokens import CLIENT_ID, ISSUER, SigningKey, id_claims, sign

KEY = SigningKey()


class _Session:
    """Stands in for boto3.Session: hands out the stubbed management client."""

    region_name = "us-east-1"

    def __init__(self, client: Any) -> None:
        self._client = client
        self.endpoint_url: str | None = None

    def client(self, service_name: str, endpoint_url: str | None = None) -> Any:
        self.endpoint_url = endpoint_url
        return self._client


@pytest.fixture
def connections(monkeypatch):
    mgmt = boto3.client(
        "apigatewaymanagementapi",
        region_name="us-east-1",
        endpoint_url="https://example.invalid/api",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    session = _Session(mgmt)
    monkeypatch.setattr(app_module.app.websocket_api, "session", session)
    monkeypatch.setattr(app_module.app.websocket_api, "_client", None)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with Stubber(mgmt) as stubber:
        yield stubber, session
        stubber.assert_no_pending_responses()


@pytest.fixture
def client(monkeypatch):
    verifier = JwtVerifier(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        jwks=JwksCache("http://jwks.invalid", fetch=lambda url, t: {"keys": [KEY.jwk()]}),
    )
    monkeypatch.setattr(services, "verifier", lambda: verifier)
    monkeypatch.setattr(services, "rate_limiter", lambda: limiter)
    with Client(app_module.app) as c:
        yield c


class CountingLimiter:
    """Lets every message through and counts them (the budget itself: test_ws_rate.py)."""

    def __init__(self) -> None:
        self.counted: list[str] = []

    def check(self, connection_id: str) -> None:
        self.counted.append(connection_id)


limiter = CountingLimiter()


def ws_event(
    route_key: str, body: str | None = None, sub: str | None = "alice", exp: int | None = None
) -> dict:
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route_key,
            "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(
                route_key, "MESSAGE"
            ),
            "connectionId": "conn-1",
            "apiId": "abc123",
            "stage": "api",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        },
        "headers": {"Sec-WebSocket-Protocol": "llm-stream.v1, auth.x"},
        "isBase64Encoded": False,
    }
    if sub:
        event["requestContext"]["authorizer"] = {
            "sub": sub,
            "principalId": sub,
            "exp": int(time.time()) + 3600 if exp is None else exp,
        }
    if body is not None:
        event["body"] = body
    return event


def test_authorizer_function_allows_a_valid_token(client):
    token = sign(id_claims("alice"), KEY)
    event = {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:1:abc123/api/$connect",
        "headers": {"Sec-WebSocket-Protocol": f"llm-stream.v1, auth.{token}"},
    }
    payload = client.lambda_.invoke("ws_authorize", event).payload
    assert payload["principalId"] == "alice"
    assert payload["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_connect_handler_selects_the_subprotocol(client, connections):
    payload = client.lambda_.invoke("ws_connect", ws_event("$connect")).payload
    assert payload == {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "llm-stream.v1"}}


def test_bad_json_is_answered_on_the_connection_through_connections(client, connections):
    stubber, session = connections
    stubber.add_response("post_to_connection", {}, {"ConnectionId": "conn-1", "Data": ANY})
    payload = client.lambda_.invoke("ws_message", ws_event("$default", body="{oops")).payload
    assert payload == {"statusCode": 200}  # and the stub saw exactly one post (teardown)
    # No WEBSOCKET_MANAGEMENT_URL here: Chalice derives the endpoint from the event.
    assert session.endpoint_url == "https://abc123.execute-api.us-east-1.amazonaws.com/api"


def test_a_gone_client_does_not_fail_the_message_handler(client, connections):
    stubber, _ = connections
    stubber.add_client_error(
        "post_to_connection", service_error_code="GoneException", http_status_code=410
    )
    payload = client.lambda_.invoke("ws_message", ws_event("$default", body="[]")).payload
    assert payload == {"statusCode": 200}


def test_disconnect_handler_succeeds(client, connections):
    payload = client.lambda_.invoke("ws_disconnect", ws_event("$disconnect")).payload
    assert payload == {"statusCode": 200}


def test_error_frame_posted_names_the_problem(client, connections, monkeypatch):
    stubber, _ = connections
    posted: list[dict] = []
    original = app_module.app.websocket_api.send

    def capture(connection_id: str, message: str) -> None:
        posted.append(json.loads(message))
        original(connection_id, message)

    monkeypatch.setattr(app_module.app.websocket_api, "send", capture)
    stubber.add_response("post_to_connection", {}, {"ConnectionId": "conn-1", "Data": ANY})
    client.lambda_.invoke("ws_message", ws_event("$default", body=json.dumps({"action": "x"})))
    (frame,) = posted
    assert frame["error"]["code"] == "BAD_REQUEST"
    assert "unknown action 'x'" in frame["error"]["message"]


def test_the_authorizer_records_the_tokens_expiry_in_the_connection_context(client):
    claims = id_claims("alice")
    token = sign(claims, KEY)
    event = {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:1:abc123/api/$connect",
        "headers": {"Sec-WebSocket-Protocol": f"llm-stream.v1, auth.{token}"},
    }
    payload = client.lambda_.invoke("ws_authorize", event).payload
    assert payload["context"]["exp"] == claims["exp"]


@pytest.mark.security("auth")
def test_a_stream_on_a_connection_whose_token_expired_is_refused_with_reconnect(
    client, connections
):
    """The socket was opened with a valid token that has since expired (beyond the leeway):
    a new stream is refused with UNAUTHORIZED, retryable, telling the client to reconnect
    with a fresh token; nothing is started."""
    from chalicelib.frames import WEBSOCKET_FRAME_LIMIT, encode, rejection
    from chalicelib.ws_flow import token_expired_error

    stubber, _ = connections
    stream_id = "6f1c2a3b-0000-4000-8000-000000000001"
    expected = encode(rejection(token_expired_error(), stream_id), WEBSOCKET_FRAME_LIMIT)
    stubber.add_response("post_to_connection", {}, {"ConnectionId": "conn-1", "Data": expected})
    body = json.dumps({"action": "stream", "prompt": "hi", "streamId": stream_id})
    expired = int(time.time()) - 61 - 60  # past exp and the 60 s leeway
    payload = client.lambda_.invoke("ws_message", ws_event("$default", body, exp=expired)).payload
    assert payload == {"statusCode": 200}
    frame = json.loads(expected)["error"]
    assert frame == {
        "code": "UNAUTHORIZED",
        "message": "The connection's token has expired: reconnect with a fresh token.",
        "retryable": True,
    }


def test_every_message_is_counted_against_the_connections_budget(client, connections):
    stubber, _ = connections
    stubber.add_response("post_to_connection", {}, {"ConnectionId": "conn-1", "Data": ANY})
    before = len(limiter.counted)
    client.lambda_.invoke("ws_message", ws_event("$default", body="{oops"))
    assert limiter.counted[before:] == ["conn-1"]
