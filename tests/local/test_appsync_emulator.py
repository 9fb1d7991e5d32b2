"""The local AppSync emulator on its own: the real schema, a toy ``appsync_resolver``, tokens
from the local Cognito emulator, and real clients (urllib with botocore's SigV4 signer over
HTTP; the ``websockets`` library and gql's AppSync transport on the real-time endpoint).

Servers run on one background event loop; every wait is bounded (``recv(timeout=...)``,
``asyncio.wait_for``, polling a condition with a deadline), never a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import queue
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from chalice import Chalice
from gql import Client, GraphQLRequest
from gql.transport.appsync_auth import AppSyncIAMAuthentication, AppSyncJWTAuthentication
from gql.transport.appsync_websockets import AppSyncWebsocketsTransport
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chalicelib.jwt_verify import JwksCache, JwtVerifier
from local.appsync import (
    MAX_SUBSCRIPTIONS,
    QUERY_DEPTH_LIMIT,
    RESOLVER_COUNT_LIMIT,
    AppSyncControl,
    AppSyncEmulator,
    AuthError,
    verify_sigv4,
)
from local.cognito import CognitoEmulator
from local.lambdas import LocalLambdas
from local.loop import LoopThread

REGION = "us-east-1"
CREDS = ("local", "local")
WAIT_S = 5.0
PASSWORD = "correct-horse-battery"
SIGNATURE_MISMATCH = "The request signature we calculated does not match"

SUBSCRIBE = (
    "subscription Frames($streamId: ID!) "
    "{ onStreamFrame(streamId: $streamId) { streamId owner frames } }"
)
PUBLISH = (
    "mutation Publish($streamId: ID!, $owner: ID!, $frames: [AWSJSON!]!) "
    "{ publishFrames(streamId: $streamId, owner: $owner, frames: $frames) "
    "{ streamId owner frames } }"
)
START = (
    "mutation Start($input: StartStreamInput!) "
    "{ startStream(input: $input) { streamId status created } }"
)
SNAPSHOT = (
    "query Snapshot($streamId: ID!) { streamFrames(streamId: $streamId) "
    "{ stream { streamId status } frames hasMore } }"
)

# -- the toy resolver function -------------------------------------------------------------

events: queue.Queue[dict[str, Any]] = queue.Queue()

app = Chalice(app_name="toyappsync")

BAD_REQUEST = {
    "code": "BAD_REQUEST",
    "message": "prompt is 40000 characters; the limit is 32000",
    "retryable": False,
}


@app.lambda_function(name="appsync_resolver")
def appsync_resolver(event: dict[str, Any], context: Any) -> dict[str, Any]:
    events.put(event)
    arguments = event["arguments"]
    if event["field"] == "startStream":
        prompt = arguments["input"].get("prompt")
        if prompt == "crash":
            raise RuntimeError("the resolver broke")
        if prompt == "too long":
            return {"error": BAD_REQUEST}
        stream_id = arguments["input"]["streamId"]
        return {"data": {"streamId": stream_id, "status": "running", "created": True}}
    if event["field"] == "streamFrames":
        frame = {"v": 1, "streamId": arguments["streamId"], "seq": 0, "type": "start"}
        return {
            "data": {
                "stream": {"streamId": arguments["streamId"], "status": "running"},
                "frames": [frame],
                "hasMore": False,
            }
        }
    return {"error": {"code": "NOT_FOUND", "message": "no such stream", "retryable": False}}


# -- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    sub: str
    id_token: str
    access_token: str


@dataclass(frozen=True)
class Pool:
    cognito: CognitoEmulator
    pool_id: str
    client_id: str
    alice: User
    bob: User

    def verifier(self) -> JwtVerifier:
        return JwtVerifier(
            issuer=self.cognito.issuer(self.pool_id),
            client_id=self.client_id,
            jwks=JwksCache(self.cognito.jwks_url(self.pool_id)),
        )


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("appsync-test-loop").start()
    yield thread
    thread.stop()


def _sign_in(cognito: CognitoEmulator, pool: dict[str, str], username: str) -> User:
    cognito.ensure_pool_with_user("appsync-tests", "web", username, PASSWORD)
    result = cognito.call(
        "InitiateAuth",
        {
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": pool["clientId"],
            "AuthParameters": {"USERNAME": username, "PASSWORD": PASSWORD},
        },
    )["AuthenticationResult"]
    sub = json.loads(base64.urlsafe_b64decode(result["IdToken"].split(".")[1] + "=="))["sub"]
    return User(sub, result["IdToken"], result["AccessToken"])


@pytest.fixture(scope="module")
def pool(loop: LoopThread) -> Iterator[Pool]:
    cognito = CognitoEmulator(REGION)
    loop.run(cognito.start("127.0.0.1", 0))
    created = cognito.ensure_pool_with_user("appsync-tests", "web", "alice", PASSWORD)
    yield Pool(
        cognito,
        created["userPoolId"],
        created["clientId"],
        _sign_in(cognito, created, "alice"),
        _sign_in(cognito, created, "bob"),
    )
    loop.run(cognito.stop())


@dataclass
class Running:
    emulator: AppSyncEmulator
    lambdas: LocalLambdas
    loop: LoopThread
    pool: Pool
    clients: list[Realtime] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.emulator.graphql_url

    @property
    def host(self) -> str:
        return self.url.split("/")[2]

    @property
    def control(self) -> AppSyncControl:
        return self.emulator.control

    def stats(self) -> dict[str, int]:
        return self.control.stats()


@pytest.fixture
def make_appsync(loop: LoopThread, pool: Pool) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def make(**options: Any) -> Running:
        while not events.empty():
            events.get_nowait()
        lambdas = LocalLambdas(app)
        emulator = AppSyncEmulator(lambdas, verifier=pool.verifier(), region=REGION, **options)
        loop.run(emulator.start("127.0.0.1", 0))
        running.append(Running(emulator, lambdas, loop, pool))
        return running[-1]

    yield make
    for r in running:
        for client in r.clients:
            client.close()
        loop.run(r.emulator.stop())
        r.lambdas.close()


@pytest.fixture
def appsync(make_appsync: Callable[..., Running]) -> Running:
    return make_appsync()


# -- HTTP helpers --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return Answer(response.status, dict(response.headers), json.loads(response.read()))
    except urllib.error.HTTPError as err:
        return Answer(err.code, dict(err.headers), json.loads(err.read()))


def graphql_body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"query": query, "variables": variables or {}}).encode()


def call(r: Running, query: str, variables: dict[str, Any] | None = None, *, token: str) -> Answer:
    """A GraphQL request with a user-pool token, as Amplify sends it (raw JWT)."""
    headers = {"Content-Type": "application/json", "Authorization": token}
    return post(r.url, graphql_body(query, variables), headers)


def sigv4_headers(
    url: str,
    body: bytes,
    *,
    creds: tuple[str, str] = CREDS,
    service: str = "appsync",
    region: str = REGION,
    session_token: str | None = None,
) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(creds[0], creds[1], session_token), service, region).add_auth(request)
    return dict(request.headers.items())


def iam_call(
    r: Running, query: str, variables: dict[str, Any] | None = None, **signing: Any
) -> Answer:
    """A GraphQL request signed with SigV4, as the worker sends it."""
    body = graphql_body(query, variables)
    return post(r.url, body, sigv4_headers(r.url, body, **signing))


def frame(stream_id: str, seq: int, text: str = "hi") -> str:
    return json.dumps({"v": 1, "streamId": stream_id, "seq": seq, "type": "delta", "text": text})


def publish(r: Running, stream_id: str, owner: str, *frames: str) -> Answer:
    answer = iam_call(r, PUBLISH, {"streamId": stream_id, "owner": owner, "frames": list(frames)})
    assert answer.status == 200 and "errors" not in answer.body, answer.body
    return answer


def next_event() -> dict[str, Any]:
    return events.get(timeout=WAIT_S)


def new_stream() -> str:
    return str(uuid.uuid4())


# -- real-time helpers -----------------------------------------------------------------------


def b64url(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class Realtime:
    """A raw real-time client speaking AppSync's protocol over a real socket.

    The test's fixture closes every client it did not close itself.
    """

    def __init__(self, r: Running, url: str, protocols: list[str]) -> None:
        self.ws: ClientConnection = connect(
            url,
            subprotocols=protocols,  # type: ignore[arg-type]
            open_timeout=WAIT_S,
            close_timeout=2,
        ).__enter__()
        self.r = r
        r.clients.append(self)

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float = WAIT_S) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def recv_non_ka(self) -> dict[str, Any]:
        while True:
            message = self.recv()
            if message["type"] != "ka":
                return message

    def init(self) -> dict[str, Any]:
        self.send({"type": "connection_init"})
        return self.recv_non_ka()

    def start(
        self,
        sub_id: str,
        stream_id: str,
        token: str,
        query: str = SUBSCRIBE,
        authorization: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = json.dumps({"query": query, "variables": {"streamId": stream_id}})
        auth = authorization or {"host": self.r.host, "Authorization": token}
        self.send(
            {
                "id": sub_id,
                "type": "start",
                "payload": {"data": data, "extensions": {"authorization": auth}},
            }
        )
        return self.recv_non_ka()

    def subscribe(self, sub_id: str, stream_id: str, token: str) -> None:
        assert self.start(sub_id, stream_id, token) == {"type": "start_ack", "id": sub_id}

    def close(self) -> None:
        self.ws.close()


def open_realtime(r: Running, token: str | None = None, *, via: str = "subprotocol") -> Realtime:
    """Connect with ``token`` in the ``header-`` subprotocol (Amplify) or the query (gql)."""
    header = {"host": r.host, "Authorization": token or r.pool.alice.id_token}
    url, protocols = r.emulator.realtime_url, ["graphql-ws"]
    if via == "subprotocol":
        protocols.append("header-" + b64url(header))
    else:
        encoded = base64.b64encode(json.dumps(header).encode()).decode()
        url = f"{url}?header={encoded}&payload=e30="
    return Realtime(r, url, protocols)


def connected(r: Running, token: str | None = None) -> Realtime:
    rt = open_realtime(r, token)
    assert rt.init()["type"] == "connection_ack"
    return rt


def onstream(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "data", message
    return message["payload"]["data"]["onStreamFrame"]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- HTTP: user-pool callers -------------------------------------------------------------------


def test_a_query_reaches_the_lambda_with_the_payload_stream_operation_js_builds(appsync):
    alice = appsync.pool.alice
    stream_id = new_stream()
    answer = call(appsync, SNAPSHOT, {"streamId": stream_id}, token=alice.id_token)
    assert next_event() == {
        "field": "streamFrames",
        "arguments": {"streamId": stream_id, "afterSeq": -1},
        "identity": {"sub": alice.sub, "tokenUse": "id"},
    }
    assert answer.status == 200
    snapshot = answer.body["data"]["streamFrames"]
    assert snapshot["stream"] == {"streamId": stream_id, "status": "running"}
    # AWSJSON output is a JSON string.
    assert [json.loads(f) for f in snapshot["frames"]] == [
        {"v": 1, "streamId": stream_id, "seq": 0, "type": "start"}
    ]
    assert "errors" not in answer.body


def test_a_mutation_passes_its_input_object_as_given(appsync):
    stream_id = new_stream()
    given = {"streamId": stream_id, "prompt": "hello", "maxTokens": 64, "temperature": 0.5}
    answer = call(appsync, START, {"input": given}, token=appsync.pool.alice.id_token)
    assert next_event()["arguments"] == {"input": given}
    assert answer.body == {
        "data": {"startStream": {"streamId": stream_id, "status": "running", "created": True}}
    }


def test_a_resolver_error_becomes_an_appsync_error_with_its_code(appsync):
    variables = {"input": {"streamId": new_stream(), "prompt": "too long"}}
    answer = call(appsync, START, variables, token=appsync.pool.alice.id_token)
    assert answer.status == 200
    # startStream is non-null (StartedStream!), so its null bubbles up to data, as GraphQL
    # (and AppSync) propagate nulls.
    assert answer.body == {
        "data": None,
        "errors": [
            {
                "path": ["startStream"],
                "data": None,
                "errorType": "BAD_REQUEST",
                "errorInfo": {"retryable": False},
                "locations": [{"line": 1, "column": 45, "sourceName": None}],
                "message": BAD_REQUEST["message"],
            }
        ],
    }


def test_a_lambda_exception_becomes_internal_error(appsync):
    variables = {"input": {"streamId": new_stream(), "prompt": "crash"}}
    answer = call(appsync, START, variables, token=appsync.pool.alice.id_token)
    [error] = answer.body["errors"]
    assert (error["errorType"], error["message"]) == ("INTERNAL", "Internal error.")
    assert error["errorInfo"] is None
    assert answer.body["data"] is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "Valid authorization header not provided."),
        ("garbage", "Unable to parse JWT token."),
        ("expired", "Token has expired."),
        ("bearer", "Unable to parse JWT token."),
    ],
)
def test_a_missing_garbage_or_expired_token_answers_401(appsync, token, message):
    pool = appsync.pool
    if token == "expired":
        token = pool.cognito.mint_id_token(
            pool.pool_id, pool.client_id, "alice", exp=int(time.time()) - 120
        )
    elif token == "bearer":
        token = "Bearer " + pool.alice.id_token
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    answer = post(appsync.url, graphql_body(SNAPSHOT, {"streamId": "s"}), headers)
    assert answer.status == 401
    assert answer.body == {"errors": [{"errorType": "UnauthorizedException", "message": message}]}
    assert answer.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    assert events.empty()


def test_a_token_of_another_app_client_answers_401(appsync):
    pool = appsync.pool
    token = pool.cognito.mint_id_token(pool.pool_id, "another-client", "alice")
    answer = call(appsync, SNAPSHOT, {"streamId": "s"}, token=token)
    assert answer.status == 401
    assert "wrong audience" in answer.body["errors"][0]["message"]


def test_an_access_token_is_accepted_over_http_and_reaches_the_lambda_as_such(appsync):
    alice = appsync.pool.alice
    answer = call(appsync, SNAPSHOT, {"streamId": "s"}, token=alice.access_token)
    assert answer.status == 200
    assert next_event()["identity"] == {"sub": alice.sub, "tokenUse": "access"}


def test_a_user_token_cannot_publish(appsync):
    variables = {"streamId": "s", "owner": appsync.pool.alice.sub, "frames": [frame("s", 0)]}
    answer = call(appsync, PUBLISH, variables, token=appsync.pool.alice.id_token)
    assert answer.status == 200
    assert answer.body["data"] == {"publishFrames": None}
    [error] = answer.body["errors"]
    assert error["errorType"] == "Unauthorized"
    assert error["message"] == "Not Authorized to access publishFrames on type Mutation"
    assert error["path"] == ["publishFrames"]
    assert appsync.stats()["publishes"] == 0


def test_a_subscription_over_http_is_an_error(appsync):
    answer = call(appsync, SUBSCRIBE, {"streamId": "s"}, token=appsync.pool.alice.id_token)
    assert answer.body["data"] is None
    assert answer.body["errors"][0]["errorType"] == "UnsupportedOperation"


def test_a_validation_error_has_appsyncs_shape(appsync):
    answer = call(appsync, "{ nope }", token=appsync.pool.alice.id_token)
    assert answer.status == 200
    [error] = answer.body["errors"]
    assert answer.body["data"] is None
    assert error["path"] is None
    assert error["locations"] == [{"line": 1, "column": 3, "sourceName": None}]
    assert "nope" in error["message"]


def test_a_body_that_is_not_a_graphql_request_answers_400(appsync):
    headers = {"Content-Type": "application/json", "Authorization": appsync.pool.alice.id_token}
    answer = post(appsync.url, b"not json", headers)
    assert answer.status == 400
    assert answer.body["errors"][0]["errorType"] == "MalformedHttpRequestException"


def test_a_body_over_1_mb_answers_413(appsync):
    headers = {"Content-Type": "application/json", "Authorization": appsync.pool.alice.id_token}
    body = json.dumps({"query": "{ __typename }", "pad": "x" * (1024 * 1024)}).encode()
    answer = post(appsync.url, body, headers)
    assert answer.status == 413
    assert answer.body["errors"][0]["errorType"] == "PayloadTooLargeException"
    assert "1 MB" in answer.body["errors"][0]["message"]


def test_a_cors_preflight_allows_the_headers_amplify_sends(appsync):
    wanted = "authorization,content-type,x-amz-user-agent,x-amz-date,x-amz-security-token"
    request = urllib.request.Request(
        appsync.url,
        method="OPTIONS",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": wanted,
        },
    )
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert set(wanted.split(",")) <= allowed
    assert "POST" in headers["Access-Control-Allow-Methods"]


def test_errors_carry_cors_headers_too(appsync):
    answer = post(appsync.url, graphql_body("{ __typename }"), {})
    assert answer.status == 401
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


# -- HTTP: IAM callers ---------------------------------------------------------------------------


def test_an_iam_signed_publish_answers_its_arguments(appsync):
    frames = [frame("s", 0), frame("s", 1, "there")]
    answer = iam_call(appsync, PUBLISH, {"streamId": "s", "owner": "o", "frames": frames})
    assert answer.status == 200
    result = answer.body["data"]["publishFrames"]
    assert (result["streamId"], result["owner"]) == ("s", "o")
    assert [json.loads(f) for f in result["frames"]] == [json.loads(f) for f in frames]
    assert events.empty()  # NONE data source: no Lambda


def test_an_iam_signed_publish_with_a_session_token_is_accepted(appsync):
    body = graphql_body(PUBLISH, {"streamId": "s", "owner": "o", "frames": [frame("s", 0)]})
    headers = sigv4_headers(appsync.url, body, session_token="session")
    assert "X-Amz-Security-Token" in headers
    assert post(appsync.url, body, headers).status == 200


def test_iam_cannot_start_a_stream(appsync):
    variables = {"input": {"streamId": new_stream(), "prompt": "hi"}}
    answer = iam_call(appsync, START, variables)
    assert answer.status == 200
    [error] = answer.body["errors"]
    assert error["errorType"] == "Unauthorized"
    assert error["message"] == "Not Authorized to access startStream on type Mutation"
    assert events.empty()


def test_awsjson_input_that_is_not_json_is_refused(appsync):
    answer = iam_call(appsync, PUBLISH, {"streamId": "s", "owner": "o", "frames": ["{not json"]})
    assert answer.body["data"] is None
    assert "JSON" in answer.body["errors"][0]["message"]


def test_a_tampered_body_fails_the_signature(appsync):
    body = graphql_body(PUBLISH, {"streamId": "s", "owner": "o", "frames": [frame("s", 0)]})
    headers = sigv4_headers(appsync.url, body)
    answer = post(appsync.url, body.replace(b'"o"', b'"x"'), headers)
    assert answer.status == 401
    assert answer.body["errors"][0]["errorType"] == "UnauthorizedException"
    assert answer.body["errors"][0]["message"].startswith(SIGNATURE_MISMATCH)


def test_a_wrong_secret_fails_the_signature(appsync):
    answer = iam_call(
        appsync,
        PUBLISH,
        {"streamId": "s", "owner": "o", "frames": []},
        creds=("local", "not-the-secret"),
    )
    assert answer.status == 401
    assert answer.body["errors"][0]["message"].startswith(SIGNATURE_MISMATCH)


@pytest.mark.parametrize(
    ("signing", "message"),
    [
        (
            {"creds": ("AKIDOTHER", "local")},
            "The security token included in the request is invalid.",
        ),
        (
            {"region": "eu-west-1"},
            "Credential should be scoped to a valid region, not 'eu-west-1'.",
        ),
        ({"service": "lambda"}, "Credential should be scoped to correct service: 'appsync'."),
    ],
)
def test_a_wrong_key_id_or_scope_is_refused(appsync, signing, message):
    answer = iam_call(appsync, PUBLISH, {"streamId": "s", "owner": "o", "frames": []}, **signing)
    assert answer.status == 401
    assert answer.body == {"errors": [{"errorType": "UnauthorizedException", "message": message}]}


@pytest.mark.parametrize(
    ("offset_s", "words"), [(-301, "Signature expired"), (301, "not yet current")]
)
def test_a_signature_more_than_five_minutes_off_is_refused(offset_s, words):
    url, body = "http://127.0.0.1:1/graphql", b"{}"
    headers = sigv4_headers(url, body)
    assert (
        verify_sigv4(
            method="POST",
            url=url,
            headers={**headers, "Host": "127.0.0.1:1"},
            body=body,
            credentials=CREDS,
            region=REGION,
        )
        == "local"
    )
    with pytest.raises(AuthError) as refused:
        verify_sigv4(
            method="POST",
            url=url,
            headers={**headers, "Host": "127.0.0.1:1"},
            body=body,
            credentials=CREDS,
            region=REGION,
            now=time.time() - offset_s,
        )
    assert words in refused.value.message


# -- real-time: connecting -----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["subprotocol", "query"])
def test_a_connection_is_acknowledged_with_the_connection_timeout(appsync, via):
    rt = open_realtime(appsync, via=via)
    assert rt.ws.subprotocol == "graphql-ws"
    assert rt.init() == {"type": "connection_ack", "payload": {"connectionTimeoutMs": 300_000}}
    rt.close()


def test_query_auth_survives_the_plus_and_slash_of_standard_base64(appsync):
    # gql puts standard base64 in the URL unescaped; '+' must not become a space.
    header: dict[str, Any] = {"host": appsync.host, "Authorization": appsync.pool.alice.id_token}
    encoded = base64.b64encode(json.dumps(header).encode()).decode()
    while not ("+" in encoded and "/" in encoded):
        header["pad"] = header.get("pad", "") + "?~"
        encoded = base64.b64encode(json.dumps(header).encode()).decode()
    url = f"{appsync.emulator.realtime_url}?header={encoded}&payload=e30="
    rt = Realtime(appsync, url, ["graphql-ws"])
    assert rt.init()["type"] == "connection_ack"


def test_a_body_of_exactly_1_mb_is_read(appsync):
    headers = {"Content-Type": "application/json", "Authorization": appsync.pool.alice.id_token}
    body = json.dumps({"query": "{ __typename }", "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (1024 * 1024 - len(body)) + b'"')
    assert len(body) == 1024 * 1024
    assert post(appsync.url, body, headers).body == {"data": {"__typename": "Query"}}


def test_keepalives_arrive_every_interval(make_appsync):
    r = make_appsync(ka_interval_s=0.05, connection_timeout_ms=1000)
    rt = open_realtime(r)
    rt.send({"type": "connection_init"})
    assert rt.recv() == {"type": "connection_ack", "payload": {"connectionTimeoutMs": 1000}}
    assert [rt.recv()["type"] for _ in range(3)] == ["ka", "ka", "ka"]
    rt.close()


def test_a_handshake_without_the_graphql_ws_subprotocol_is_refused(appsync):
    with pytest.raises(InvalidStatus) as refused:
        Realtime(appsync, appsync.emulator.realtime_url, ["graphql-transport-ws"])
    assert refused.value.response.status_code == 400


@pytest.mark.parametrize("token", ["garbage", "missing"])
def test_bad_connection_auth_gets_connection_error_then_close(appsync, token):
    if token == "missing":
        rt = Realtime(appsync, appsync.emulator.realtime_url, ["graphql-ws"])
    else:
        rt = open_realtime(appsync, token)
    rt.send({"type": "connection_init"})
    message = rt.recv()
    assert message["type"] == "connection_error"
    [error] = message["payload"]["errors"]
    assert error["errorType"] == "UnauthorizedException"
    assert error["errorCode"] == 401
    with pytest.raises(ConnectionClosed):
        rt.recv()


def test_an_iam_signed_connection_as_gql_signs_it_is_acknowledged(appsync):
    auth = AppSyncIAMAuthentication(
        host=appsync.host, region_name=REGION, credentials=Credentials(*CREDS)
    )
    headers = auth.get_headers()  # signed over POST https://<host>/graphql/connect, body {}
    rt = Realtime(
        appsync, appsync.emulator.realtime_url, ["graphql-ws", "header-" + b64url(headers)]
    )
    assert rt.init()["type"] == "connection_ack"
    # IAM may connect, but onStreamFrame is for user pools only.
    data = json.dumps({"query": SUBSCRIBE, "variables": {"streamId": "s"}})
    start = rt.start("1", "s", "", authorization=auth.get_headers(data))
    assert start["payload"]["errors"] == [
        {
            "errorType": "Unauthorized",
            "message": "Not Authorized to access onStreamFrame on type Subscription",
        }
    ]
    rt.close()


def test_an_iam_connection_with_a_wrong_secret_gets_connection_error(appsync):
    auth = AppSyncIAMAuthentication(
        host=appsync.host, region_name=REGION, credentials=Credentials("local", "wrong")
    )
    protocols = ["graphql-ws", "header-" + b64url(auth.get_headers())]
    rt = Realtime(appsync, appsync.emulator.realtime_url, protocols)
    message = rt.init()
    assert message["type"] == "connection_error"
    assert message["payload"]["errors"][0]["message"].startswith(SIGNATURE_MISMATCH)


# -- real-time: subscriptions --------------------------------------------------------------------


def test_frames_arrive_in_publish_order_for_the_owner(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("sub-1", stream_id, alice.id_token)
    for seq in range(3):
        publish(appsync, stream_id, alice.sub, frame(stream_id, seq, f"t{seq}"))
    got = [onstream(rt.recv_non_ka()) for _ in range(3)]
    assert [g["streamId"] for g in got] == [stream_id] * 3
    assert [g["owner"] for g in got] == [alice.sub] * 3
    assert [json.loads(g["frames"][0])["seq"] for g in got] == [0, 1, 2]
    rt.close()


def test_another_user_subscribed_to_the_same_stream_receives_nothing(appsync):
    alice, bob = appsync.pool.alice, appsync.pool.bob
    alices, bobs = new_stream(), new_stream()
    owner_rt, other_rt = connected(appsync), connected(appsync, bob.id_token)
    owner_rt.subscribe("a", alices, alice.id_token)
    other_rt.subscribe("spy", alices, bob.id_token)  # accepted: the filter is on the owner
    other_rt.subscribe("own", bobs, bob.id_token)
    publish(appsync, alices, alice.sub, frame(alices, 0))
    publish(appsync, alices, alice.sub, frame(alices, 1))
    publish(appsync, bobs, bob.sub, frame(bobs, 0))
    assert [json.loads(onstream(owner_rt.recv_non_ka())["frames"][0])["seq"] for _ in range(2)] == [
        0,
        1,
    ]
    # Bob's connection is served in publish order: had Alice's frames matched "spy", they
    # would arrive before his own frame.
    first = other_rt.recv_non_ka()
    assert first["id"] == "own" and onstream(first)["streamId"] == bobs
    owner_rt.close()
    other_rt.close()


def test_a_publish_for_another_owner_of_the_same_stream_id_is_not_delivered(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("a", stream_id, alice.id_token)
    publish(appsync, stream_id, "someone-else", frame(stream_id, 0, "not yours"))
    publish(appsync, stream_id, alice.sub, frame(stream_id, 1, "yours"))
    assert json.loads(onstream(rt.recv_non_ka())["frames"][0])["text"] == "yours"
    rt.close()


def test_stop_answers_complete_and_ends_delivery(appsync):
    alice, first, second = appsync.pool.alice, new_stream(), new_stream()
    rt = connected(appsync)
    rt.subscribe("one", first, alice.id_token)
    rt.subscribe("two", second, alice.id_token)
    rt.send({"type": "stop", "id": "one"})
    assert rt.recv_non_ka() == {"type": "complete", "id": "one"}
    publish(appsync, first, alice.sub, frame(first, 0))
    publish(appsync, second, alice.sub, frame(second, 0))
    assert rt.recv_non_ka()["id"] == "two"
    rt.close()


def test_the_subscriber_gets_the_publishers_selection_under_its_own_aliases(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    query = (
        "subscription S($streamId: ID!) { batch: onStreamFrame(streamId: $streamId) "
        "{ id: streamId frames } }"
    )
    assert rt.start("s", stream_id, alice.id_token, query=query)["type"] == "start_ack"
    aliased = (
        "mutation P($streamId: ID!, $owner: ID!, $frames: [AWSJSON!]!) { p: publishFrames("
        "streamId: $streamId, owner: $owner, frames: $frames) { sid: streamId owner fs: frames } }"
    )
    iam_call(
        appsync,
        aliased,
        {"streamId": stream_id, "owner": alice.sub, "frames": [frame(stream_id, 0)]},
    )
    message = rt.recv_non_ka()
    batch = message["payload"]["data"]["batch"]
    assert batch["id"] == stream_id and json.loads(batch["frames"][0])["seq"] == 0
    rt.close()


def test_a_field_the_publisher_did_not_select_is_null(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("s", stream_id, alice.id_token)
    partial = (
        "mutation P($streamId: ID!, $owner: ID!, $frames: [AWSJSON!]!) { publishFrames("
        "streamId: $streamId, owner: $owner, frames: $frames) { streamId owner } }"
    )
    iam_call(
        appsync,
        partial,
        {"streamId": stream_id, "owner": alice.sub, "frames": [frame(stream_id, 0)]},
    )
    message = rt.recv_non_ka()
    # frames is non-null, so the null bubbles up to the nullable batch, with GraphQL's error.
    assert message["payload"]["data"] == {"onStreamFrame": None}
    assert message["payload"]["errors"][0]["path"] == ["onStreamFrame", "frames"]
    rt.close()


def test_a_payload_over_240_kb_is_dropped_and_counted(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("s", stream_id, alice.id_token)
    publish(appsync, stream_id, alice.sub, frame(stream_id, 0, "x" * (241 * 1024)))
    publish(appsync, stream_id, alice.sub, frame(stream_id, 1, "small"))
    assert json.loads(onstream(rt.recv_non_ka())["frames"][0])["seq"] == 1
    assert appsync.stats()["dropped"] == 1
    rt.close()


def test_an_access_token_connects_but_cannot_subscribe(appsync):
    alice = appsync.pool.alice
    rt = connected(appsync, alice.access_token)
    answer = rt.start("s", new_stream(), alice.access_token)
    assert answer == {
        "type": "error",
        "id": "s",
        "payload": {
            "errors": [
                {
                    "errorType": "Unauthorized",
                    "message": "Not Authorized to access onStreamFrame on type Subscription",
                }
            ]
        },
    }
    rt.close()


def test_each_start_is_authorized_on_its_own_token(appsync):
    rt = connected(appsync)
    answer = rt.start("s", new_stream(), "garbage")
    assert answer["type"] == "error" and answer["id"] == "s"
    assert answer["payload"]["errors"][0]["errorType"] == "UnauthorizedException"
    assert appsync.stats()["subscriptions"] == 0
    rt.close()


def test_a_duplicate_start_id_is_refused(appsync):
    alice = appsync.pool.alice
    rt = connected(appsync)
    rt.subscribe("same", new_stream(), alice.id_token)
    answer = rt.start("same", new_stream(), alice.id_token)
    assert answer["type"] == "error" and answer["id"] == "same"
    assert answer["payload"]["errors"][0]["errorType"] == "DuplicatedOperationError"
    rt.close()


def test_the_101st_subscription_on_a_connection_is_refused(appsync):
    alice = appsync.pool.alice
    rt = connected(appsync)
    for n in range(MAX_SUBSCRIPTIONS):
        rt.subscribe(f"s{n}", new_stream(), alice.id_token)
    answer = rt.start("one-too-many", new_stream(), alice.id_token)
    assert answer["payload"]["errors"] == [
        {
            "errorType": "MaxSubscriptionsReachedError",
            "message": "Max number of 100 subscriptions reached",
        }
    ]
    rt.close()


def test_queries_are_not_supported_on_the_realtime_channel(appsync):
    rt = connected(appsync)
    answer = rt.start("q", "s", appsync.pool.alice.id_token, query=SNAPSHOT)
    assert answer["payload"]["errors"] == [
        {
            "errorType": "UnsupportedOperation",
            "message": "query not supported through the realtime channel",
        }
    ]
    assert events.empty()
    rt.close()


def test_a_start_with_invalid_data_is_an_error(appsync):
    rt = connected(appsync)
    rt.send({"id": "x", "type": "start", "payload": {"data": "{not json", "extensions": {}}})
    answer = rt.recv_non_ka()
    assert answer["type"] == "error" and answer["id"] == "x"
    assert answer["payload"]["errors"][0]["errorType"] == "BadRequestException"
    rt.close()


def test_an_unknown_message_type_is_an_error_and_the_connection_stays(appsync):
    alice = appsync.pool.alice
    rt = connected(appsync)
    rt.send({"id": "1", "type": "subscribe", "payload": {}})
    assert rt.recv_non_ka() == {
        "type": "error",
        "payload": {
            "errors": [
                {
                    "errorType": "UnsupportedOperation",
                    "message": "unknown not supported through the realtime channel",
                }
            ]
        },
    }
    rt.subscribe("still-works", new_stream(), alice.id_token)
    rt.close()


def test_stopping_the_emulator_closes_connections_with_1001(make_appsync, loop):
    r = make_appsync()
    rt = connected(r)
    loop.run(r.emulator.stop())
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            rt.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


# -- a third-party client --------------------------------------------------------------------------


def test_gqls_appsync_transport_subscribes_and_receives_a_published_batch(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    frames = [frame(stream_id, 0), frame(stream_id, 1, " there")]

    async def scenario() -> dict[str, Any]:
        transport = AppSyncWebsocketsTransport(
            url=appsync.emulator.realtime_url,
            auth=AppSyncJWTAuthentication(host=appsync.host, jwt=alice.id_token),
        )
        async with Client(transport=transport) as session:
            request = GraphQLRequest(SUBSCRIBE, variable_values={"streamId": stream_id})
            results = session.subscribe(request)
            first = asyncio.ensure_future(results.__anext__())
            deadline = time.monotonic() + WAIT_S
            while (await asyncio.to_thread(appsync.stats))["subscriptions"] < 1:
                assert time.monotonic() < deadline, "gql never subscribed"
                await asyncio.sleep(0.01)
            await asyncio.to_thread(publish, appsync, stream_id, alice.sub, *frames)
            result = await asyncio.wait_for(first, WAIT_S)
            await results.aclose()
            return result

    result = asyncio.run(scenario())
    batch = result["onStreamFrame"]
    assert batch["streamId"] == stream_id and batch["owner"] == alice.sub
    assert [json.loads(f) for f in batch["frames"]] == [json.loads(f) for f in frames]


# -- faults and stats ------------------------------------------------------------------------------


def test_publish_latency_delays_the_publish_answer(appsync):
    assert appsync.control.faults(publishLatencyMs=400)["publishLatencyMs"] == 400
    started = time.monotonic()
    publish(appsync, "s", "o", frame("s", 0))
    assert time.monotonic() - started >= 0.4
    # Other requests are not delayed by it.
    started = time.monotonic()
    call(appsync, SNAPSHOT, {"streamId": "s"}, token=appsync.pool.alice.id_token)
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize(
    ("status", "error_type"), [(500, "InternalFailure"), (429, "TooManyRequestsException")]
)
def test_injected_failures_fail_the_next_publishes_only(appsync, status, error_type):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("s", stream_id, alice.id_token)
    appsync.control.faults(publishFailures=2, publishFailureStatus=status)
    variables = {"streamId": stream_id, "owner": alice.sub, "frames": [frame(stream_id, 0)]}
    for _ in range(2):
        failed = iam_call(appsync, PUBLISH, variables)
        assert failed.status == status
        assert failed.body["errors"][0]["errorType"] == error_type
    publish(appsync, stream_id, alice.sub, frame(stream_id, 1))
    assert json.loads(onstream(rt.recv_non_ka())["frames"][0])["seq"] == 1
    stats = appsync.stats()
    assert (stats["publishFailuresInjected"], stats["publishes"]) == (2, 1)
    rt.close()


def test_reset_clears_the_faults(appsync):
    appsync.control.faults(publishLatencyMs=50, publishFailures=3, publishFailureStatus=503)
    assert appsync.control.reset() == {
        "publishLatencyMs": 0.0,
        "publishFailures": 0,
        "publishFailureStatus": 500,
    }
    publish(appsync, "s", "o", frame("s", 0))


def test_a_bad_fault_body_is_refused_with_400(appsync):
    with pytest.raises(urllib.error.HTTPError) as refused:
        appsync.control.faults(publishFailureStatus=200)
    assert refused.value.code == 400


def test_stats_count_publishes_deliveries_connections_and_subscriptions(appsync):
    alice, stream_id = appsync.pool.alice, new_stream()
    rt = connected(appsync)
    rt.subscribe("a", stream_id, alice.id_token)
    rt.subscribe("b", stream_id, alice.id_token)
    publish(appsync, stream_id, alice.sub, frame(stream_id, 0))
    publish(appsync, new_stream(), alice.sub, frame(stream_id, 0))  # nobody listens
    received = [rt.recv_non_ka()["id"] for _ in range(2)]
    assert sorted(received) == ["a", "b"]
    wait_for(lambda: appsync.stats()["deliveries"] == 2, "deliveries to be counted")
    assert appsync.stats() == {
        "publishes": 2,
        "publishFailuresInjected": 0,
        "deliveries": 2,
        "dropped": 0,
        "resolverInvocations": 0,  # publishFrames and the subscription run no Lambda
        "connections": 1,
        "subscriptions": 2,
    }
    rt.close()
    wait_for(lambda: appsync.stats()["connections"] == 0, "the connection to be gone")
    assert appsync.stats()["subscriptions"] == 0


def test_tokens_and_signatures_never_reach_the_logs(appsync, caplog):
    for name in ("local", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    alice = appsync.pool.alice
    call(appsync, SNAPSHOT, {"streamId": "s"}, token=alice.id_token)
    call(appsync, SNAPSHOT, {"streamId": "s"}, token=alice.id_token + "x")
    answer = publish(appsync, "s", "o", frame("s", 0, "secret prompt text"))
    assert answer.status == 200
    rt = connected(appsync)
    rt.subscribe("s", new_stream(), alice.id_token)
    rt.close()
    header = "header-" + b64url({"host": appsync.host, "Authorization": alice.id_token})
    with pytest.raises(InvalidStatus):
        Realtime(appsync, appsync.emulator.realtime_url, ["graphql-transport-ws", header])
    ours = [r for r in caplog.records if r.name.startswith(("local", "aiohttp"))]
    assert ours
    # The token in clear, and base64url-encoded inside the header- subprotocol.
    secrets = [alice.id_token.split(".")[2], header[-60:], "Signature=", "secret prompt text"]
    for record in ours:
        text = record.getMessage() + str(record.__dict__)
        assert not any(s in text for s in secrets), record.getMessage()


# -- execution limits ------------------------------------------------------------------------


def _aliases(n: int) -> str:
    fields = " ".join(
        f'a{i}: streamFrames(streamId: "{uuid.uuid4()}") {{ hasMore }}' for i in range(n)
    )
    return "query Many { " + fields + " }"


def test_more_resolvers_than_the_limit_are_refused_before_any_runs(appsync):
    token = appsync.pool.alice.id_token
    answer = call(appsync, _aliases(RESOLVER_COUNT_LIMIT + 1), token=token)
    assert answer.status == 200 and answer.body["data"] is None
    (error,) = answer.body["errors"]
    assert error["errorType"] == "ResolverCountLimitExceeded"
    assert f"limit is {RESOLVER_COUNT_LIMIT}" in error["message"]
    assert appsync.stats()["resolverInvocations"] == 0
    call(appsync, _aliases(RESOLVER_COUNT_LIMIT), token=token)
    assert appsync.stats()["resolverInvocations"] == RESOLVER_COUNT_LIMIT


def test_an_operation_deeper_than_the_limit_is_refused(appsync):
    query = "{ __schema { types { fields { type { ofType { name } } } } } }"
    answer = call(appsync, query, token=appsync.pool.alice.id_token)
    (error,) = answer.body["errors"]
    assert error["errorType"] == "QueryDepthLimitExceeded"
    assert f"limit is {QUERY_DEPTH_LIMIT}" in error["message"]
    ok = call(
        appsync, "{ __schema { types { fields { name } } } }", token=appsync.pool.alice.id_token
    )
    assert "errors" not in ok.body


def test_a_body_nested_past_the_json_limit_is_a_bad_request_not_a_500(appsync):
    body = b'{"query":"{ __typename }","variables":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    headers = {"Content-Type": "application/json", "Authorization": appsync.pool.alice.id_token}
    answer = post(appsync.url, body, headers)
    assert answer.status == 400
    (error,) = answer.body["errors"]
    assert error["errorType"] == "BadRequestException" and "32 levels" in error["message"]
