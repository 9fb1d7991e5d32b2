"""Local Cognito user-pool emulator (docs/security.md, docs/local-cloud.md):
the slice of Cognito this project uses.

Served over the AWS JSON 1.1 protocol exactly as boto3 and Amplify send it (``POST /`` with
``X-Amz-Target: AWSCognitoIdentityProviderService.<Operation>``), so SDK calls stay the real
ones pointed at a local endpoint. Why our own and not moto: moto signs every pool's tokens with
one public key shipped in its wheel, and lacks ``GetTokensFromRefreshToken`` and
``RevokeToken`` that Amplify >= 6.15.4 calls. Here every run gets a fresh RSA key.

Implemented: CreateUserPool, CreateUserPoolClient, DescribeUserPool, DescribeUserPoolClient,
AdminCreateUser, AdminSetUserPassword, AdminGetUser, AdminDeleteUser, InitiateAuth
(USER_PASSWORD_AUTH, REFRESH_TOKEN_AUTH / REFRESH_TOKEN), RespondToAuthChallenge
(NEW_PASSWORD_REQUIRED), GetTokensFromRefreshToken, RevokeToken, GlobalSignOut, GetUser; plus
``/<poolId>/.well-known/jwks.json`` and ``openid-configuration``.

Deliberate differences from AWS, each chosen for local use:
- App clients default to ``PreventUserExistenceErrors=ENABLED`` (the console default; the API
  default is LEGACY), so an unknown user gets "Incorrect username or password." too.
- The default password policy is only ``MinimumLength=8``; character-class requirements apply
  when the pool is created with them.
- Client secrets, SRP, custom auth, MFA, aliases and e-mail usernames are not implemented and
  are refused with a message saying so, rather than half-emulated.
- Admin calls must carry a SigV4 ``Authorization`` header (as on AWS), but the signature is not
  checked: any credentials work.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import signal
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from local.http_service import Served, cors_preflight

log = logging.getLogger(__name__)

TARGET_PREFIX = "AWSCognitoIdentityProviderService."
AMZ_JSON = "application/x-amz-json-1.1"
ACCESS_TOKEN_SCOPE = "aws.cognito.signin.user.admin"
ACCOUNT_ID = "000000000000"

INCORRECT_CREDENTIALS = "Incorrect username or password."
REFRESH_REVOKED = "Refresh Token has been revoked"

# Operations Cognito serves without IAM credentials (auth type "none" in the service model);
# everything else needs a SigV4-signed request, exactly as on AWS.
PUBLIC_OPERATIONS = frozenset(
    {
        "InitiateAuth",
        "RespondToAuthChallenge",
        "GetTokensFromRefreshToken",
        "RevokeToken",
        "GlobalSignOut",
        "GetUser",
    }
)

CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-amz-target",
    "x-amz-user-agent",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "cache-control",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
)
# Browsers hide response headers from scripts unless exposed; Amplify reads the error type here.
CORS_EXPOSE_HEADERS = "x-amzn-errortype, x-amzn-requestid, x-amzn-errormessage"

_ALLOW_FLOWS = frozenset(
    {
        "ALLOW_ADMIN_USER_PASSWORD_AUTH",
        "ALLOW_CUSTOM_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_USER_SRP_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
        "ALLOW_USER_AUTH",
        "ALLOW_TOKEN_EXCHANGE_DELEGATION",
        "ALLOW_TOKEN_EXCHANGE_IMPERSONATION",
    }
)
# Legacy flow names; clients using them could always refresh and use SRP.
_LEGACY_FLOWS = {
    "ADMIN_NO_SRP_AUTH": "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "USER_PASSWORD_AUTH": "ALLOW_USER_PASSWORD_AUTH",
    "CUSTOM_AUTH_FLOW_ONLY": "ALLOW_CUSTOM_AUTH",
}
_DEFAULT_FLOWS = ("ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH", "ALLOW_CUSTOM_AUTH")
_FLOW_PERMISSION = {
    "USER_PASSWORD_AUTH": "ALLOW_USER_PASSWORD_AUTH",
    "REFRESH_TOKEN_AUTH": "ALLOW_REFRESH_TOKEN_AUTH",
    "REFRESH_TOKEN": "ALLOW_REFRESH_TOKEN_AUTH",
    "USER_SRP_AUTH": "ALLOW_USER_SRP_AUTH",
    "CUSTOM_AUTH": "ALLOW_CUSTOM_AUTH",
    "ADMIN_USER_PASSWORD_AUTH": "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "ADMIN_NO_SRP_AUTH": "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "USER_AUTH": "ALLOW_USER_AUTH",
}

_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_BOOLEAN_ATTRIBUTES = frozenset({"email_verified", "phone_number_verified"})
_USERNAME_RE = re.compile(r"^\S{1,128}$")
_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


class CognitoError(Exception):
    """A modelled Cognito error: becomes HTTP 400 with ``__type`` and ``message``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _invalid(message: str) -> CognitoError:
    return CognitoError("InvalidParameterException", message)


@dataclass
class _PasswordPolicy:
    minimum_length: int = 8
    require_uppercase: bool = False
    require_lowercase: bool = False
    require_numbers: bool = False
    require_symbols: bool = False
    temporary_password_validity_days: int = 7

    def check(self, password: str) -> None:
        problems = [
            (len(password) < self.minimum_length, "Password not long enough"),
            (
                self.require_uppercase and not any(c.isupper() for c in password),
                "Password must have uppercase characters",
            ),
            (
                self.require_lowercase and not any(c.islower() for c in password),
                "Password must have lowercase characters",
            ),
            (
                self.require_numbers and not any(c.isdigit() for c in password),
                "Password must have numeric characters",
            ),
            (
                self.require_symbols and not any(not c.isalnum() for c in password),
                "Password must have symbol characters",
            ),
        ]
        for failed, reason in problems:
            if failed:
                raise CognitoError(
                    "InvalidPasswordException", f"Password did not conform with policy: {reason}"
                )

    def describe(self) -> dict[str, Any]:
        return {
            "MinimumLength": self.minimum_length,
            "RequireUppercase": self.require_uppercase,
            "RequireLowercase": self.require_lowercase,
            "RequireNumbers": self.require_numbers,
            "RequireSymbols": self.require_symbols,
            "TemporaryPasswordValidityDays": self.temporary_password_validity_days,
        }


