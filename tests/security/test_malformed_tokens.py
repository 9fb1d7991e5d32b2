"""Malformed and unusual tokens on every entry point (weaknesses 3 and 8 of the hardening
round): any failure while verifying is a refusal, answered the same way everywhere (REST
and the Function URL 401 with API Gateway's ``{"message": "Unauthorized"}``, the WebSocket
401 at the handshake, AppSync ``UnauthorizedException``), never a 500 or a dropped
connection; the reason goes to the log only.

The tokens carry the victim's real claims and name the pool's real ``kid`` where the case
needs one, so only the header or the size is wrong."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.security.checks import model_streams, unique_prompt
from tests.security.clients import Refused, http_call
from tests.support.tokens import SigningKey, sign, unverified_claims

pytestmark = pytest.mark.security("auth")

UNAUTHORIZED_BODY = {"message": "Unauthorized"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header_json: str, claims: dict, tail: str = "c2lnbmF0dXJl") -> str:
    return f"{_b64(header_json.encode())}.{_b64(json.dumps(claims).encode())}.{tail}"


@pytest.fixture(scope="module")
def victim(users):
    return users.new("malformed")


@pytest.fixture(scope="module")
def malformed(cloud, users, victim) -> dict[str, str]:
    with urllib.request.urlopen(cloud.ep["cognito"]["jwksUrl"], timeout=10) as resp:
        (jwk,) = json.loads(resp.read())["keys"]
    kid = jwk["kid"]
    claims = unverified_claims(victim.id_token)
    signed = victim.id_token.split(".")
    stranger = SigningKey()
    tokens = {
        "kid_null": _token('{"alg":"RS256","kid":null}', claims),
        "kid_number": _token('{"alg":"RS256","kid":12345}', claims),
        "kid_object": _token('{"alg":"RS256","kid":{"a":1}}', claims),
        "crit_unknown": _token(json.dumps({"alg": "RS256", "kid": kid, "crit": ["x-a"]}), claims),
        "header_array": _token('["RS256"]', claims),
        "header_string": _token('"RS256"', claims),
        "header_not_base64": f"%%%.{signed[1]}.{signed[2]}",
        "header_deeply_nested": _token("[" * 2000 + "]" * 2000, claims),
        "payload_not_base64": f"{signed[0]}.%%%.{signed[2]}",
        "stranger_key_with_crit": _token(
            json.dumps({"alg": "RS256", "kid": stranger.kid, "crit": ["exp"]}), claims
        ),
    }
    users.remember(*tokens.values())
    return tokens


KINDS = (
    "kid_null",
    "kid_number",
    "kid_object",
    "crit_unknown",
    "header_array",
    "header_string",
    "header_not_base64",
    "header_deeply_nested",
    "payload_not_base64",
    "stranger_key_with_crit",
)


@pytest.mark.parametrize("kind", KINDS)
def test_rest_refuses_a_malformed_token_with_a_401(kind, malformed, rest):
    status, body = rest.read(malformed[kind], str(uuid.uuid4()))
    assert status == 401, (status, body)
    assert body == UNAUTHORIZED_BODY


@pytest.mark.parametrize("kind", KINDS)
def test_function_url_refuses_a_malformed_token_with_the_same_401(
    kind, malformed, function_url, store, model
):
    stream_id, prompt = str(uuid.uuid4()), unique_prompt("malformed token")
    with pytest.raises(Refused) as refused:
        function_url.open(malformed[kind], {"prompt": prompt, "streamId": stream_id})
    assert refused.value.status == 401
    assert json.loads(refused.value.body) == UNAUTHORIZED_BODY
    assert store.nothing_for(stream_id) and model_streams(model, prompt) == []


@pytest.mark.parametrize("kind", KINDS)
def test_websocket_handshake_refuses_a_malformed_token_with_a_401(kind, malformed, cloud):
    protocols = ["llm-stream.v1", f"auth.{malformed[kind]}"]
    with pytest.raises(InvalidStatus) as refused:
        connect(cloud.ep["websocket"], subprotocols=protocols, open_timeout=10)
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("kind", KINDS)
def test_appsync_refuses_a_malformed_token_as_unauthorized(kind, malformed, appsync, store):
    stream_id = str(uuid.uuid4())
    answer = appsync.start(malformed[kind], {"streamId": stream_id, "prompt": "hi"})
    assert answer["status"] == 401, answer
    (error,) = answer["errors"]
    assert error["errorType"] == "UnauthorizedException"
    assert store.nothing_for(stream_id)


def test_an_oversized_token_is_refused_not_a_500_or_a_dropped_connection(
    cloud, victim, rest, function_url
):
    """Past the verifier's size limit (16 KB) but within what the local HTTP servers take;
    a token past the servers' own header limits is their 4xx, never a 500."""
    _, payload, sig = victim.id_token.split(".")
    claims = unverified_claims(victim.id_token)
    huge = _token(json.dumps({"alg": "RS256", "kid": "k"}), {**claims, "pad": "x" * 14_000}, sig)
    assert len(huge) > 16_384
    status, body = rest.read(huge, str(uuid.uuid4()))
    assert (status, body) == (401, UNAUTHORIZED_BODY)
    with pytest.raises(Refused) as refused:
        function_url.open(huge, {"prompt": "hi", "streamId": str(uuid.uuid4())})
    # Node's HTTP server (the local Function URL host) caps headers at 16 KB: 431.
    assert refused.value.status in (401, 431)
    for size in (100_000, 1_000_000):
        giant = "a" * size + "." + payload + "." + sig
        status, _, _ = http_call(
            f"{rest.url}streams/{uuid.uuid4()}", headers={"Authorization": f"Bearer {giant}"}
        )
        assert 400 <= status < 500, status


def test_every_http_entry_point_answers_a_bad_token_with_one_body(victim, rest, function_url):
    """The reason (here "unknown signing key") is never told to the caller."""
    forged = sign(unverified_claims(victim.id_token), SigningKey())
    answers = [rest.read(forged, str(uuid.uuid4())), rest.cancel(forged, str(uuid.uuid4()))]
    for call in (
        lambda: function_url.open(forged, {"prompt": "hi", "streamId": str(uuid.uuid4())}),
        lambda: function_url.resume(forged, str(uuid.uuid4()), -1),
    ):
        with pytest.raises(Refused) as refused:
            call()
        answers.append((refused.value.status, json.loads(refused.value.body)))
    assert answers == [(401, UNAUTHORIZED_BODY)] * 4
