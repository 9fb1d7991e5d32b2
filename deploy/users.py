"""The first user of a pool in one step (``make user``): created, confirmed, password printed once.

Self sign-up is off in the stack, so an administrator creates users. ``AdminCreateUser`` with
``MessageAction=SUPPRESS`` sends no invitation; ``AdminSetUserPassword(Permanent=True)`` makes
the generated password the user's own, so the first sign-in needs no password change.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    SSOError,
    TokenRetrievalError,
)

from deploy.outputs import OUTPUTS_FILE, ROOT, OutputsError, load_outputs, require, shown
from deploy.preflight import SIGN_IN_HELP

ENDPOINTS_FILE = ROOT / ".local" / "endpoints.json"
# The stack's policy (at least 12 characters, every class); a longer password costs nothing.
PASSWORD_LENGTH = 20
# Symbols Cognito accepts that need no quoting in a shell or a JSON string.
PASSWORD_SYMBOLS = "!#%*+,-.:=?@^_~"
_CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS)
# The local endpoint checks that admin calls are signed, not by whom (docs/local-cloud.md).
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class UserError(RuntimeError):
    """The user could not be created; the message says why and what to do."""


@dataclass(frozen=True)
class PoolTarget:
    """Where the user is created: the deployed pool, or the local cloud's."""

    user_pool_id: str
    region: str
    endpoint_url: str | None = None  # None: AWS itself
    source: str = "the deployed stack"

    def client(self, session: Any | None = None) -> Any:
        # One retry at most: a refused call should say so at once.
        config = Config(retries={"mode": "standard", "max_attempts": 2})
        if self.endpoint_url is None:
            session = session or boto3.session.Session()
            return session.client("cognito-idp", region_name=self.region, config=config)
        return boto3.client(
            "cognito-idp",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=config,
            **LOCAL_CREDENTIALS,
        )


def deployed_pool(outputs_file: Path = OUTPUTS_FILE) -> PoolTarget:
    """The pool of the deployed stack, from the outputs ``make deploy`` wrote."""
    try:
        pool_id, region = require(
            load_outputs(outputs_file), "UserPoolId", "Region", path=outputs_file
        )
    except OutputsError as e:
        raise UserError(f"{e} For the local cloud's pool: make user LOCAL=1 USERNAME=...") from e
    return PoolTarget(user_pool_id=pool_id, region=region)


def local_pool(endpoints_file: Path = ENDPOINTS_FILE) -> PoolTarget:
    """The local cloud's pool, from the endpoints ``make run`` wrote."""
    if not endpoints_file.is_file():
        raise UserError(
            f"{shown(endpoints_file)} does not exist: start the local cloud with make run "
            "(it writes the file), then run this again in another terminal."
        )
    try:
        cognito = json.loads(endpoints_file.read_text())["cognito"]
        return PoolTarget(
            user_pool_id=str(cognito["userPoolId"]),
            region=str(cognito["region"]),
            endpoint_url=str(cognito["endpoint"]),
            source="the local cloud",
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{shown(endpoints_file)} has no cognito endpoint and pool ({e!r}); restart the "
            "local cloud with make run"
        ) from e


def generate_password(minimum_length: int = 12, length: int = PASSWORD_LENGTH) -> str:
    """A random password with at least one upper, lower, digit and symbol (``secrets``)."""
    length = max(length, minimum_length, len(_CLASSES))
    chars = [secrets.choice(cls) for cls in _CLASSES]
    alphabet = "".join(_CLASSES)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def create_user(
    client: Any,
    pool: PoolTarget,
    username: str,
    email: str | None = None,
    password: str | None = None,
) -> str:
    """Create and confirm ``username``; returns its password (generated unless given)."""
    if not username or any(c.isspace() for c in username) or len(username) > 128:
        raise UserError(
            f"USERNAME must be 1 to 128 characters without spaces, got {username!r}; "
            "e.g. make user USERNAME=alice"
        )
    password = password or generate_password(_minimum_length(client, pool))
    attributes = []
    if email:
        # Verified, so the pool's account recovery (email only) can reach the user.
        attributes = [
            {"Name": "email", "Value": email},
            {"Name": "email_verified", "Value": "true"},
        ]
    try:
        client.admin_create_user(
            UserPoolId=pool.user_pool_id,
            Username=username,
            UserAttributes=attributes,
            MessageAction="SUPPRESS",
        )
        try:
            client.admin_set_user_password(
                UserPoolId=pool.user_pool_id, Username=username, Password=password, Permanent=True
            )
        except (ClientError, BotoCoreError):
            # No half-made user (unconfirmed, password unknown) to block the next attempt.
            client.admin_delete_user(UserPoolId=pool.user_pool_id, Username=username)
            raise
    except ClientError as e:
        raise _user_error(e, pool, username) from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise UserError(f"No usable AWS credentials were found. {SIGN_IN_HELP}") from e
    except (SSOError, TokenRetrievalError) as e:
        raise UserError(
            "The AWS SSO session has expired: run `aws sso login --profile NAME`."
        ) from e
    except EndpointConnectionError as e:
        hint = (
            "is the local cloud running? Start it with make run"
            if pool.endpoint_url
            else "check the network and the Region in the outputs file"
        )
        raise UserError(f"Could not reach Cognito at {e.kwargs.get('endpoint_url')}: {hint}") from e
    except BotoCoreError as e:
        raise UserError(f"Creating {username!r} in {pool.source} failed: {e}") from e
    return password


def _minimum_length(client: Any, pool: PoolTarget) -> int:
    """The pool's minimum length; 12 (the stack's) when the caller may not describe the pool."""
    try:
        described = client.describe_user_pool(UserPoolId=pool.user_pool_id)
        policy = described["UserPool"]["Policies"]["PasswordPolicy"]
        return int(policy.get("MinimumLength", 12))
    except (ClientError, BotoCoreError, KeyError, TypeError, ValueError):
        return 12


def _user_error(error: ClientError, pool: PoolTarget, username: str) -> UserError:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "") or code
    where = f"pool {pool.user_pool_id} ({pool.source})"
    if code == "UsernameExistsException":
        return UserError(
            f"User {username!r} already exists in {where}. Pick another USERNAME, or set a new "
            "password with `aws cognito-idp admin-set-user-password --permanent`."
        )
    if code == "ResourceNotFoundException":
        return UserError(
            f"{where} does not exist: the outputs file is stale (run make deploy, or make run "
            "for the local cloud)."
        )
    if code == "InvalidPasswordException":
        return UserError(f"{where} refused the password: {message}")
    if code in ("AccessDeniedException", "NotAuthorizedException"):
        return UserError(
            f"Not allowed to create users in {where} ({message}): the credentials need "
            "cognito-idp:AdminCreateUser and cognito-idp:AdminSetUserPassword."
        )
    if code in ("UnrecognizedClientException", "ExpiredTokenException", "ExpiredToken"):
        return UserError(f"AWS refused the credentials ({code}): sign in again (aws sso login)")
    return UserError(f"Creating {username!r} in {where} failed ({code}): {message}")
