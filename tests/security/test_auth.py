"""Case 1: bad tokens on every entry point. Each is refused with the right status or error
code, and nothing is streamed, written to the store, or subscribed.

The tokens, against the local cloud's own pool and app client:

* none, garbage;
* forged signature: the victim's real claims signed with another RSA key under the pool's
  real ``kid`` (the pool's private key is not available to anyone but the pool);
* ``alg: none`` and HS256 signed with the pool's published RSA key (key confusion);
* expired, not yet valid: real claims with ``exp`` an hour ago / ``nbf`` in an hour, signed
  as the forgery above (the claim checks themselves are unit-tested with a known key in
  tests/unit/test_jwt_verify.py and node_function/test);
* wrong issuer: a real, validly signed ID token of a second user pool (the Cognito emulator
  signs every pool with its one per-run key, so only ``iss`` is wrong);
* wrong client: a real, validly signed ID token of the same pool for a second app client,
  created through the emulator's CreateUserPoolClient (only ``aud`` is wrong);
* access token: the victim's real access token instead of the ID token (AppSync's door lets
  it through, as on AWS; the resolvers and the subscription refuse it).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib.frames import FrameBuilder
from tests.security.checks import model_streams, unique_prompt
from tests.security.clients import Refused, realtime_header
from tests.support.appsync import SUBSCRIBE, Realtime
from tests.support.tokens import (
    SigningKey,
    hs256_with_pem,
    public_pem_of_jwk,
    sign,
    unsigned,
    unverified_claims,
)

pytestmark = pytest.mark.security("auth")

KINDS = (
    "none",
    "garbage",
    "forged_signature",
    "alg_none",
    "hs256_key_confusion",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_client",
    "access_token",
)
# Tokens AppSync's user-pool door accepts (as AWS does): the API refuses them itself.
PASSES_APPSYNC_DOOR = {"access_token"}
SECRET_TEXT = "confidential transcript text"
# Every HTTP entry point answers a refused token as API Gateway answers a failed authorizer
# (the reason goes to the log only).
UNAUTHORIZED_BODY = {"message": "Unauthorized"}


def _second_client_token(cloud, user) -> str:
    """The user's ID token issued to a second app client of the same pool."""
    idp = cloud.cognito()
    client = idp.create_user_pool_client(
        UserPoolId=cloud.ep["cognito"]["userPoolId"],
        ClientName=f"other-app-{uuid.uuid4().hex[:6]}",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    return idp.initiate_auth(
        ClientId=client["ClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": user.name, "PASSWORD": user.password},
    )["AuthenticationResult"]["IdToken"]


def _other_pool_token(cloud) -> str:
    """An ID token of a user of a second user pool."""
    idp = cloud.cognito()
    pool = idp.create_user_pool(PoolName=f"other-pool-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool,
        ClientName="other-pool-app",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    idp.admin_create_user(UserPoolId=pool, Username="outsider", MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=pool, Username="outsider", Password="Outsider-pass-1", Permanent=True
    )
    return idp.initiate_auth(
        ClientId=client,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "outsider", "PASSWORD": "Outsider-pass-1"},
    )["AuthenticationResult"]["IdToken"]


@pytest.fixture(scope="module")
def victim(users):
    return users.new("victim")


@pytest.fixture(scope="module")
def bad_tokens(cloud, users, victim) -> dict[str, str | None]:
    with urllib.request.urlopen(cloud.ep["cognito"]["jwksUrl"], timeout=10) as resp:
        (jwk,) = json.loads(resp.read())["keys"]
    kid = jwk["kid"]
    claims = unverified_claims(victim.id_token)
    now = int(time.time())
    stranger = SigningKey()
    tokens: dict[str, str | None] = {
        "none": None,
        "garbage": "garbage.garbage.garbage",
        "forged_signature": sign(claims, stranger, kid=kid),
        "alg_none": unsigned(claims, kid),
        "hs256_key_confusion": hs256_with_pem(claims, public_pem_of_jwk(jwk), kid),
        "expired": sign({**claims, "iat": now - 7200, "exp": now - 3600}, stranger, kid=kid),
        "not_yet_valid": sign(
            {**claims, "iat": now, "nbf": now + 3600, "exp": now + 7200}, stranger, kid=kid
        ),
        "wrong_issuer": _other_pool_token(cloud),
        "wrong_client": _second_client_token(cloud, victim),
        "access_token": victim.access_token,
    }
    # The real tokens are what they claim to be: validly signed, one claim off.
    public = jwt.PyJWK(jwk).key
    for kind in ("wrong_issuer", "wrong_client", "access_token"):
        real = jwt.decode(tokens[kind], public, algorithms=["RS256"], options={"verify_aud": False})
        assert (real["iss"] == claims["iss"]) == (kind != "wrong_issuer"), kind
    assert unverified_claims(tokens["wrong_client"])["aud"] != claims["aud"]
    users.remember(*(t for t in tokens.values() if t))
    return tokens


@pytest.fixture(scope="module")
def victim_streams(cloud, victim) -> dict[str, str]:
    """A finished stream of the victim's with a transcript, and one still running."""
    store = cloud.store()
    done_id, running_id = str(uuid.uuid4()), str(uuid.uuid4())
    store.create(done_id, victim.sub, "websocket")
    b = FrameBuilder(done_id)
    frames = [b.start("model"), b.delta(SECRET_TEXT), b.done("end_turn")]
    store.append_frames(done_id, frames)
    store.finish(done_id, victim.sub, "done", last_seq=2)
    store.create(running_id, victim.sub, "appsync")
    yield {"done": done_id, "running": running_id}
    store.finish(running_id, victim.sub, "cancelled", last_seq=-1)


def _assert_401_unauthorized(status: int, body: dict[str, Any]) -> None:
    assert status == 401, body
    # API Gateway's own answer for a failed Lambda authorizer.
    assert body == UNAUTHORIZED_BODY, body


@pytest.mark.parametrize("kind", KINDS)
def test_rest_read_refuses_a_bad_token(kind, bad_tokens, rest, victim_streams):
    status, body = rest.read(bad_tokens[kind], victim_streams["done"])
    _assert_401_unauthorized(status, body)
    assert SECRET_TEXT not in json.dumps(body)


@pytest.mark.parametrize("kind", KINDS)
def test_rest_cancel_refuses_a_bad_token_and_sets_no_flag(
    kind, bad_tokens, rest, store, victim_streams
):
    status, body = rest.cancel(bad_tokens[kind], victim_streams["running"])
    _assert_401_unauthorized(status, body)
    record = store.store.get(victim_streams["running"])
    assert record.cancel_requested is False and record.status == "running"


@pytest.mark.parametrize("kind", KINDS)
def test_function_url_start_refuses_a_bad_token_and_streams_nothing(
    kind, bad_tokens, function_url, store, model, victim
):
    stream_id, prompt = str(uuid.uuid4()), unique_prompt("never streamed")
    slots = store.running_ids(victim)
    with pytest.raises(Refused) as refused:
        function_url.open(bad_tokens[kind], {"prompt": prompt, "streamId": stream_id})
    assert refused.value.status == 401
    assert json.loads(refused.value.body) == UNAUTHORIZED_BODY
    assert store.nothing_for(stream_id)
    assert store.running_ids(victim) == slots
    assert model_streams(model, prompt) == []


@pytest.mark.parametrize("kind", KINDS)
def test_function_url_resume_refuses_a_bad_token_and_replays_nothing(
    kind, bad_tokens, function_url, victim_streams
):
    with pytest.raises(Refused) as refused:
        function_url.resume(bad_tokens[kind], victim_streams["done"], -1)
    assert refused.value.status == 401
    assert json.loads(refused.value.body) == UNAUTHORIZED_BODY


@pytest.mark.parametrize("kind", KINDS)
def test_websocket_handshake_refuses_a_bad_token(kind, bad_tokens, cloud, gateway):
    before = len(gateway.connections())
    token = bad_tokens[kind]
    protocols = ["llm-stream.v1"] + ([f"auth.{token}"] if token is not None else [])
    with pytest.raises(InvalidStatus) as refused:
        connect(cloud.ep["websocket"], subprotocols=protocols, open_timeout=10)
    assert refused.value.response.status_code == 401
    assert len(gateway.connections()) == before  # no connection was ever opened


def _appsync_refusal(kind: str, answer: dict[str, Any]) -> None:
    if kind in PASSES_APPSYNC_DOOR:
        assert answer["status"] == 200
        (error,) = answer["errors"]
        assert error["errorType"] == "UNAUTHORIZED" and "ID token" in error["message"]
    else:
        assert answer["status"] == 401, answer
        (error,) = answer["errors"]
        assert error["errorType"] == "UnauthorizedException"
    assert not any((answer.get("data") or {}).values())


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_start_refuses_a_bad_token_and_queues_nothing(
    kind, bad_tokens, appsync, store, model, victim
):
    stream_id, prompt = str(uuid.uuid4()), unique_prompt("never queued")
    slots = store.running_ids(victim)
    answer = appsync.start(bad_tokens[kind], {"streamId": stream_id, "prompt": prompt})
    _appsync_refusal(kind, answer)
    assert store.nothing_for(stream_id)
    assert store.running_ids(victim) == slots
    assert model_streams(model, prompt) == []


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_read_refuses_a_bad_token(kind, bad_tokens, appsync, victim_streams):
    answer = appsync.read(bad_tokens[kind], victim_streams["done"])
    _appsync_refusal(kind, answer)
    assert SECRET_TEXT not in json.dumps(answer)


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_cancel_refuses_a_bad_token_and_sets_no_flag(
    kind, bad_tokens, appsync, store, victim_streams
):
    answer = appsync.cancel(bad_tokens[kind], victim_streams["running"])
    _appsync_refusal(kind, answer)
    assert store.store.get(victim_streams["running"]).cancel_requested is False


@contextlib.contextmanager
def _connect_realtime(cloud, token: str | None) -> Iterator[ClientConnection]:
    protocols = ["graphql-ws"]
    if token is not None:
        protocols.append("header-" + realtime_header(cloud.ep["appsync"]["graphql"], token))
    with connect(cloud.ep["appsync"]["realtime"], subprotocols=protocols, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        yield ws


def _start_message(cloud, sub_id: str, stream_id: str, token: str | None) -> str:
    host = cloud.ep["appsync"]["graphql"].split("/")[2]
    data = json.dumps({"query": SUBSCRIBE, "variables": {"streamId": stream_id}})
    extensions = {} if token is None else {"authorization": {"Authorization": token, "host": host}}
    return json.dumps(
        {"id": sub_id, "type": "start", "payload": {"data": data, "extensions": extensions}}
    )


def _next(ws, timeout: float = 10) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message.get("type") != "ka":
            return message


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_realtime_connection_refuses_a_bad_token(
    kind, bad_tokens, cloud, appsync_control, victim_streams
):
    subscriptions = appsync_control.stats()["subscriptions"]
    with _connect_realtime(cloud, bad_tokens[kind]) as ws:
        answer = _next(ws)
        if kind in PASSES_APPSYNC_DOOR:
            # AppSync authorizes the connection, then the subscription refuses the token.
            assert answer["type"] == "connection_ack"
            ws.send(_start_message(cloud, "s1", victim_streams["running"], bad_tokens[kind]))
            refused = _next(ws)
            assert refused["type"] == "error" and refused["id"] == "s1", refused
            assert refused["payload"]["errors"][0]["errorType"] == "Unauthorized"
        else:
            assert answer["type"] == "connection_error", answer
            (error,) = answer["payload"]["errors"]
            assert error["errorType"] == "UnauthorizedException" and error["errorCode"] == 401
    assert appsync_control.stats()["subscriptions"] == subscriptions


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_subscription_refuses_a_bad_token_on_a_good_connection(
    kind, bad_tokens, cloud, victim, appsync_control, victim_streams
):
    """A start is authorized on its own token, not the connection's."""
    subscriptions = appsync_control.stats()["subscriptions"]
    rt = Realtime(cloud.ep["appsync"]["graphql"], cloud.ep["appsync"]["realtime"], victim.id_token)
    with rt:
        rt.ws.send(_start_message(cloud, "s1", victim_streams["running"], bad_tokens[kind]))
        refused = rt.next_message(10)
        assert refused["type"] == "error" and refused["id"] == "s1", refused
        expected = "Unauthorized" if kind in PASSES_APPSYNC_DOOR else "UnauthorizedException"
        assert refused["payload"]["errors"][0]["errorType"] == expected
        assert appsync_control.stats()["subscriptions"] == subscriptions
