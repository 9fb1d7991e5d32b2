"""``make user LOCAL=1`` against the local Cognito emulator, served in-process: the printed
password signs the new user in at once (confirmed, no password change), and only once is a
user created under a name."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploy.__main__ import main
from local.cognito import CognitoEmulator

REGION = "us-east-1"
PASSWORD_LINE = "Password (shown once, stored nowhere): "


@pytest.fixture(scope="module")
def emulator() -> Iterator[CognitoEmulator]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cognito-emulator", daemon=True)
    thread.start()
    emulator = CognitoEmulator(REGION)
    asyncio.run_coroutine_threadsafe(emulator.start("127.0.0.1", 0), loop).result(timeout=30)
    try:
        yield emulator
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def idp(emulator: CognitoEmulator) -> Any:
    return boto3.client(
        "cognito-idp",
        region_name=REGION,
        endpoint_url=emulator.endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture
def endpoints(emulator: CognitoEmulator, idp: Any, tmp_path: Path) -> tuple[Path, str]:
    """A pool with the stack's password policy, and the endpoints file make run would write."""
    pool_id = idp.create_user_pool(
        PoolName="llm-stream",
        Policies={
            "PasswordPolicy": {
                "MinimumLength": 12,
                "RequireUppercase": True,
                "RequireLowercase": True,
                "RequireNumbers": True,
                "RequireSymbols": True,
            }
        },
    )["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="web",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    path = tmp_path / "endpoints.json"
    path.write_text(
        json.dumps(
            {
                "client": "http://127.0.0.1:4518/",
                "cognito": {
                    "endpoint": emulator.endpoint,
                    "userPoolId": pool_id,
                    "clientId": client_id,
                    "region": REGION,
                },
            }
        )
    )
    return path, client_id


def make_user(endpoints_file: Path, username: str, *extra: str) -> int:
    return main(
        ["user", "--local", "--username", username, "--endpoints-file", str(endpoints_file), *extra]
    )


def test_the_printed_password_signs_the_new_user_in(endpoints, idp, capsys) -> None:
    path, client_id = endpoints
    assert make_user(path, "alice", "--email", "alice@example.com") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(PASSWORD_LINE)
    password = lines[-1].removeprefix(PASSWORD_LINE)
    assert sum(PASSWORD_LINE in line for line in lines) == 1
    assert "Sign in at http://127.0.0.1:4518/" in lines

    result = idp.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "alice", "PASSWORD": password},
    )
    assert "ChallengeName" not in result  # confirmed: no NEW_PASSWORD_REQUIRED
    assert result["AuthenticationResult"]["IdToken"]
    pool_id = json.loads(path.read_text())["cognito"]["userPoolId"]
    user = idp.admin_get_user(UserPoolId=pool_id, Username="alice")
    assert user["UserStatus"] == "CONFIRMED"
    assert {"Name": "email_verified", "Value": "true"} in user["UserAttributes"]


def test_a_second_user_of_the_same_name_is_refused_and_the_first_kept(
    endpoints, idp, capsys
) -> None:
    path, client_id = endpoints
    assert make_user(path, "bob") == 0
    password = capsys.readouterr().out.splitlines()[-1].removeprefix(PASSWORD_LINE)

    assert make_user(path, "bob") == 1
    captured = capsys.readouterr()
    assert "'bob' already exists" in captured.err
    assert PASSWORD_LINE not in captured.out

    result = idp.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "bob", "PASSWORD": password},
    )
    assert result["AuthenticationResult"]["IdToken"]


def test_a_local_cloud_that_is_gone_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(
        json.dumps(
            {
                "cognito": {
                    "endpoint": "http://127.0.0.1:9/",  # discard port: nothing listens
                    "userPoolId": f"{REGION}_gone",
                    "region": REGION,
                }
            }
        )
    )
    assert make_user(path, "carol") == 1
    assert "is the local cloud running? Start it with make run" in capsys.readouterr().err
