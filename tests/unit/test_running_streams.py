"""GET /streams?status=running: the caller's running streams, for the client's cancel list."""

import json
import uuid

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import running_streams, services
from chalicelib.errors import StreamError
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from chalicelib.settings import Settings
from chalicelib.stream_store import STALE_AFTER_S, StreamStore
from local.provision import create_tables
from local.rest import use_api_gateway_authorizer
from tests.support.tokens import CLIENT_ID, ISSUER, SigningKey, id_claims, sign

KEY = SigningKey()
OTHER_KEY = SigningKey()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(monkeypatch, clock):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        yield StreamStore(settings, client_factory=lambda: ddb, clock=clock)


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


def auth(sub: str, key: SigningKey = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(id_claims(sub), key)}"}


def new_stream(store: StreamStore, owner: str, transport: str = "websocket") -> str:
    stream_id = str(uuid.uuid4())
    store.create(stream_id, owner, transport)
    return stream_id


def test_lists_only_the_callers_running_streams_oldest_first(client, store, clock):
    first = new_stream(store, "alice", "functionUrl")
    clock.now += 1
    second = new_stream(store, "alice", "appsync")
    new_stream(store, "bob")
    resp = client.http.get("/streams?status=running", headers=auth("alice"))
    assert resp.status_code == 200
    assert resp.json_body == {
        "streams": [
            {
                "streamId": first,
                "status": "running",
                "transport": "functionUrl",
                "createdAt": clock.now - 1,
            },
            {
                "streamId": second,
                "status": "running",
                "transport": "appsync",
                "createdAt": clock.now,
            },
        ]
    }


def test_status_defaults_to_running_and_the_list_can_be_empty(client, store):
    assert client.http.get("/streams", headers=auth("carol")).json_body == {"streams": []}
    sid = new_stream(store, "carol")
    listed = client.http.get("/streams", headers=auth("carol")).json_body["streams"]
    assert [s["streamId"] for s in listed] == [sid]


def test_finished_streams_leave_the_list(client, store):
    done = new_stream(store, "alice")
    running = new_stream(store, "alice")
    assert store.finish(done, "alice", "done", last_seq=3)
    listed = client.http.get("/streams?status=running", headers=auth("alice")).json_body
    assert [s["streamId"] for s in listed["streams"]] == [running]


def test_a_stream_whose_producer_is_gone_is_ended_not_listed(client, store, clock):
    stale = new_stream(store, "alice")
    clock.now += STALE_AFTER_S + 1
    assert client.http.get("/streams", headers=auth("alice")).json_body == {"streams": []}
    record = store.get(stale)
    assert record is not None and record.terminal


def test_another_status_is_a_clear_400(client):
    resp = client.http.get("/streams?status=done", headers=auth("alice"))
    assert resp.status_code == 400
    error = json.loads(resp.body)["error"]
    assert error["code"] == "BAD_REQUEST" and "status must be 'running'" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, auth("alice", OTHER_KEY)],
    ids=["no token", "garbage", "unknown signing key"],
)
def test_without_a_valid_token_it_is_401(client, store, headers):
    new_stream(store, "alice")
    resp = client.http.get("/streams?status=running", headers=headers)
    assert resp.status_code == 401
    assert "streams" not in resp.body.decode()


def test_ids_in_the_set_that_no_longer_exist_are_skipped(store):
    kept = new_stream(store, "alice")
    # A slot whose record expired or was never written (a crash between the two writes).
    store.client.update_item(
        TableName=Settings().streams_table,
        Key={"pk": {"S": "user#alice"}},
        UpdateExpression="ADD #r :s",
        ExpressionAttributeNames={"#r": "running"},
        ExpressionAttributeValues={":s": {"SS": [str(uuid.uuid4())]}},
    )
    body = running_streams.list_running(store, Settings().streams_table, "alice", None)
    assert [s["streamId"] for s in body["streams"]] == [kept]


def test_status_query_names_the_bad_value():
    assert running_streams.status_query({"status": "running"}) == "running"
    assert running_streams.status_query(None) == "running"
    with pytest.raises(StreamError, match="got 'cancelled'"):
        running_streams.status_query({"status": "cancelled"})
