"""Cognito ID-token verification (docs/security.md), shared by every Python entry point.

RS256 only, against the user pool's JWKS (cached; refetched on an unknown
``kid`` at most once per interval so forged ``kid`` values cannot make us hammer
the JWKS endpoint), ``iss`` = the pool issuer, ``aud`` = the app client,
``token_use`` = ``id``, ``exp``/``nbf``/``iat`` with bounded leeway. Every rejection
is a ``TokenError`` with a short reason that is safe to log; callers answer every
rejection the same way and keep the reason for the log.

Any failure while verifying is a rejection, never another exception: the header is
parsed here (not by the JWT library) so a malformed one (``kid: null``, a numeric
``kid``, ``crit``, a header that is not an object, bad base64, an oversized token) is a
``TokenError`` like any other. The Node verifier (node_function/src/jwt.mjs) gives the
same verdict and reason for every case of ``tests/vectors/jwt.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from chalicelib.protocol import LIMITS

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
# Cognito ID tokens are a few KB; API Gateway caps a header at 10 KB. Anything longer is
# refused before any parsing.
MAX_TOKEN_CHARS: int = LIMITS["maxTokenChars"]
_TIME_CLAIMS = ("exp", "nbf", "iat")


class TokenError(Exception):
    """The token is not acceptable; ``reason`` says why in a few words (for logs only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MAX_JWKS_BYTES = 1024 * 1024


def _http_get_json(url: str, timeout_s: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body = resp.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS response too large")
    return json.loads(body)


class JwksCache:
    """Signing keys by ``kid``, fetched lazily and refreshed sparingly.

    A fetch that fails is retried with exponential backoff while the request's fetch
    budget (``budget_s``) lasts. A failed fetch is not remembered as a fetch: the next
    request tries again (after ``failure_cooldown_s``), so a JWKS endpoint that was down
    for a moment does not lock every user out for the refetch interval.
    """

    def __init__(
        self,
        url: str,
        *,
        refetch_interval_s: float = 60.0,
        fetch: Callable[[str, float], dict[str, Any]] = _http_get_json,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 2.0,
        budget_s: float = 5.0,
        retry_base_s: float = 0.1,
        failure_cooldown_s: float = 1.0,
    ) -> None:
        self._url = url
        self._interval = refetch_interval_s
        self._fetch = fetch
        self._clock = clock
        self._sleep = sleep
        self._timeout = timeout_s
        self._budget = budget_s
        self._retry_base = retry_base_s
        self._cooldown = failure_cooldown_s
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self.fetches = 0
        self._lock = threading.Lock()

    def _fetch_with_retries(self) -> dict[str, Any]:
        deadline = self._clock() + self._budget
        delay = self._retry_base
        while True:
            self.fetches += 1
            remaining = deadline - self._clock()
            try:
                data = self._fetch(self._url, max(0.05, min(self._timeout, remaining)))
                if not isinstance(data, dict):
                    raise ValueError("the JWKS is not a JSON object")
                return data
            except Exception as exc:  # network, HTTP status, JSON alike
                remaining = deadline - self._clock()
                if remaining <= delay:
                    raise TokenError("signing keys unavailable") from exc
                log.info("JWKS fetch failed; retrying", extra={"retryInS": delay})
                self._sleep(delay)
                delay *= 2

    def _refresh(self) -> None:
        try:
            data = self._fetch_with_retries()
            keyset = PyJWKSet.from_dict(data)
        except Exception as exc:
            self._failed_at = self._clock()
            if isinstance(exc, TokenError):
                raise
            raise TokenError("signing keys unavailable") from exc
        self._fetched_at = self._clock()
        self._failed_at = None
        self._keys = {k.key_id: k for k in keyset.keys if isinstance(k.key_id, str) and k.key_id}

    def key(self, kid: str) -> PyJWK | None:
        with self._lock:
            now = self._clock()
            if self._failed_at is not None and now - self._failed_at < self._cooldown:
                if kid not in self._keys:
                    raise TokenError("signing keys unavailable")
            elif self._fetched_at is None:
                self._refresh()
            elif kid not in self._keys and now - self._fetched_at >= self._interval:
                # Keys rotate; an unknown kid may be a new key. At most once per interval.
                self._refresh()
            return self._keys.get(kid)


_PYJWT_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "invalid signature"),
    (jwt.MissingRequiredClaimError, "missing required claim"),
    (jwt.DecodeError, "malformed token"),
]


