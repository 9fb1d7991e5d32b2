"""Cognito ID-token verification (docs/security.md), shared by every Python entry point.

RS256 only, against the user pool's JWKS (cached; refetched on an unknown
``kid`` at most once per interval so forged ``kid`` values cannot make us hammer
the JWKS endpoint), ``iss`` = the pool issuer, ``aud`` = the app client,
``token_use`` = ``id``, ``exp``/``nbf`` with bounded leeway. Every rejection
carries a short reason that is safe to log and to show.

``accept_access_tokens=True`` also accepts the pool's access tokens (``token_use`` =
``access``, app client in ``client_id``; they carry no ``aud``), as AppSync's user-pool
authorization does; the local AppSync emulator uses it. The app's own entry points keep
the default and accept ID tokens only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

ALGORITHM = "RS256"


class TokenError(Exception):
    """The token is not acceptable; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _http_get_json(url: str, timeout_s: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


class JwksCache:
    """Signing keys by ``kid``, fetched lazily and refreshed sparingly."""

    def __init__(
        self,
        url: str,
        *,
        refetch_interval_s: float = 60.0,
        fetch: Callable[[str, float], dict[str, Any]] = _http_get_json,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._interval = refetch_interval_s
        self._fetch = fetch
        self._clock = clock
        self._timeout = timeout_s
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            data = self._fetch(self._url, self._timeout)
            keyset = PyJWKSet.from_dict(data)
        except Exception as exc:  # network, JSON or key-format problems alike
            raise TokenError("signing keys unavailable") from exc
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}

    def key(self, kid: str) -> PyJWK | None:
        with self._lock:
            if self._fetched_at is None:
                self._refresh()
            elif kid not in self._keys and self._clock() - self._fetched_at >= self._interval:
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


class JwtVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        jwks: JwksCache,
        leeway_s: float = 60.0,
        accept_access_tokens: bool = False,
    ) -> None:
        if not 0 <= leeway_s <= 60:
            raise ValueError("leeway must be between 0 and 60 seconds")
        self._issuer = issuer
        self._client_id = client_id
        self._jwks = jwks
        self._leeway = leeway_s
        self._accept_access_tokens = accept_access_tokens

    def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims if it is a valid ID token of our pool and client.

        With ``accept_access_tokens`` an access token of our pool and client is valid too;
        ``claims["token_use"]`` tells the caller which one it got.
        """
        if not token or not isinstance(token, str):
            raise TokenError("missing token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            # Covers "none" and HS256 signed with the public key (key confusion).
            raise TokenError(f"unsupported algorithm {str(alg)[:16]}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id")
        key = self._jwks.key(kid)
        if key is None:
            raise TokenError("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                leeway=self._leeway,
                # Audience is checked below, after token_use, so an access token
                # (which has client_id, not aud) is named for what it is.
                options={"require": ["exp", "iat", "iss", "sub", "token_use"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            for exc_type, reason in _PYJWT_REASONS:
                if isinstance(exc, exc_type):
                    raise TokenError(reason) from None
            raise TokenError("invalid token") from None
        token_use = claims.get("token_use")
        if token_use == "access" and self._accept_access_tokens:
            # Access tokens name the app client in client_id and have no aud.
            if claims.get("client_id") != self._client_id:
                raise TokenError("wrong client")
            return claims
        if token_use != "id":
            raise TokenError(
                "not an ID or access token" if self._accept_access_tokens else "not an ID token"
            )
        if claims.get("aud") != self._client_id:
            raise TokenError("wrong audience")
        return claims


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
