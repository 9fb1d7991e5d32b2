"""``make user`` against the deployed pool (deploy/users.py), with Cognito stubbed by botocore's
Stubber: the calls it makes, the password it generates, the errors it explains."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import NoCredentialsError
from botocore.stub import ANY, Stubber

from deploy.__main__ import main
from deploy.users import (
    PASSWORD_SYMBOLS,
    PoolTarget,
    UserError,
    create_user,
    deployed_pool,
    generate_password,
    local_pool,
)

POOL = PoolTarget(user_pool_id="eu-west-1_AbC123xyz", region="eu-west-1")
POLICY = {
    "UserPool": {
        "Id": POOL.user_pool_id,
        "Policies": {"PasswordPolicy": {"MinimumLength": 12, "RequireSymbols": True}},
    }
}


@pytest.fixture
def cognito() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client(
        "cognito-idp", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def meets_the_stack_policy(password: str) -> bool:
    return (
        len(password) >= 12
        and any(c in string.ascii_uppercase for c in password)
        and any(c in string.ascii_lowercase for c in password)
        and any(c in string.digits for c in password)
        and any(c in PASSWORD_SYMBOLS for c in password)
    )


def test_generated_passwords_meet_the_pool_policy_and_differ() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(meets_the_stack_policy(p) and len(p) == 20 for p in passwords)
    assert len(generate_password(minimum_length=32)) == 32


def test_the_user_is_created_without_invitation_and_confirmed(cognito) -> None:
    client, stubber = cognito
    stubber.add_response("describe_user_pool", POLICY, {"UserPoolId": POOL.user_pool_id})
    stubber.add_response(
        "admin_create_user",
        {"User": {"Username": "alice", "UserStatus": "FORCE_CHANGE_PASSWORD"}},
        {
            "UserPoolId": POOL.user_pool_id,
            "Username": "alice",
            "UserAttributes": [
                {"Name": "email", "Value": "alice@example.com"},
                {"Name": "email_verified", "Value": "true"},
            ],
            "MessageAction": "SUPPRESS",
        },
    )
    stubber.add_response(
        "admin_set_user_password",
        {},
        {"UserPoolId": POOL.user_pool_id, "Username": "alice", "Password": ANY, "Permanent": True},
    )

    password = create_user(client, POOL, "alice", email="alice@example.com")

    assert meets_the_stack_policy(password)


def test_an_existing_user_is_a_clear_error(cognito) -> None:
    client, stubber = cognito
    stubber.add_response("describe_user_pool", POLICY)
    stubber.add_client_error(
        "admin_create_user",
        service_error_code="UsernameExistsException",
        service_message="User account already exists",
    )
    with pytest.raises(UserError, match=r"'alice' already exists in pool eu-west-1_AbC123xyz"):
        create_user(client, POOL, "alice")


def test_a_refused_password_leaves_no_half_made_user(cognito) -> None:
    client, stubber = cognito
    stubber.add_response("describe_user_pool", POLICY)
    stubber.add_response("admin_create_user", {"User": {"Username": "bob"}})
    stubber.add_client_error(
        "admin_set_user_password",
        service_error_code="InvalidPasswordException",
        service_message="Password does not conform to policy",
    )
    stubber.add_response(
        "admin_delete_user", {}, {"UserPoolId": POOL.user_pool_id, "Username": "bob"}
    )
    with pytest.raises(UserError, match="refused the password: Password does not conform"):
        create_user(client, POOL, "bob")


def test_missing_permissions_name_the_actions(cognito) -> None:
    client, stubber = cognito
    stubber.add_client_error("describe_user_pool", service_error_code="AccessDeniedException")
    stubber.add_client_error("admin_create_user", service_error_code="AccessDeniedException")
    with pytest.raises(UserError, match=r"cognito-idp:AdminCreateUser"):
        create_user(client, POOL, "carol")


@pytest.mark.parametrize("name", ["", "has space", "x" * 129])
def test_a_bad_username_is_refused_before_any_call(cognito, name: str) -> None:
    client, _ = cognito
    with pytest.raises(UserError, match="USERNAME must be 1 to 128 characters"):
        create_user(client, POOL, name)


def test_the_deployed_pool_comes_from_the_stack_outputs(tmp_path: Path) -> None:
    path = tmp_path / "stack-outputs.json"
    path.write_text(
        json.dumps({"LlmStream": {"UserPoolId": POOL.user_pool_id, "Region": "eu-west-1"}})
    )
    assert deployed_pool(path) == POOL


def test_without_outputs_or_endpoints_the_error_says_what_to_run(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match=r"make deploy.*make user LOCAL=1"):
        deployed_pool(tmp_path / "stack-outputs.json")
    with pytest.raises(UserError, match="start the local cloud with make run"):
        local_pool(tmp_path / "endpoints.json")

    argv = ["user", "--username", "alice", "--outputs-file", str(tmp_path / "none.json")]
    assert main(argv) == 1
    assert "error:" in capsys.readouterr().err


def test_outputs_of_an_older_stack_name_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "stack-outputs.json"
    path.write_text(json.dumps({"LlmStream": {"Region": "eu-west-1"}}))
    with pytest.raises(UserError, match="has no UserPoolId"):
        deployed_pool(path)


class NoCredentialsCognito:
    """A Cognito client whose credential chain found nothing (no request is ever sent)."""

    def describe_user_pool(self, **_: object) -> None:
        raise NoCredentialsError()

    def admin_create_user(self, **_: object) -> None:
        raise NoCredentialsError()


def test_missing_credentials_say_what_to_run() -> None:
    with pytest.raises(UserError, match=r"No usable AWS credentials.*aws configure.*aws sso login"):
        create_user(NoCredentialsCognito(), POOL, "alice")
