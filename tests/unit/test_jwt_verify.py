import base64
import json

import pytest

from chalicelib.jwt_verify import JwksCache, JwtVerifier, TokenError, bearer_token
from tests.support.tokens import (
    CLIENT_ID,
    ISSUER,
    SigningKey,
    hs256_with_public_key,
    id_claims,
    sign,
    unsigned,
)


class FakeJwks:
    """Serves a JWKS document and counts fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, url: str, timeout: float) -> dict:
        self.fetches += 1
        return {"keys": [k.jwk() for k in self.keys]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def jwks(key: SigningKey) -> FakeJwks:
    return FakeJwks(key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(jwks: FakeJwks, clock: Clock) -> JwtVerifier:
    cache = JwksCache("http://jwks.invalid", fetch=jwks, clock=clock, refetch_interval_s=60)
    return JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache, leeway_s=60)


def reason(verifier: JwtVerifier, token: str | None) -> str:
    with pytest.raises(TokenError) as exc:
        verifier.verify(token)
    return exc.value.reason


def test_valid_id_token_returns_its_claims(verifier, key):
    claims = verifier.verify(sign(id_claims("alice"), key))
    assert claims["sub"] == "alice"
    assert claims["token_use"] == "id"


def test_expired_token_is_rejected_beyond_the_leeway(verifier, key):
    token = sign(id_claims(exp=int(__import__("time").time()) - 61), key)
    assert reason(verifier, token) == "token expired"


def test_expiry_within_the_leeway_is_accepted(verifier, key):
    token = sign(id_claims(exp=int(__import__("time").time()) - 30), key)
    assert verifier.verify(token)["sub"] == "user-1"


def test_token_not_yet_valid_is_rejected(verifier, key):
    token = sign(id_claims(nbf=int(__import__("time").time()) + 3600), key)
    assert reason(verifier, token) == "token not yet valid"


def test_wrong_issuer_is_rejected(verifier, key):
    token = sign(id_claims(iss="https://cognito-idp.us-east-1.amazonaws.com/other"), key)
    assert reason(verifier, token) == "wrong issuer"


def test_wrong_audience_is_rejected(verifier, key):
    assert reason(verifier, sign(id_claims(aud="another-client"), key)) == "wrong audience"


def test_access_token_is_rejected(verifier, key):
    claims = id_claims(token_use="access", aud=None, client_id=CLIENT_ID)
    assert reason(verifier, sign(claims, key)) == "not an ID token"


def test_access_token_of_our_client_is_rejected_by_default_too(verifier, key):
    # The default must not change: only ID tokens, whatever the access token carries.
    claims = id_claims(token_use="access", client_id=CLIENT_ID)
    assert reason(verifier, sign(claims, key)) == "not an ID token"


def access_claims(sub: str = "user-1", **overrides) -> dict:
    return id_claims(
        sub, **{"token_use": "access", "aud": None, "client_id": CLIENT_ID, **overrides}
    )


@pytest.fixture
def lenient(jwks: FakeJwks, clock: Clock) -> JwtVerifier:
    """A verifier that also accepts access tokens (AppSync's user-pool authorization)."""
    cache = JwksCache("http://jwks.invalid", fetch=jwks, clock=clock, refetch_interval_s=60)
    return JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache, accept_access_tokens=True)


def test_accepting_access_tokens_accepts_one_of_our_client(lenient, key):
    claims = lenient.verify(sign(access_claims("alice"), key))
    assert claims["sub"] == "alice"
    assert claims["token_use"] == "access"


def test_accepting_access_tokens_still_accepts_id_tokens(lenient, key):
    assert lenient.verify(sign(id_claims("bob"), key))["token_use"] == "id"


def test_an_access_token_of_another_client_is_rejected(lenient, key):
    token = sign(access_claims(client_id="another-client"), key)
    assert reason(lenient, token) == "wrong client"


def test_an_access_token_without_client_id_is_rejected(lenient, key):
    assert reason(lenient, sign(access_claims(client_id=None), key)) == "wrong client"


def test_id_tokens_keep_the_audience_check_when_access_tokens_are_accepted(lenient, key):
    token = sign(id_claims(aud="another-client"), key)
    assert reason(lenient, token) == "wrong audience"


def test_accepting_access_tokens_rejects_other_token_uses(lenient, key):
    token = sign(id_claims(token_use="refresh"), key)
    assert reason(lenient, token) == "not an ID or access token"


def test_an_expired_access_token_is_rejected(lenient, key):
    token = sign(access_claims(exp=int(__import__("time").time()) - 61), key)
    assert reason(lenient, token) == "token expired"


def test_alg_none_is_rejected(verifier, key):
    assert reason(verifier, unsigned(id_claims(), key.kid)) == "unsupported algorithm none"


def test_hs256_signed_with_the_public_key_is_rejected(verifier, key):
    token = hs256_with_public_key(id_claims(), key)
    assert reason(verifier, token) == "unsupported algorithm HS256"


def test_unknown_kid_is_rejected(verifier, key):
    assert reason(verifier, sign(id_claims(), key, kid="not-a-known-kid")) == "unknown signing key"


def test_token_signed_by_another_key_with_our_kid_is_rejected(verifier, key):
    forger = SigningKey(kid=key.kid)
    assert reason(verifier, sign(id_claims(), forger)) == "invalid signature"


def test_tampered_payload_is_rejected(verifier, key):
    header, payload, signature = sign(id_claims("alice"), key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert reason(verifier, f"{header}.{forged}.{signature}") == "invalid signature"


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "", None, "...."])
def test_garbage_is_rejected(verifier, garbage):
    assert reason(verifier, garbage) in {"malformed token", "missing token"}


def test_missing_sub_is_rejected(verifier, key):
    assert reason(verifier, sign(id_claims(sub=None), key)) == "missing required claim"


def test_jwks_is_fetched_once_and_cached(verifier, key, jwks):
    for _ in range(3):
        verifier.verify(sign(id_claims(), key))
    assert jwks.fetches == 1


def test_unknown_kid_refetches_at_most_once_a_minute(verifier, key, jwks, clock):
    verifier.verify(sign(id_claims(), key))
    for _ in range(5):
        reason(verifier, sign(id_claims(), key, kid="rotated"))
    assert jwks.fetches == 1  # within the minute: no refetch
    clock.now += 60
    reason(verifier, sign(id_claims(), key, kid="rotated"))
    assert jwks.fetches == 2


def test_rotated_key_is_found_after_the_refetch_interval(verifier, key, jwks, clock):
    verifier.verify(sign(id_claims(), key))
    new_key = SigningKey()
    jwks.keys.append(new_key)
    clock.now += 61
    assert verifier.verify(sign(id_claims("bob"), new_key))["sub"] == "bob"


def test_unreachable_jwks_names_the_reason(key):
    def failing(url: str, timeout: float) -> dict:
        raise OSError("connection refused")

    cache = JwksCache("http://jwks.invalid", fetch=failing)
    v = JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache)
    assert reason(v, sign(id_claims(), key)) == "signing keys unavailable"


def test_leeway_above_sixty_seconds_is_refused():
    with pytest.raises(ValueError):
        JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=JwksCache("x"), leeway_s=120)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("", None),
        (None, None),
        ("Bearer", None),
    ],
)
def test_bearer_token_extraction(header, token):
    assert bearer_token(header) == token