@dataclass
class _Client:
    client_id: str
    name: str
    pool_id: str
    created: float
    explicit_flows: list[str]
    allowed: frozenset[str]
    id_validity_s: int | None
    access_validity_s: int | None
    refresh_validity_s: int
    described: dict[str, Any]
    read_attributes: list[str]
    prevent_user_existence_errors: bool
    token_revocation: bool
    auth_session_validity_s: int
    rotation: bool
    rotation_grace_s: int


@dataclass
class _User:
    username: str
    sub: str
    attributes: dict[str, str]
    password: str
    status: str
    created: float
    modified: float

    def attribute_list(self) -> list[dict[str, str]]:
        return [{"Name": "sub", "Value": self.sub}] + [
            {"Name": k, "Value": v} for k, v in self.attributes.items()
        ]


@dataclass
class _Pool:
    pool_id: str
    name: str
    created: float
    policy: _PasswordPolicy
    case_sensitive: bool
    clients: dict[str, _Client] = field(default_factory=dict)
    users: dict[str, _User] = field(default_factory=dict)

    def key(self, username: str) -> str:
        return username if self.case_sensitive else username.lower()


@dataclass
class _Session:
    """One sign-in: its refresh token(s) and every access token carry ``origin_jti``."""

    pool_id: str
    client_id: str
    sub: str
    username: str
    origin_jti: str
    event_id: str
    auth_time: int
    expires_at: float
    revoked: bool = False


@dataclass
class _RefreshRecord:
    session: _Session
    # Set when rotation replaced this token: usable until then, then a reuse error.
    rotated_until: float | None = None


@dataclass
class _Challenge:
    pool_id: str
    client_id: str
    user_key: str
    expires_at: float


