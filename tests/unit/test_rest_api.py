import json
import time
import uuid

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import services
from chalicelib.frames import FrameBuilder
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from local.provision import create_tables
from local.rest import use_api_gateway_authorizer
from tests.support.tokens import CLIENT_ID, ISSUER, SigningKey, id_claims, sign

KEY = SigningKey()


@pytest.fixture
def store(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield StreamStore(settings, client_factory=lambda: ddb)


@pytest.fixture
def client(store, monkeypatch):
    verifier = JwtVerifier(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        jwks=JwksCache("http://jwks.invalid", fetch=lambda url, t: {"keys": [KEY.jwk()]}),
    )
    monkeypatch.setattr(services, "verifier", lambda: verifier)
    monkeypatch.setattr(services, "store", lambda: store)
    with Client(app_module.app) as c:
        use_api_gateway_authorizer(c.http._local_gateway, app_module.app)
        yield c


def auth(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(id_claims(sub), KEY)}"}


@pytest.fixture
def alice_stream(store) -> str:
    s = str(uuid.uuid4())
    store.create(s, "alice", "websocket")
    b = FrameBuilder(s)
    store.append_frames(s, [b.start("m"), b.delta("Hello"), b.delta(" world")])
    return s


def error_of(resp) -> dict:
    return json.loads(resp.body)["error"]


def test_health_answers_ok(client):
    resp = client.http.get("/health")
    assert resp.status_code == 200 and resp.json_body == {"status": "ok"}


def test_config_is_public_and_lists_every_endpoint_and_limit(client):
    body = client.http.get("/config").json_body
    assert set(body["endpoints"]) == {"rest", "functionUrl", "restStream", "websocket", "appsync"}
    assert body["cognito"]["userPoolClientId"] == Settings.from_env().client_id
    assert body["limits"]["maxStreamsPerUser"] == 3
    assert "password" not in json.dumps(body).lower()


def test_reading_a_stream_without_a_token_is_401(client, alice_stream):
    assert client.http.get(f"/streams/{alice_stream}").status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        sign(id_claims("alice", exp=int(time.time()) - 3600), KEY),
        sign(id_claims("alice"), SigningKey(kid=KEY.kid)),
        "garbage",
    ],
    ids=["expired", "forged", "garbage"],
)
def test_reading_a_stream_with_a_bad_token_is_401(client, alice_stream, token):
    resp = client.http.get(f"/streams/{alice_stream}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_owner_reads_status_and_frames_after_a_seq(client, alice_stream):
    resp = client.http.get(f"/streams/{alice_stream}?afterSeq=1", headers=auth("alice"))
    assert resp.status_code == 200
    body = resp.json_body
    assert body["status"] == "running" and body["streamId"] == alice_stream
    assert [f["seq"] for f in body["frames"]] == [2]
    assert body["frames"][0]["text"] == " world" and body["hasMore"] is False


def test_another_users_stream_is_404(client, alice_stream):
    resp = client.http.get(f"/streams/{alice_stream}", headers=auth("mallory"))
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "NOT_FOUND"


def test_a_malformed_stream_id_is_400_naming_it(client):
    resp = client.http.get("/streams/not-a-uuid", headers=auth("alice"))
    assert resp.status_code == 400
    assert error_of(resp) == {"code": "BAD_REQUEST", "message": "streamId must be a UUID"}


@pytest.mark.parametrize("after", ["abc", "-2", "1.5"])
def test_a_malformed_after_seq_is_400_naming_it(client, alice_stream, after):
    resp = client.http.get(f"/streams/{alice_stream}?afterSeq={after}", headers=auth("alice"))
    assert resp.status_code == 400
    assert "afterSeq" in error_of(resp)["message"]


def test_owner_cancels_and_a_second_cancel_is_harmless(client, alice_stream, store):
    for _ in range(2):
        resp = client.http.post(f"/streams/{alice_stream}/cancel", headers=auth("alice"))
        assert resp.status_code == 200 and resp.json_body["cancelRequested"] is True
    assert store.is_cancel_requested(alice_stream)


def test_another_user_cannot_cancel(client, alice_stream, store):
    resp = client.http.post(f"/streams/{alice_stream}/cancel", headers=auth("mallory"))
    assert resp.status_code == 404
    assert not store.is_cancel_requested(alice_stream)


def test_responses_carry_cors_headers(client, alice_stream):
    resp = client.http.get(f"/streams/{alice_stream}", headers=auth("alice"))
    assert resp.headers["Access-Control-Allow-Origin"] == Settings().cors_allow_origin


def test_unexpected_failures_are_500_without_details(client, alice_stream, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail arn:aws:dynamodb:...")

    monkeypatch.setattr(services.store(), "get_owned", broken)
    resp = client.http.get(f"/streams/{alice_stream}", headers=auth("alice"))
    assert resp.status_code == 500
    assert error_of(resp) == {"code": "INTERNAL", "message": "Internal error."}


def test_reading_an_abandoned_stream_ends_it_with_an_error_frame(client, store):
    from chalicelib.stream_store import STALE_AFTER_S

    s = str(uuid.uuid4())
    now = [1_800_000_000.0]
    store._clock = lambda: now[0]
    store.create(s, "alice", "websocket")
    now[0] += STALE_AFTER_S + 1
    resp = client.http.get(f"/streams/{s}", headers=auth("alice"))
    body = resp.json_body
    assert body["status"] == "error"
    assert [f["type"] for f in body["frames"]] == ["error"]


def test_config_names_the_rest_streaming_routes_on_the_rest_api_unless_configured():
    from dataclasses import replace

    from chalicelib.rest_api import public_config

    settings = Settings()
    on_aws = public_config(settings, "https://d111.cloudfront.net/")
    assert on_aws["endpoints"]["restStream"] == "https://d111.cloudfront.net/streams"
    local = replace(settings, public_rest_stream_url="http://127.0.0.1:9/streams")
    assert public_config(local, "http://127.0.0.1:8/")["endpoints"]["restStream"] == (
        "http://127.0.0.1:9/streams"
    )
