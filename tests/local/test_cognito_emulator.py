"""The local Cognito emulator, driven by the real boto3 ``cognito-idp`` client.

Each test builds its own pool so tests do not depend on each other; the server runs on an
asyncio loop in a background thread, and every hand-off waits on a future, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import jwt
import pytest
from botocore.config import Config

from local.cognito import CognitoEmulator, CognitoError

REGION = "us-east-1"
PASSWORD = "correct-horse-battery"
TEMPORARY_PASSWORD = "temporary-secret-1"
EMAIL = "alice@example.com"
TARGET = "AWSCognitoIdentityProviderService."


@contextlib.contextmanager
def served(emulator: CognitoEmulator) -> Iterator[CognitoEmulator]:
    """Serve ``emulator`` on 127.0.0.1 from a background event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cognito-emulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(emulator.start("127.0.0.1", 0), loop).result(timeout=30)
        try:
            yield emulator
        finally:
            asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def idp_client(emulator: CognitoEmulator) -> Any:
    return boto3.client(
        "cognito-idp",
        region_name=REGION,
        endpoint_url=emulator.endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        aws_session_token="x",
        # A retried error would hide which call failed and slow the suite down.
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@dataclass(frozen=True)
class Pool:
    pool_id: str
    client_id: str
    username: str
    password: str
    issuer: str
    jwks_url: str


@pytest.fixture(scope="module")
def emulator() -> Iterator[CognitoEmulator]:
    with served(CognitoEmulator(REGION)) as running:
        yield running


@pytest.fixture(scope="module")
def idp(emulator: CognitoEmulator) -> Any:
    return idp_client(emulator)


@pytest.fixture
def make_pool(emulator: CognitoEmulator, idp: Any) -> Callable[..., Pool]:
    def make(
        *,
        flows: tuple[str, ...] = ("ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"),
        temporary: bool = False,
        **client_options: Any,
    ) -> Pool:
        pool_id = idp.create_user_pool(PoolName=f"pool-{uuid.uuid4().hex[:8]}")["UserPool"]["Id"]
        client_id = idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="web",
            GenerateSecret=False,
            ExplicitAuthFlows=list(flows),
            **client_options,
        )["UserPoolClient"]["ClientId"]
        idp.admin_create_user(
            UserPoolId=pool_id,
            Username="alice",
            TemporaryPassword=TEMPORARY_PASSWORD,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": EMAIL},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
        password = TEMPORARY_PASSWORD
        if not temporary:
            idp.admin_set_user_password(
                UserPoolId=pool_id, Username="alice", Password=PASSWORD, Permanent=True
            )
            password = PASSWORD
        return Pool(
            pool_id,
            client_id,
            "alice",
            password,
            emulator.issuer(pool_id),
            emulator.jwks_url(pool_id),
        )

    return make


@pytest.fixture
def pool(make_pool: Callable[..., Pool]) -> Pool:
    return make_pool()


def sign_in(idp: Any, pool: Pool, password: str | None = None) -> dict[str, Any]:
    return idp.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": pool.username, "PASSWORD": password or pool.password},
    )