def _random_id(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value


def _req(body: dict[str, Any], name: str) -> str:
    value = _opt_str(body, name)
    if value is None:
        raise _invalid(f"Missing required parameter {name}")
    return value


def _dict_param(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{name} must be an object")
    return value


def _bool_param(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a boolean")
    return value


def _int_param(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be an integer")
    return value


class CognitoEmulator:
    """In-memory Cognito user pools with a per-run signing key, served by aiohttp.

    ``clock`` drives every time decision (token ``iat``/``exp``, refresh-token and session
    expiry) so tests can move time without sleeping. ``token_validity_s`` is the ID and access
    token lifetime for app clients that do not set their own.
    """

    def __init__(
        self,
        region: str,
        issuer_base: str | None = None,
        clock: Callable[[], float] = time.time,
        token_validity_s: int = 3600,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9-]+", region):
            raise ValueError(
                f"region must look like an AWS region (e.g. us-east-1), got {region!r}"
            )
        if token_validity_s <= 0:
            raise ValueError("token_validity_s must be positive")
        self.region = region
        self._explicit_issuer_base = issuer_base.rstrip("/") if issuer_base else None
        self._issuer_base = self._explicit_issuer_base
        self._clock = clock
        self._token_validity_s = token_validity_s
        # RLock: helpers such as ensure_pool_with_user run several operations atomically
        # while the HTTP server may be serving requests from another thread.
        self._lock = threading.RLock()
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._private_key.public_key()
        numbers = self._public_key.public_numbers()
        self._public_jwk = {
            "e": _b64url_uint(numbers.e),
            "kty": "RSA",
            "n": _b64url_uint(numbers.n),
        }
        # RFC 7638 thumbprint: a new key per run gives a new kid per run.
        canonical = json.dumps(self._public_jwk, separators=(",", ":"), sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).digest()
        self.kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        self._pools: dict[str, _Pool] = {}
        self._clients: dict[str, _Client] = {}
        self._refresh_tokens: dict[str, _RefreshRecord] = {}
        self._sessions: dict[str, _Session] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._served = Served("Cognito emulator")
        self._operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateUserPool": self._create_user_pool,
            "CreateUserPoolClient": self._create_user_pool_client,
            "DescribeUserPool": self._describe_user_pool,
            "DescribeUserPoolClient": self._describe_user_pool_client,
            "AdminCreateUser": self._admin_create_user,
            "AdminSetUserPassword": self._admin_set_user_password,
            "AdminGetUser": self._admin_get_user,
            "AdminDeleteUser": self._admin_delete_user,
            "InitiateAuth": self._initiate_auth,
            "RespondToAuthChallenge": self._respond_to_auth_challenge,
            "GetTokensFromRefreshToken": self._get_tokens_from_refresh_token,
            "RevokeToken": self._revoke_token,
            "GlobalSignOut": self._global_sign_out,
            "GetUser": self._get_user,
        }

    # ----------------------------------------------------------------- public helpers

    @property
    def endpoint(self) -> str:
        """The URL SDKs use as the Cognito endpoint (``http://127.0.0.1:PORT/``)."""
        return self._served.endpoint

    @property
    def issuer_base(self) -> str:
        if self._issuer_base is None:
            raise RuntimeError(
                "No issuer yet: await start() first, or pass issuer_base= to CognitoEmulator."
            )
        return self._issuer_base

    def issuer(self, pool_id: str) -> str:
        return f"{self.issuer_base}/{pool_id}"

    def jwks_url(self, pool_id: str) -> str:
        return f"{self.issuer(pool_id)}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"alg": "RS256", "kid": self.kid, "use": "sig", **self._public_jwk}]}

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run one operation in-process, as the HTTP API would (raises CognitoError)."""
        handler = self._operations.get(operation)
        if handler is None:
            raise CognitoError(
                "UnknownOperationException",
                f"Operation {operation[:100]!r} is not implemented by the local Cognito "
                f"emulator; it implements: {', '.join(sorted(self._operations))}.",
            )
        with self._lock:
            return handler(body)

    def ensure_pool_with_user(
        self,
        pool_name: str,
        client_name: str,
        username: str,
        password: str,
        email: str | None = None,
    ) -> dict[str, str]:
        """Idempotently create a pool, a public password-flow client and a confirmed user.

        An existing user keeps its ``sub`` but gets ``password`` as its permanent password.
        """
        with self._lock:
            pool = next((p for p in self._pools.values() if p.name == pool_name), None)
            if pool is None:
                created = self.call("CreateUserPool", {"PoolName": pool_name})
                pool = self._pools[created["UserPool"]["Id"]]
            client = next((c for c in pool.clients.values() if c.name == client_name), None)
            if client is None:
                created = self.call(
                    "CreateUserPoolClient",
                    {
                        "UserPoolId": pool.pool_id,
                        "ClientName": client_name,
                        "GenerateSecret": False,
                        "ExplicitAuthFlows": [
                            "ALLOW_USER_PASSWORD_AUTH",
                            "ALLOW_REFRESH_TOKEN_AUTH",
                        ],
                    },
                )
                client = self._clients[created["UserPoolClient"]["ClientId"]]
            if pool.key(username) not in pool.users:
                attributes: list[dict[str, str]] = []
                if email:
                    attributes = [
                        {"Name": "email", "Value": email},
                        {"Name": "email_verified", "Value": "true"},
                    ]
                self.call(
                    "AdminCreateUser",
                    {
                        "UserPoolId": pool.pool_id,
                        "Username": username,
                        "UserAttributes": attributes,
                        "MessageAction": "SUPPRESS",
                    },
                )
            self.call(
                "AdminSetUserPassword",
                {
                    "UserPoolId": pool.pool_id,
                    "Username": username,
                    "Password": password,
                    "Permanent": True,
                },
            )
            return {
                "userPoolId": pool.pool_id,
                "clientId": client.client_id,
                "username": username,
                "password": password,
                "issuer": self.issuer(pool.pool_id),
                "jwksUrl": self.jwks_url(pool.pool_id),
            }

    def mint_id_token(
        self, pool_id: str, client_id: str, username: str, **claim_overrides: Any
    ) -> str:
        """For tests: a correctly signed ID token for an existing user, with claims altered.

        Overrides replace claims (pass names with a colon via ``**{"cognito:username": ...}``);
        an override of ``None`` removes the claim. No session is recorded for the token.
        """
        with self._lock:
            pool = self._pool(pool_id)
            user = pool.users.get(pool.key(username))
            if user is None:
                raise ValueError(f"User {username!r} does not exist in pool {pool_id}")
            now = int(self._clock())
            session = _Session(
                pool_id=pool_id,
                client_id=client_id,
                sub=user.sub,
                username=user.username,
                origin_jti=str(uuid.uuid4()),
                event_id=str(uuid.uuid4()),
                auth_time=now,
                expires_at=now,
            )
            client = pool.clients.get(client_id)
            claims = self._id_claims(pool, client_id, client, user, session, now)
        for name, value in claim_overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self._sign(claims)

    # ----------------------------------------------------------------- HTTP server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the actual port."""
        actual_port = await self._served.start(self._make_app(), host, port)
        if self._explicit_issuer_base is None:
            self._issuer_base = self._served.endpoint.rstrip("/")
        log.info("local Cognito listening on %s (kid %s)", self._served.endpoint, self.kid)
        return actual_port

    async def stop(self) -> None:
        await self._served.stop()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._cors_middleware])
        app.router.add_post("/", self._handle_api)
        app.router.add_get("/{pool_id}/.well-known/jwks.json", self._handle_jwks)
        app.router.add_get(
            "/{pool_id}/.well-known/openid-configuration", self._handle_openid_configuration
        )
        app.router.add_route("OPTIONS", "/{tail:.*}", self._handle_preflight)
        return app

    @web.middleware
    async def _cors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = web.json_response({"message": exc.reason}, status=exc.status)
        # Browsers (Amplify) call Cognito directly from the page's origin.
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return response

    async def _handle_preflight(self, request: web.Request) -> web.Response:
        return cors_preflight(request, CORS_ALLOW_HEADERS, "POST, GET, OPTIONS")

    async def _handle_api(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        target = request.headers.get("X-Amz-Target", "")
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        try:
            if operation not in self._operations:
                shown = target[:100] or "(no X-Amz-Target header)"
                raise CognitoError(
                    "UnknownOperationException",
                    f"Unknown operation {shown!r}: the local Cognito emulator implements "
                    f"{', '.join(TARGET_PREFIX + op for op in sorted(self._operations))}.",
                )
            authorization = request.headers.get("Authorization", "")
            if operation not in PUBLIC_OPERATIONS and not authorization.startswith("AWS4-"):
                raise CognitoError(
                    "MissingAuthenticationTokenException",
                    f"{operation} must be SigV4-signed, as on AWS; locally any credentials "
                    "work (e.g. aws_access_key_id='x').",
                )
            body = await self._read_json(request)
            result = self.call(operation, body)
        except CognitoError as err:
            shown = operation if operation in self._operations else "unknown operation"
            log.info("%s -> %s", shown, err.code)
            return self._error_response(err, request_id)
        except Exception:
            # Never log the request body: it holds passwords and tokens.
            log.exception("%s -> internal error", operation)
            err = CognitoError("InternalErrorException", "Internal error in the emulator", 500)
            return self._error_response(err, request_id)
        log.info("%s -> ok", operation)
        return web.Response(
            text=json.dumps(result),
            content_type=AMZ_JSON,
            headers={"x-amzn-RequestId": request_id},
        )

    @staticmethod
    async def _read_json(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise CognitoError("SerializationException", "The request body is not JSON") from None
        if not isinstance(body, dict):
            raise CognitoError("SerializationException", "The request body must be a JSON object")
        return body

    @staticmethod
    def _error_response(err: CognitoError, request_id: str) -> web.Response:
        return web.Response(
            status=err.status,
            text=json.dumps({"__type": err.code, "message": err.message}),
            content_type=AMZ_JSON,
            headers={"x-amzn-ErrorType": err.code, "x-amzn-RequestId": request_id},
        )

    def _unknown_pool(self, pool_id: str) -> web.Response | None:
        """404 for a pool this emulator does not have; None when it has it."""
        with self._lock:
            known = pool_id in self._pools
        if known:
            return None
        return web.json_response({"message": f"User pool {pool_id} does not exist."}, status=404)

    async def _handle_jwks(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool_id"]
        return self._unknown_pool(pool_id) or web.json_response(self.jwks())

    async def _handle_openid_configuration(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pool_id"]
        if (missing := self._unknown_pool(pool_id)) is not None:
            return missing
        return web.json_response(
            {
                "issuer": self.issuer(pool_id),
                "jwks_uri": self.jwks_url(pool_id),
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
            }
        )

    # ----------------------------------------------------------------- lookups

    def _pool(self, pool_id: str) -> _Pool:
        pool = self._pools.get(pool_id)
        if pool is None:
            raise CognitoError("ResourceNotFoundException", f"User pool {pool_id} does not exist.")
        return pool

    def _client(self, client_id: str) -> _Client:
        client = self._clients.get(client_id)
        if client is None:
            raise CognitoError(
                "ResourceNotFoundException", f"User pool client {client_id} does not exist."
            )
        return client

    def _admin_user(self, body: dict[str, Any]) -> tuple[_Pool, _User]:
        pool = self._pool(_req(body, "UserPoolId"))
        user = pool.users.get(pool.key(_req(body, "Username")))
        if user is None:
            raise CognitoError("UserNotFoundException", "User does not exist.")
        return pool, user

    # ----------------------------------------------------------------- pools and clients

    def _create_user_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _req(body, "PoolName")
        if not 1 <= len(name) <= 128:
            raise _invalid("PoolName must be 1 to 128 characters")
        for unsupported in ("UsernameAttributes", "AliasAttributes"):
            if body.get(unsupported):
                raise _invalid(
                    f"{unsupported} is not supported by the local Cognito emulator; "
                    "users sign in with their username."
                )
        policy = self._password_policy(_dict_param(_dict_param(body, "Policies"), "PasswordPolicy"))
        username_config = _dict_param(body, "UsernameConfiguration")
        case_sensitive = _bool_param(username_config, "CaseSensitive", True)
        pool_id = f"{self.region}_{_random_id(_ALNUM, 9)}"
        now = self._clock()
        pool = _Pool(pool_id, name, now, policy, case_sensitive)
        self._pools[pool_id] = pool
        return {"UserPool": self._describe_pool(pool)}

    @staticmethod
    def _password_policy(raw: dict[str, Any]) -> _PasswordPolicy:
        policy = _PasswordPolicy()
        length = _int_param(raw, "MinimumLength")
        if length is not None:
            if not 6 <= length <= 99:
                raise _invalid("PasswordPolicy.MinimumLength must be between 6 and 99")
            policy.minimum_length = length
        policy.require_uppercase = _bool_param(raw, "RequireUppercase", False)
        policy.require_lowercase = _bool_param(raw, "RequireLowercase", False)
        policy.require_numbers = _bool_param(raw, "RequireNumbers", False)
        policy.require_symbols = _bool_param(raw, "RequireSymbols", False)
        days = _int_param(raw, "TemporaryPasswordValidityDays")
        if days is not None:
            if not 0 <= days <= 365:
                raise _invalid("PasswordPolicy.TemporaryPasswordValidityDays must be 0 to 365")
            policy.temporary_password_validity_days = days or 7
        return policy

    def _describe_pool(self, pool: _Pool) -> dict[str, Any]:
        return {
            "Id": pool.pool_id,
            "Name": pool.name,
            "Arn": f"arn:aws:cognito-idp:{self.region}:{ACCOUNT_ID}:userpool/{pool.pool_id}",
            "Policies": {"PasswordPolicy": pool.policy.describe()},
            "CreationDate": pool.created,
            "LastModifiedDate": pool.created,
            "EstimatedNumberOfUsers": len(pool.users),
            "MfaConfiguration": "OFF",
            "DeletionProtection": "INACTIVE",
            "UsernameConfiguration": {"CaseSensitive": pool.case_sensitive},
            "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
        }

    def _describe_user_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"UserPool": self._describe_pool(self._pool(_req(body, "UserPoolId")))}

    def _create_user_pool_client(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(_req(body, "UserPoolId"))
        name = _req(body, "ClientName")
        if not re.fullmatch(r"[\w\s+=,.@-]{1,128}", name):
            raise _invalid("ClientName must be 1 to 128 of letters, digits, spaces and +=,.@-_")
        if _bool_param(body, "GenerateSecret", False) or body.get("ClientSecret"):
            raise _invalid(
                "Client secrets are not supported by the local Cognito emulator (no SECRET_HASH "
                "support); create the app client with GenerateSecret=false, as a browser "
                "client must be."
            )
        explicit, allowed = self._auth_flows(body.get("ExplicitAuthFlows"))
        units = _dict_param(body, "TokenValidityUnits")
        id_s = self._validity(body, units, "IdTokenValidity", "IdToken", "hours", 300, 86400)
        access_s = self._validity(
            body, units, "AccessTokenValidity", "AccessToken", "hours", 300, 86400
        )
        refresh_s = self._validity(
            body, units, "RefreshTokenValidity", "RefreshToken", "days", 3600, 315360000
        )
        prevent = body.get("PreventUserExistenceErrors", "ENABLED")
        if prevent not in ("ENABLED", "LEGACY"):
            raise _invalid("PreventUserExistenceErrors must be ENABLED or LEGACY")
        session_minutes = _int_param(body, "AuthSessionValidity") or 3
        if not 3 <= session_minutes <= 15:
            raise _invalid("AuthSessionValidity must be between 3 and 15 minutes")
        rotation = _dict_param(body, "RefreshTokenRotation")
        feature = rotation.get("Feature", "DISABLED")
        if feature not in ("ENABLED", "DISABLED"):
            raise _invalid("RefreshTokenRotation.Feature must be ENABLED or DISABLED")
        grace = _int_param(rotation, "RetryGracePeriodSeconds") or 0
        if not 0 <= grace <= 60:
            raise _invalid("RefreshTokenRotation.RetryGracePeriodSeconds must be 0 to 60")
        read_attributes = body.get("ReadAttributes") or []
        if not isinstance(read_attributes, list) or not all(
            isinstance(a, str) for a in read_attributes
        ):
            raise _invalid("ReadAttributes must be a list of attribute names")
        client_id = _random_id(_LOWER_ALNUM, 26)
        now = self._clock()
        described: dict[str, Any] = {
            "UserPoolId": pool.pool_id,
            "ClientName": name,
            "ClientId": client_id,
            "CreationDate": now,
            "LastModifiedDate": now,
            "ExplicitAuthFlows": explicit,
            "RefreshTokenValidity": body.get("RefreshTokenValidity") or 30,
            "PreventUserExistenceErrors": prevent,
            "EnableTokenRevocation": _bool_param(body, "EnableTokenRevocation", True),
            "AuthSessionValidity": session_minutes,
            "AllowedOAuthFlowsUserPoolClient": False,
            "RefreshTokenRotation": {"Feature": feature, "RetryGracePeriodSeconds": grace},
        }
        for optional in ("IdTokenValidity", "AccessTokenValidity", "TokenValidityUnits"):
            if body.get(optional) is not None:
                described[optional] = body[optional]
        if read_attributes:
            described["ReadAttributes"] = read_attributes
        client = _Client(
            client_id=client_id,
            name=name,
            pool_id=pool.pool_id,
            created=now,
            explicit_flows=explicit,
            allowed=allowed,
            id_validity_s=id_s,
            access_validity_s=access_s,
            refresh_validity_s=refresh_s or 30 * 86400,
            described=described,
            read_attributes=read_attributes,
            prevent_user_existence_errors=prevent == "ENABLED",
            token_revocation=described["EnableTokenRevocation"],
            auth_session_validity_s=session_minutes * 60,
            rotation=feature == "ENABLED",
            rotation_grace_s=grace,
        )
        pool.clients[client_id] = client
        self._clients[client_id] = client
        return {"UserPoolClient": dict(described)}

    @staticmethod
    def _auth_flows(raw: Any) -> tuple[list[str], frozenset[str]]:
        if raw is None:
            return list(_DEFAULT_FLOWS), frozenset(_DEFAULT_FLOWS)
        if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
            raise _invalid("ExplicitAuthFlows must be a list of strings")
        unknown = [f for f in raw if f not in _ALLOW_FLOWS and f not in _LEGACY_FLOWS]
        if unknown:
            raise _invalid(f"Unknown ExplicitAuthFlows value(s): {', '.join(unknown)}")
        legacy = [f for f in raw if f in _LEGACY_FLOWS]
        if legacy and len(legacy) != len(raw):
            raise _invalid("ExplicitAuthFlow values cannot mix legacy names with ALLOW_ names")
        if legacy:
            allowed = {_LEGACY_FLOWS[f] for f in legacy}
            allowed |= {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
            return list(raw), frozenset(allowed)
        return list(raw), frozenset(raw)

    @staticmethod
    def _validity(
        body: dict[str, Any],
        units: dict[str, Any],
        name: str,
        unit_key: str,
        default_unit: str,
        lo_s: int,
        hi_s: int,
    ) -> int | None:
        value = _int_param(body, name)
        if not value:  # absent, or 0 which Cognito treats as "use the default"
            return None
        unit = units.get(unit_key, default_unit)
        if unit not in _UNIT_SECONDS:
            raise _invalid(f"TokenValidityUnits.{unit_key} must be seconds, minutes, hours or days")
        seconds = value * _UNIT_SECONDS[unit]
        if not lo_s <= seconds <= hi_s:
            raise _invalid(f"{name} must be between {lo_s} and {hi_s} seconds, got {seconds}")
        return seconds

    def _describe_user_pool_client(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(_req(body, "UserPoolId"))
        client_id = _req(body, "ClientId")
        client = pool.clients.get(client_id)
        if client is None:
            raise CognitoError(
                "ResourceNotFoundException", f"User pool client {client_id} does not exist."
            )
        return {"UserPoolClient": dict(client.described)}

    # ----------------------------------------------------------------- admin user calls

    def _admin_create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(_req(body, "UserPoolId"))
        username = _req(body, "Username")
        if not _USERNAME_RE.fullmatch(username):
            raise _invalid("Username must be 1 to 128 characters without whitespace")
        action = body.get("MessageAction")
        if action not in (None, "SUPPRESS", "RESEND"):
            raise _invalid("MessageAction must be SUPPRESS or RESEND")
        temporary = _opt_str(body, "TemporaryPassword")
        if temporary is not None:
            pool.policy.check(temporary)
        else:
            # Cognito generates one and mails it; we send nothing, so nobody can learn it.
            temporary = f"{secrets.token_urlsafe(18)}Aa1!"
        existing = pool.users.get(pool.key(username))
        now = self._clock()
        if action == "RESEND":
            if existing is None:
                raise CognitoError("UserNotFoundException", "User does not exist.")
            if existing.status != "FORCE_CHANGE_PASSWORD":
                raise CognitoError("UnsupportedUserStateException", "User is already confirmed.")
            existing.password, existing.modified = temporary, now
            return {"User": self._user_type(existing)}
        if existing is not None:
            raise CognitoError("UsernameExistsException", "User account already exists")
        if action is None:
            log.info("AdminCreateUser: no invitation sent (the emulator sends no messages)")
        user = _User(
            username=username,
            sub=str(uuid.uuid4()),
            attributes=self._attributes(body.get("UserAttributes")),
            password=temporary,
            status="FORCE_CHANGE_PASSWORD",
            created=now,
            modified=now,
        )
        pool.users[pool.key(username)] = user
        return {"User": self._user_type(user)}

    @staticmethod
    def _attributes(raw: Any, into: dict[str, str] | None = None) -> dict[str, str]:
        attributes = dict(into or {})
        if raw is None:
            return attributes
        if not isinstance(raw, list):
            raise _invalid("UserAttributes must be a list of {Name, Value}")
        for item in raw:
            name = item.get("Name") if isinstance(item, dict) else None
            value = item.get("Value", "") if isinstance(item, dict) else None
            if not isinstance(name, str) or not isinstance(value, str) or not name:
                raise _invalid("Each user attribute needs a string Name and Value")
            if name == "sub":
                raise _invalid("Cannot modify the non-mutable attribute sub")
            if name in _BOOLEAN_ATTRIBUTES and value not in ("true", "false"):
                raise _invalid(f"{name} must be 'true' or 'false'")
            attributes[name] = value
        return attributes

    @staticmethod
    def _user_type(user: _User) -> dict[str, Any]:
        return {
            "Username": user.username,
            "Attributes": user.attribute_list(),
            "UserCreateDate": user.created,
            "UserLastModifiedDate": user.modified,
            "Enabled": True,
            "UserStatus": user.status,
        }

    def _admin_set_user_password(self, body: dict[str, Any]) -> dict[str, Any]:
        pool, user = self._admin_user(body)
        password = _req(body, "Password")
        pool.policy.check(password)
        permanent = _bool_param(body, "Permanent", False)
        user.password = password
        user.status = "CONFIRMED" if permanent else "FORCE_CHANGE_PASSWORD"
        user.modified = self._clock()
        return {}

    def _admin_get_user(self, body: dict[str, Any]) -> dict[str, Any]:
        _, user = self._admin_user(body)
        # The same fields as a UserType, except that AdminGetUser names the list differently.
        info = self._user_type(user)
        info["UserAttributes"] = info.pop("Attributes")
        return info

    def _admin_delete_user(self, body: dict[str, Any]) -> dict[str, Any]:
        pool, user = self._admin_user(body)
        del pool.users[pool.key(user.username)]
        self._revoke_sessions(s for s in self._sessions.values() if s.sub == user.sub)
        self._challenges = {
            k: c
            for k, c in self._challenges.items()
            if not (c.pool_id == pool.pool_id and c.user_key == pool.key(user.username))
        }
        return {}

    # ----------------------------------------------------------------- sign-in

    def _check_flow(self, client: _Client, flow: str) -> None:
        permission = _FLOW_PERMISSION.get(flow)
        if permission is None:
            raise _invalid(f"Unknown AuthFlow {flow[:40]!r}")
        if permission not in client.allowed:
            raise _invalid(f"{flow} flow not enabled for this client")

    def _initiate_auth(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._client(_req(body, "ClientId"))
        flow = _req(body, "AuthFlow")
        self._check_flow(client, flow)
        params = _dict_param(body, "AuthParameters")
        if flow == "USER_PASSWORD_AUTH":
            return self._password_auth(client, params)
        if flow in ("REFRESH_TOKEN_AUTH", "REFRESH_TOKEN"):
            token = _req(params, "REFRESH_TOKEN")
            session, _ = self._refresh_session(client, token, reuse_code="NotAuthorizedException")
            return {"ChallengeParameters": {}, "AuthenticationResult": self._tokens(session)}
        raise CognitoError(
            "UnsupportedOperationException",
            f"AuthFlow {flow} is not implemented by the local Cognito emulator; "
            "use USER_PASSWORD_AUTH.",
        )

    def _password_auth(self, client: _Client, params: dict[str, Any]) -> dict[str, Any]:
        username = _req(params, "USERNAME")
        password = _req(params, "PASSWORD")
        pool = self._pools[client.pool_id]
        user = pool.users.get(pool.key(username))
        if user is None:
            if client.prevent_user_existence_errors:
                raise CognitoError("NotAuthorizedException", INCORRECT_CREDENTIALS)
            raise CognitoError("UserNotFoundException", "User does not exist.")
        if not secrets.compare_digest(user.password.encode(), password.encode()):
            raise CognitoError("NotAuthorizedException", INCORRECT_CREDENTIALS)
        now = self._clock()
        if user.status == "FORCE_CHANGE_PASSWORD":
            validity_s = pool.policy.temporary_password_validity_days * 86400
            if now - user.modified > validity_s:
                raise CognitoError(
                    "NotAuthorizedException",
                    "Temporary password has expired and must be reset by an administrator.",
                )
            session_token = secrets.token_urlsafe(96)
            self._challenges[session_token] = _Challenge(
                pool.pool_id,
                client.client_id,
                pool.key(username),
                now + client.auth_session_validity_s,
            )
            return {
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "Session": session_token,
                "ChallengeParameters": {
                    "USER_ID_FOR_SRP": user.username,
                    "requiredAttributes": "[]",
                    "userAttributes": json.dumps(user.attributes),
                },
            }
        return self._sign_in(pool, client, user)

    def _sign_in(self, pool: _Pool, client: _Client, user: _User) -> dict[str, Any]:
        now = self._clock()
        session = _Session(
            pool_id=pool.pool_id,
            client_id=client.client_id,
            sub=user.sub,
            username=user.username,
            origin_jti=str(uuid.uuid4()),
            event_id=str(uuid.uuid4()),
            auth_time=int(now),
            expires_at=now + client.refresh_validity_s,
        )
        self._sessions[session.origin_jti] = session
        refresh_token = self._new_refresh_token(session)
        result = self._tokens(session)
        result["RefreshToken"] = refresh_token
        return {"ChallengeParameters": {}, "AuthenticationResult": result}

    def _new_refresh_token(self, session: _Session) -> str:
        # Opaque on purpose: clients must not read anything into it.
        token = secrets.token_urlsafe(96)
        self._refresh_tokens[token] = _RefreshRecord(session)
        return token

    def _respond_to_auth_challenge(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._client(_req(body, "ClientId"))
        name = _req(body, "ChallengeName")
        if name != "NEW_PASSWORD_REQUIRED":
            raise _invalid(
                f"ChallengeName {name[:40]!r} is not implemented by the local Cognito emulator; "
                "only NEW_PASSWORD_REQUIRED is."
            )
        responses = _dict_param(body, "ChallengeResponses")
        username = _req(responses, "USERNAME")
        new_password = _req(responses, "NEW_PASSWORD")
        session_token = _req(body, "Session")
        challenge = self._challenges.get(session_token)
        pool = self._pools[client.pool_id]
        if (
            challenge is None
            or challenge.client_id != client.client_id
            or challenge.user_key != pool.key(username)
        ):
            raise CognitoError("NotAuthorizedException", "Invalid session for the user.")
        if self._clock() > challenge.expires_at:
            raise CognitoError(
                "NotAuthorizedException", "Invalid session for the user, session is expired."
            )
        user = pool.users.get(challenge.user_key)
        if user is None:
            raise CognitoError("NotAuthorizedException", "Invalid session for the user.")
        pool.policy.check(new_password)  # the session stays usable so the user can retry
        extra = [
            {"Name": k.removeprefix("userAttributes."), "Value": v}
            for k, v in responses.items()
            if k.startswith("userAttributes.")
        ]
        user.attributes = self._attributes(extra, into=user.attributes)
        user.password = new_password
        user.status = "CONFIRMED"
        user.modified = self._clock()
        del self._challenges[session_token]  # single use
        return self._sign_in(pool, client, user)

    # ----------------------------------------------------------------- refresh and sign-out

    def _refresh_session(
        self, client: _Client, token: str, *, reuse_code: str
    ) -> tuple[_Session, _RefreshRecord]:
        record = self._refresh_tokens.get(token)
        if record is None or record.session.client_id != client.client_id:
            raise CognitoError("NotAuthorizedException", "Invalid Refresh Token")
        session = record.session
        now = self._clock()
        if session.revoked:
            raise CognitoError("NotAuthorizedException", REFRESH_REVOKED)
        if record.rotated_until is not None and now >= record.rotated_until:
            raise CognitoError(reuse_code, "Refresh token has been rotated and is no longer valid")
        if now > session.expires_at:
            raise CognitoError("NotAuthorizedException", "Refresh Token has expired")
        pool = self._pools.get(session.pool_id)
        user = pool.users.get(pool.key(session.username)) if pool else None
        if user is None or user.sub != session.sub:
            raise CognitoError("NotAuthorizedException", "User does not exist.")
        return session, record

    def _get_tokens_from_refresh_token(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._client(_req(body, "ClientId"))
        if body.get("ClientSecret"):
            raise _invalid("Client secrets are not supported by the local Cognito emulator")
        self._check_flow(client, "REFRESH_TOKEN_AUTH")
        token = _req(body, "RefreshToken")
        session, record = self._refresh_session(
            client, token, reuse_code="RefreshTokenReuseException"
        )
        result = self._tokens(session)
        if client.rotation:
            # A retry within the grace period also gets a fresh token: it lost the first one.
            if record.rotated_until is None:
                record.rotated_until = self._clock() + client.rotation_grace_s
            result["RefreshToken"] = self._new_refresh_token(session)
        else:
            result["RefreshToken"] = token
        return {"AuthenticationResult": result}

    def _revoke_token(self, body: dict[str, Any]) -> dict[str, Any]:
        token = _req(body, "Token")
        client_id = _req(body, "ClientId")
        client = self._clients.get(client_id)
        if client is None:
            raise CognitoError("UnauthorizedException", f"Client {client_id} is not authorized.")
        if not client.token_revocation:
            raise CognitoError(
                "UnsupportedOperationException", "Token revocation is not enabled for this client."
            )
        if token.count(".") == 2:
            raise CognitoError(
                "UnsupportedTokenTypeException", "Only refresh tokens can be revoked."
            )
        record = self._refresh_tokens.get(token)
        if record is None:
            return {}  # RFC 7009: revoking an unknown token is not an error
        if record.session.client_id != client_id:
            raise CognitoError(
                "UnauthorizedException", "The refresh token was not issued to this client."
            )
        # Revoking a refresh token also revokes the access tokens of its session.
        self._revoke_sessions([record.session])
        return {}

    def _revoke_sessions(self, sessions: Iterable[_Session]) -> None:
        for session in list(sessions):
            session.revoked = True

    def _global_sign_out(self, body: dict[str, Any]) -> dict[str, Any]:
        _, user = self._access_token_user(_req(body, "AccessToken"))
        self._revoke_sessions(s for s in self._sessions.values() if s.sub == user.sub)
        return {}

    def _get_user(self, body: dict[str, Any]) -> dict[str, Any]:
        _, user = self._access_token_user(_req(body, "AccessToken"))
        return {"Username": user.username, "UserAttributes": user.attribute_list()}

    def _access_token_user(self, token: str) -> tuple[_Pool, _User]:
        try:
            # exp is checked against our clock below, not PyJWT's wall clock.
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise CognitoError("NotAuthorizedException", "Invalid Access Token") from None
        if claims.get("token_use") != "access":
            raise CognitoError("NotAuthorizedException", "Invalid Access Token")
        iss = str(claims.get("iss", ""))
        prefix = f"{self.issuer_base}/"
        pool = self._pools.get(iss[len(prefix) :]) if iss.startswith(prefix) else None
        if pool is None:
            raise CognitoError("NotAuthorizedException", "Invalid Access Token")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or self._clock() >= exp:
            raise CognitoError("NotAuthorizedException", "Access Token has expired")
        session = self._sessions.get(str(claims.get("origin_jti", "")))
        if session is None or session.revoked:
            raise CognitoError("NotAuthorizedException", "Access Token has been revoked")
        user = pool.users.get(pool.key(str(claims.get("username", ""))))
        if user is None or user.sub != claims.get("sub"):
            raise CognitoError("UserNotFoundException", "User does not exist.")
        return pool, user

    # ----------------------------------------------------------------- tokens

    def _tokens(self, session: _Session) -> dict[str, Any]:
        pool = self._pools[session.pool_id]
        client = self._clients[session.client_id]
        user = pool.users[pool.key(session.username)]
        now = int(self._clock())
        access_s = client.access_validity_s or self._token_validity_s
        access = {
            "sub": user.sub,
            "iss": self.issuer(pool.pool_id),
            "client_id": client.client_id,
            "origin_jti": session.origin_jti,
            "event_id": session.event_id,
            "token_use": "access",
            "scope": ACCESS_TOKEN_SCOPE,
            "auth_time": session.auth_time,
            "exp": now + access_s,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "username": user.username,
        }
        id_claims = self._id_claims(pool, client.client_id, client, user, session, now)
        return {
            "AccessToken": self._sign(access),
            "ExpiresIn": access_s,
            "TokenType": "Bearer",
            "IdToken": self._sign(id_claims),
        }

    def _id_claims(
        self,
        pool: _Pool,
        client_id: str,
        client: _Client | None,
        user: _User,
        session: _Session,
        now: int,
    ) -> dict[str, Any]:
        validity = (client.id_validity_s if client else None) or self._token_validity_s
        readable = client.read_attributes if client else []
        claims: dict[str, Any] = {"sub": user.sub}
        for name, value in user.attributes.items():
            # An empty ReadAttributes list means every attribute is readable, as on AWS.
            if readable and name not in readable:
                continue
            claims[name] = value == "true" if name in _BOOLEAN_ATTRIBUTES else value
        claims.update(
            {
                "iss": self.issuer(pool.pool_id),
                "cognito:username": user.username,
                "origin_jti": session.origin_jti,
                "aud": client_id,
                "event_id": session.event_id,
                "token_use": "id",
                "auth_time": session.auth_time,
                "exp": now + validity,
                "iat": now,
                "jti": str(uuid.uuid4()),
            }
        )
        return claims

    def _sign(self, claims: dict[str, Any]) -> str:
        # Cognito's header is just {"kid", "alg"}: drop PyJWT's default "typ".
        return jwt.encode(
            claims, self._private_key, algorithm="RS256", headers={"kid": self.kid, "typ": None}
        )


# --------------------------------------------------------------------- command line


async def _serve(args: argparse.Namespace) -> None:
    emulator = CognitoEmulator(region=args.region, token_validity_s=args.token_validity)
    await emulator.start(args.host, args.port)
    try:
        info = emulator.ensure_pool_with_user(
            args.pool_name,
            args.client_name,
            args.username,
            args.password or f"{secrets.token_urlsafe(15)}Aa1!",
            args.email,
        )
        # The product output (like .local/endpoints.json), not a log line.
        print(
            json.dumps({"endpoint": emulator.endpoint, "region": args.region, **info}), flush=True
        )
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stopped.set)
        await stopped.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local.cognito", description="Local Cognito user-pool emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--pool-name", default="local-pool")
    parser.add_argument("--client-name", default="local-client")
    parser.add_argument("--username", default="local-user")
    parser.add_argument("--password", default=None, help="default: a random one, printed")
    parser.add_argument("--email", default="local-user@example.com")
    parser.add_argument("--token-validity", type=int, default=3600, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