def _b64_json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError("malformed token") from None


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, checked for shape only."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token too large")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0]:
        raise TokenError("malformed token")
    header = _b64_json(parts[0])
    if not isinstance(header, dict):
        raise TokenError("malformed token")
    return header


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_claim_types(claims: dict[str, Any]) -> None:
    """Registered claims of the wrong JSON type make the token malformed (as aws-jwt-verify
    has it): a numeric string or a boolean is not a NumericDate (RFC 7519 2)."""
    for name in _TIME_CLAIMS:
        if name in claims and not (_is_number(claims[name]) and math.isfinite(claims[name])):
            raise TokenError("malformed token")
    for name in ("iss", "sub", "scope", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenError("malformed token")
    aud = claims.get("aud", "")
    if not isinstance(aud, str) and not (
        isinstance(aud, list) and all(isinstance(a, str) for a in aud)
    ):
        raise TokenError("malformed token")


class JwtVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        jwks: JwksCache,
        leeway_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= leeway_s <= 60:
            raise ValueError("leeway must be between 0 and 60 seconds")
        self._issuer = issuer
        self.client_id = client_id
        self._jwks = jwks
        self._leeway = leeway_s
        self._clock = clock

    def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims if it is a valid ID token of our pool and client."""
        claims = self.verified_claims(token)
        if claims.get("token_use") != "id":
            raise TokenError("not an ID token")
        if claims.get("aud") != self.client_id:
            raise TokenError("wrong audience")
        return claims

    def verified_claims(self, token: str | None) -> dict[str, Any]:
        """The claims of a token signed by our pool and currently valid, whatever its
        ``token_use`` and audience (``verify`` checks those)."""
        try:
            return self._verified_claims(token)
        except TokenError:
            raise
        except Exception:
            # Whatever a library raises on input we did not foresee is a rejection too.
            log.warning("token verification failed unexpectedly", exc_info=True)
            raise TokenError("invalid token") from None

    def _verified_claims(self, token: str | None) -> dict[str, Any]:
        if not token or not isinstance(token, str):
            raise TokenError("missing token")
        header = unverified_header(token)
        alg = header.get("alg")
        if alg != ALGORITHM:
            # Covers "none" and HS256 signed with the public key (key confusion).
            raise TokenError(
                f"unsupported algorithm {alg[:16]}"
                if isinstance(alg, str)
                else "unsupported algorithm"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id")
        if "crit" in header:
            # RFC 7515 4.1.11: a recipient must refuse extensions it does not understand,
            # and we understand none.
            raise TokenError("unsupported critical header")
        key = self._jwks.key(kid)
        if key is None:
            raise TokenError("unknown signing key")
        if key.public_key_use not in (None, "sig"):
            # A key published for encryption never verifies a signature (RFC 7517 4.2).
            raise TokenError("unusable signing key")
        try:
            claims: Any = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_aud": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError as exc:
            for exc_type, reason in _PYJWT_REASONS:
                if isinstance(exc, exc_type):
                    raise TokenError(reason) from None
            raise TokenError("invalid token") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed token")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """The claim checks, in the same order as the Node verifier."""
        _check_claim_types(claims)
        now = self._clock()
        if "exp" in claims and claims["exp"] + self._leeway < now:
            raise TokenError("token expired")
        if "nbf" in claims and claims["nbf"] - self._leeway > now:
            raise TokenError("token not yet valid")
        if claims.get("iss") != self._issuer:
            raise TokenError("wrong issuer")
        for name in ("exp", "iat", "iss", "sub", "token_use"):
            if claims.get(name) is None:
                raise TokenError("missing required claim")
        if "iat" in claims and claims["iat"] - self._leeway > now:
            # Cognito never issues a token dated in the future.
            raise TokenError("token issued in the future")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise TokenError("missing required claim")


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