def verify_id_token(token: str, pool: Pool) -> dict[str, Any]:
    key = jwt.PyJWKClient(pool.jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(
        token, key.key, algorithms=["RS256"], audience=pool.client_id, issuer=pool.issuer
    )


def raw_post(
    emulator: CognitoEmulator, operation: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """An unsigned JSON 1.1 call, as a browser sends it."""
    request = urllib.request.Request(
        emulator.endpoint,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET + operation},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def error_of(excinfo: pytest.ExceptionInfo[Any]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


# ---------------------------------------------------------------- pools and clients


def test_user_pool_id_is_region_underscore_nine_alphanumerics(idp: Any) -> None:
    pool_id = idp.create_user_pool(PoolName="shape")["UserPool"]["Id"]

    assert re.fullmatch(r"us-east-1_[0-9A-Za-z]{9}", pool_id)


def test_client_with_generated_secret_is_refused(idp: Any, pool: Pool) -> None:
    with pytest.raises(idp.exceptions.InvalidParameterException) as excinfo:
        idp.create_user_pool_client(UserPoolId=pool.pool_id, ClientName="srv", GenerateSecret=True)

    assert "GenerateSecret=false" in error_of(excinfo)[1]


def test_describe_user_pool_client_reports_its_auth_flows(idp: Any, pool: Pool) -> None:
    described = idp.describe_user_pool_client(UserPoolId=pool.pool_id, ClientId=pool.client_id)

    assert described["UserPoolClient"]["ExplicitAuthFlows"] == [
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    ]


def test_password_shorter_than_eight_characters_is_rejected(idp: Any, pool: Pool) -> None:
    with pytest.raises(idp.exceptions.InvalidPasswordException):
        idp.admin_set_user_password(
            UserPoolId=pool.pool_id, Username=pool.username, Password="short7!", Permanent=True
        )


def test_admin_get_user_reports_confirmed_user_with_email(idp: Any, pool: Pool) -> None:
    user = idp.admin_get_user(UserPoolId=pool.pool_id, Username=pool.username)

    attributes = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
    assert user["UserStatus"] == "CONFIRMED"
    assert attributes["email"] == EMAIL


def test_deleted_user_cannot_sign_in(idp: Any, pool: Pool) -> None:
    idp.admin_delete_user(UserPoolId=pool.pool_id, Username=pool.username)

    with pytest.raises(idp.exceptions.NotAuthorizedException):
        sign_in(idp, pool)


def test_ensure_pool_with_user_is_idempotent(emulator: CognitoEmulator) -> None:
    first = emulator.ensure_pool_with_user("ensure", "web", "bob", PASSWORD, "bob@example.com")
    second = emulator.ensure_pool_with_user("ensure", "web", "bob", PASSWORD, "bob@example.com")

    assert first == second
    assert first["issuer"] == f"{emulator.endpoint}{first['userPoolId']}"
    assert first["jwksUrl"] == f"{first['issuer']}/.well-known/jwks.json"


# ---------------------------------------------------------------- password sign-in


def test_password_sign_in_returns_bearer_tokens(idp: Any, pool: Pool) -> None:
    result = sign_in(idp, pool)["AuthenticationResult"]

    assert set(result) >= {"AccessToken", "IdToken", "RefreshToken"}
    assert result["ExpiresIn"] == 3600
    assert result["TokenType"] == "Bearer"


def test_id_token_verifies_against_pool_jwks_with_cognito_claims(idp: Any, pool: Pool) -> None:
    id_token = sign_in(idp, pool)["AuthenticationResult"]["IdToken"]

    claims = verify_id_token(id_token, pool)

    assert claims["token_use"] == "id"
    assert claims["cognito:username"] == pool.username
    assert claims["email"] == EMAIL
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600
    assert {"sub", "auth_time", "jti", "origin_jti", "event_id"} <= set(claims)


def test_token_header_is_only_kid_and_rs256(
    emulator: CognitoEmulator, idp: Any, pool: Pool
) -> None:
    id_token = sign_in(idp, pool)["AuthenticationResult"]["IdToken"]

    assert jwt.get_unverified_header(id_token) == {"alg": "RS256", "kid": emulator.kid}


def test_access_token_names_client_and_scope_without_audience(idp: Any, pool: Pool) -> None:
    result = sign_in(idp, pool)["AuthenticationResult"]
    key = jwt.PyJWKClient(pool.jwks_url).get_signing_key_from_jwt(result["AccessToken"])

    claims = jwt.decode(result["AccessToken"], key.key, algorithms=["RS256"], issuer=pool.issuer)

    assert claims["token_use"] == "access"
    assert claims["client_id"] == pool.client_id
    assert claims["scope"] == "aws.cognito.signin.user.admin"
    assert claims["username"] == pool.username
    assert "aud" not in claims
    assert (
        claims["origin_jti"]
        == jwt.decode(result["IdToken"], options={"verify_signature": False})["origin_jti"]
    )


def test_wrong_password_is_not_authorized(idp: Any, pool: Pool) -> None:
    with pytest.raises(idp.exceptions.NotAuthorizedException) as excinfo:
        sign_in(idp, pool, password="wrong-password")

    assert error_of(excinfo)[1] == "Incorrect username or password."


def test_unknown_user_gets_the_same_error_as_a_wrong_password(idp: Any, pool: Pool) -> None:
    with pytest.raises(idp.exceptions.NotAuthorizedException) as excinfo:
        idp.initiate_auth(
            ClientId=pool.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "mallory", "PASSWORD": PASSWORD},
        )

    assert error_of(excinfo)[1] == "Incorrect username or password."


def test_password_flow_is_refused_when_client_does_not_allow_it(
    idp: Any, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(flows=("ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"))

    with pytest.raises(idp.exceptions.InvalidParameterException) as excinfo:
        sign_in(idp, pool)

    assert error_of(excinfo)[1] == "USER_PASSWORD_AUTH flow not enabled for this client"


def test_refresh_is_refused_when_client_does_not_allow_it(
    idp: Any, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(flows=("ALLOW_USER_PASSWORD_AUTH",))
    refresh_token = sign_in(idp, pool)["AuthenticationResult"]["RefreshToken"]

    with pytest.raises(idp.exceptions.InvalidParameterException):
        idp.get_tokens_from_refresh_token(ClientId=pool.client_id, RefreshToken=refresh_token)


# ---------------------------------------------------------------- temporary passwords


def test_temporary_password_sign_in_asks_for_a_new_password(
    idp: Any, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(temporary=True)

    response = sign_in(idp, pool)

    assert response["ChallengeName"] == "NEW_PASSWORD_REQUIRED"
    assert response["Session"]
    assert "AuthenticationResult" not in response


def test_new_password_challenge_response_returns_valid_tokens(
    idp: Any, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(temporary=True)
    session = sign_in(idp, pool)["Session"]

    response = idp.respond_to_auth_challenge(
        ClientId=pool.client_id,
        ChallengeName="NEW_PASSWORD_REQUIRED",
        Session=session,
        ChallengeResponses={"USERNAME": pool.username, "NEW_PASSWORD": "a-brand-new-password"},
    )

    claims = verify_id_token(response["AuthenticationResult"]["IdToken"], pool)
    assert claims["cognito:username"] == pool.username
    assert sign_in(idp, pool, password="a-brand-new-password")["AuthenticationResult"]


# ---------------------------------------------------------------- refresh and revocation


def test_refresh_token_auth_returns_new_valid_id_token_without_refresh_token(
    idp: Any, pool: Pool
) -> None:
    first = sign_in(idp, pool)["AuthenticationResult"]

    refreshed = idp.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": first["RefreshToken"]},
    )["AuthenticationResult"]

    assert "RefreshToken" not in refreshed
    assert refreshed["IdToken"] != first["IdToken"]
    assert verify_id_token(refreshed["IdToken"], pool)["cognito:username"] == pool.username


def test_get_tokens_from_refresh_token_returns_new_id_token_and_same_refresh_token(
    idp: Any, pool: Pool
) -> None:
    first = sign_in(idp, pool)["AuthenticationResult"]

    refreshed = idp.get_tokens_from_refresh_token(
        ClientId=pool.client_id, RefreshToken=first["RefreshToken"]
    )["AuthenticationResult"]

    assert refreshed["RefreshToken"] == first["RefreshToken"]
    assert refreshed["IdToken"] != first["IdToken"]
    assert verify_id_token(refreshed["IdToken"], pool)["cognito:username"] == pool.username


def test_refresh_token_rotation_issues_a_new_token_and_retires_the_old(
    idp: Any, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool(RefreshTokenRotation={"Feature": "ENABLED", "RetryGracePeriodSeconds": 0})
    old = sign_in(idp, pool)["AuthenticationResult"]["RefreshToken"]

    new = idp.get_tokens_from_refresh_token(ClientId=pool.client_id, RefreshToken=old)[
        "AuthenticationResult"
    ]["RefreshToken"]

    assert new != old
    with pytest.raises(idp.exceptions.RefreshTokenReuseException):
        idp.get_tokens_from_refresh_token(ClientId=pool.client_id, RefreshToken=old)


def _refresh_with_initiate_auth(idp: Any, pool: Pool, token: str) -> Any:
    return idp.initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": token},
    )


def _refresh_with_get_tokens(idp: Any, pool: Pool, token: str) -> Any:
    return idp.get_tokens_from_refresh_token(ClientId=pool.client_id, RefreshToken=token)


@pytest.mark.parametrize("refresh", [_refresh_with_initiate_auth, _refresh_with_get_tokens])
def test_revoked_refresh_token_no_longer_refreshes(
    idp: Any, pool: Pool, refresh: Callable[[Any, Pool, str], Any]
) -> None:
    refresh_token = sign_in(idp, pool)["AuthenticationResult"]["RefreshToken"]

    idp.revoke_token(Token=refresh_token, ClientId=pool.client_id)

    with pytest.raises(idp.exceptions.NotAuthorizedException) as excinfo:
        refresh(idp, pool, refresh_token)
    assert error_of(excinfo)[1] == "Refresh Token has been revoked"


def test_get_user_returns_the_access_token_owner(idp: Any, pool: Pool) -> None:
    access_token = sign_in(idp, pool)["AuthenticationResult"]["AccessToken"]

    user = idp.get_user(AccessToken=access_token)

    assert user["Username"] == pool.username
    assert {"Name": "email", "Value": EMAIL} in user["UserAttributes"]


def test_global_sign_out_revokes_the_users_access_tokens(idp: Any, pool: Pool) -> None:
    access_token = sign_in(idp, pool)["AuthenticationResult"]["AccessToken"]

    idp.global_sign_out(AccessToken=access_token)

    with pytest.raises(idp.exceptions.NotAuthorizedException):
        idp.get_user(AccessToken=access_token)


def test_access_token_expires_on_the_emulators_clock() -> None:
    now = [1_700_000_000.0]
    emulator = CognitoEmulator(
        REGION, issuer_base="http://issuer.test", clock=lambda: now[0], token_validity_s=60
    )
    info = emulator.ensure_pool_with_user("clock", "web", "carol", PASSWORD)
    result = emulator.call(
        "InitiateAuth",
        {
            "ClientId": info["clientId"],
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": "carol", "PASSWORD": PASSWORD},
        },
    )
    now[0] += 61

    with pytest.raises(CognitoError, match="Access Token has expired"):
        emulator.call("GetUser", {"AccessToken": result["AuthenticationResult"]["AccessToken"]})


# ---------------------------------------------------------------- keys and JWKS


def test_two_emulators_sign_with_different_keys(emulator: CognitoEmulator, pool: Pool) -> None:
    with served(CognitoEmulator(REGION)) as other:
        theirs = other.ensure_pool_with_user("other", "web", "alice", PASSWORD, EMAIL)
        their_token = other.mint_id_token(theirs["userPoolId"], theirs["clientId"], "alice")
        our_key = jwt.PyJWKClient(pool.jwks_url).get_signing_keys()[0]

        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(their_token, our_key.key, algorithms=["RS256"], audience=theirs["clientId"])
    assert other.kid != emulator.kid


def test_jwks_is_not_served_for_an_unknown_pool(emulator: CognitoEmulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(emulator.jwks_url("us-east-1_NoSuchOne"), timeout=10)

    assert excinfo.value.code == 404


def test_openid_configuration_names_issuer_and_jwks_uri(pool: Pool) -> None:
    url = f"{pool.issuer}/.well-known/openid-configuration"
    with urllib.request.urlopen(url, timeout=10) as response:
        config = json.loads(response.read())

    assert config["issuer"] == pool.issuer
    assert config["jwks_uri"] == pool.jwks_url


def test_minted_token_with_past_expiry_is_well_signed_but_expired(
    emulator: CognitoEmulator, pool: Pool
) -> None:
    token = emulator.mint_id_token(
        pool.pool_id, pool.client_id, pool.username, iat=1_000_000, exp=1_000_060
    )

    with pytest.raises(jwt.ExpiredSignatureError):
        verify_id_token(token, pool)


# ---------------------------------------------------------------- wire protocol and CORS


def test_cors_preflight_allows_authorization_header(emulator: CognitoEmulator) -> None:
    request = urllib.request.Request(
        emulator.endpoint,
        method="OPTIONS",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-amz-target",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        origin = response.headers["Access-Control-Allow-Origin"]

    assert origin == "*"
    assert {"authorization", "content-type", "x-amz-target", "amz-sdk-request"} <= allowed


def test_errors_name_their_type_in_header_and_body(emulator: CognitoEmulator, pool: Pool) -> None:
    status, headers, body = raw_post(
        emulator,
        "InitiateAuth",
        {
            "ClientId": pool.client_id,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": pool.username, "PASSWORD": "wrong-password"},
        },
    )

    assert status == 400
    assert headers["x-amzn-ErrorType"] == "NotAuthorizedException"
    assert body == {
        "__type": "NotAuthorizedException",
        "message": "Incorrect username or password.",
    }
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_unknown_operation_is_a_400_naming_it(emulator: CognitoEmulator) -> None:
    status, _, body = raw_post(emulator, "ListUsers", {"UserPoolId": "us-east-1_x"})

    assert status == 400
    assert body["__type"] == "UnknownOperationException"
    assert "ListUsers" in body["message"]


def test_unsigned_admin_call_is_refused(emulator: CognitoEmulator, pool: Pool) -> None:
    status, _, body = raw_post(
        emulator, "AdminGetUser", {"UserPoolId": pool.pool_id, "Username": pool.username}
    )

    assert status == 400
    assert body["__type"] == "MissingAuthenticationTokenException"
