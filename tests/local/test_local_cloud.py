"""The local cloud as `make run` starts it (``python -m local``), used by real clients."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.frames import FrameBuilder
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from local.simulated_model import answer_text, request_for_prompt
from tests.support.cloud import CREDS, Cloud


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def user_token(cloud) -> str:
    return cloud.user_token()


@pytest.fixture(scope="module")
def other_token(cloud) -> str:
    return cloud.add_user("mallory", "Mallory-pass-1")


def get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def sub_of(cloud: Cloud, token: str) -> str:
    c = cloud.ep["cognito"]
    verifier = JwtVerifier(
        issuer=c["issuer"], client_id=c["clientId"], jwks=JwksCache(c["jwksUrl"])
    )
    return verifier.verify(token)["sub"]


def test_endpoints_file_lists_every_service_and_the_local_user(cloud):
    ep = cloud.ep
    for key in ("rest", "bedrock", "aws"):
        assert ep[key].startswith("http://127.0.0.1:")
    assert set(ep["cognito"]) >= {"endpoint", "userPoolId", "clientId", "region"}
    assert ep["user"]["username"] and ep["user"]["password"]
    assert oct(cloud.endpoints_file.stat().st_mode & 0o777) == "0o600"


def test_config_route_publishes_the_local_endpoints(cloud):
    status, body = get(cloud.ep["rest"] + "config")
    assert status == 200
    assert body["endpoints"]["rest"] == cloud.ep["rest"]
    assert body["cognito"]["userPoolId"] == cloud.ep["cognito"]["userPoolId"]
    assert body["cognito"]["endpoint"] == cloud.ep["cognito"]["endpoint"]
    assert body["model"]["label"] == "local simulated model"
    assert body["endpoints"]["appsync"] == cloud.ep["appsync"]
    assert body["endpoints"]["appsync"]["realtime"].startswith("ws://127.0.0.1:")
    assert body["endpoints"]["websocket"] == cloud.ep["websocket"]


def test_boto3_sign_in_gives_an_id_token_the_app_accepts(cloud, user_token):
    assert sub_of(cloud, user_token)


def test_a_wrong_password_is_refused(cloud):
    with pytest.raises(ClientError) as exc:
        cloud.sign_in(cloud.ep["user"]["username"], "not-the-password")
    assert exc.value.response["Error"]["Code"] == "NotAuthorizedException"


def test_protected_route_without_a_token_is_401(cloud):
    status, _ = get(cloud.ep["rest"] + f"streams/{uuid.uuid4()}")
    assert status == 401


def test_protected_route_with_a_token_of_another_issuer_is_401(cloud):
    from tests.support.tokens import SigningKey, id_claims, sign

    forged = sign(id_claims(aud=cloud.ep["cognito"]["clientId"]), SigningKey())
    status, _ = get(cloud.ep["rest"] + f"streams/{uuid.uuid4()}", forged)
    assert status == 401


def test_malformed_stream_id_is_400(cloud, user_token):
    status, body = get(cloud.ep["rest"] + "streams/123", user_token)
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST"


def test_owner_reads_a_stored_stream_and_another_user_gets_404(cloud, user_token, other_token):
    store = cloud.store()
    sid = str(uuid.uuid4())
    store.create(sid, sub_of(cloud, user_token), "websocket")
    b = FrameBuilder(sid)
    store.append_frames(sid, [b.start("m"), b.delta("hello")])

    status, body = get(cloud.ep["rest"] + f"streams/{sid}?afterSeq=0", user_token)
    assert status == 200 and [f["text"] for f in body["frames"]] == ["hello"]

    status, body = get(cloud.ep["rest"] + f"streams/{sid}", other_token)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


def test_boto3_converse_stream_parses_the_simulated_model(cloud):
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=cloud.ep["bedrock"], **CREDS
    )
    prompt = "What is serverless streaming? [tokens=40]"
    resp = client.converse_stream(
        modelId="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        messages=[{"role": "user", "content": [{"text": prompt}]}],
    )
    text, stop = "", None
    stream = resp["stream"]
    try:
        for event in stream:
            if "contentBlockDelta" in event:
                text += event["contentBlockDelta"]["delta"]["text"]
            if "messageStop" in event:
                stop = event["messageStop"]["stopReason"]
    finally:
        stream.close()
    assert text == answer_text(request_for_prompt(prompt))
    assert stop == "end_turn"


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_ctrl_c_stops_every_service_cleanly(tmp_path):
    c = Cloud(tmp_path)
    urls = [c.ep["rest"], c.ep["bedrock"], c.ep["aws"], c.ep["cognito"]["endpoint"]]
    assert all(_port_open(u) for u in urls)
    assert c.stop() == 0
    c.wait_for("Stopped.", 5)
    assert not any(_port_open(u) for u in urls)


def test_the_websocket_gateway_and_the_lambda_invoke_api_are_served(cloud):
    assert cloud.ep["websocket"].startswith("ws://127.0.0.1:")
    assert cloud.ep["lambda"].startswith("http://127.0.0.1:")
    client = boto3.client(
        "lambda", region_name="us-east-1", endpoint_url=cloud.ep["lambda"], **CREDS
    )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
