"""The shared JWT vectors (tests/vectors/jwt.json), which node_function/test runs too: both
verifiers give the same verdict and reason for every header and claim case."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from chalicelib.jwt_verify import JwksCache, JwtVerifier, TokenError
from tests.support.tokens import SigningKey

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "jwt.json").read_text("utf-8")
)
KEY = SigningKey()
STRANGER = SigningKey(kid=KEY.kid)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _merge(base: dict[str, Any], changes: dict[str, Any], omit: list[str]) -> dict[str, Any]:
    out = {**base, **changes}
    for name in omit:
        out.pop(name, None)
    return out


def build_token(case: dict[str, Any], now: int) -> str:
    if "token" in case:
        return case["token"]
    header = _merge(
        {"alg": "RS256", "typ": "JWT", "kid": KEY.kid},
        case.get("header", {}),
        case.get("headerOmit", []),
    )
    claims = {
        "sub": "user-1",
        "aud": VECTORS["clientId"],
        "iss": VECTORS["issuer"],
        "token_use": "id",
        "cognito:username": "user-1",
        "iat": now,
        "auth_time": now,
        "exp": now + 3600,
    }
    claims.update({name: now + offset for name, offset in case.get("times", {}).items()})
    claims = _merge(claims, case.get("claims", {}), case.get("claimsOmit", []))
    if "padClaimChars" in case:
        claims["pad"] = "x" * case["padClaimChars"]
    head = case.get("headerSegment") or _b64(case.get("headerJson", json.dumps(header)).encode())
    body = _b64(case.get("payloadJson", json.dumps(claims)).encode())
    signer = STRANGER if case.get("signWith") == "stranger" else KEY
    signature = signer.private.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(signature)}"


def verifier_for(case: dict[str, Any]) -> JwtVerifier:
    jwk = _merge(KEY.jwk(), case.get("key", {}), case.get("keyOmit", []))
    cache = JwksCache("https://jwks.invalid", fetch=lambda url, timeout: {"keys": [jwk]})
    return JwtVerifier(
        issuer=VECTORS["issuer"],
        client_id=VECTORS["clientId"],
        jwks=cache,
        leeway_s=VECTORS["leewayS"],
    )


@pytest.mark.security("auth")
@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_jwt_vector(case):
    token = build_token(case, int(time.time()))
    verifier = verifier_for(case)
    if case["ok"]:
        assert verifier.verify(token)["sub"] == "user-1"
    else:
        with pytest.raises(TokenError) as refused:
            verifier.verify(token)
        assert refused.value.reason == case["reason"]
