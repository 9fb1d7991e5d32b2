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

    cache = JwksCache("http://jwks.invalid", fetch=failing, budget_s=0.2)
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


class FlakyJwks(FakeJwks):
    """Fails its first ``failures`` fetches, then serves the keys."""

    def __init__(self, key: SigningKey, failures: int) -> None:
        super().__init__(key)
        self.failures = failures

    def __call__(self, url: str, timeout: float) -> dict:
        if self.failures > 0:
            self.failures -= 1
            self.fetches += 1
            raise OSError("connection refused")
        return super().__call__(url, timeout)


class FakeTime:
    """A clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _cache(fetch, t: FakeTime, **kw) -> JwksCache:
    return JwksCache("http://jwks.invalid", fetch=fetch, clock=t, sleep=t.sleep, **kw)


@pytest.mark.security("auth")
def test_a_failed_jwks_fetch_is_retried_with_backoff_within_the_request(key):
    t = FakeTime()
    jwks = FlakyJwks(key, failures=2)
    verifier = JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=_cache(jwks, t, budget_s=5))
    assert verifier.verify(sign(id_claims("alice"), key))["sub"] == "alice"
    assert jwks.fetches == 3
    assert t.slept == [0.1, 0.2]  # exponential backoff


@pytest.mark.security("auth")
def test_jwks_retries_stop_at_the_request_budget(key):
    t = FakeTime()
    jwks = FlakyJwks(key, failures=100)
    verifier = JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=_cache(jwks, t, budget_s=1))
    assert reason(verifier, sign(id_claims(), key)) == "signing keys unavailable"
    assert sum(t.slept) <= 1
    assert jwks.fetches >= 3


@pytest.mark.security("auth")
def test_a_failed_first_fetch_does_not_lock_users_out_for_the_refetch_interval(key):
    t = FakeTime()
    jwks = FlakyJwks(key, failures=100)
    cache = _cache(jwks, t, budget_s=0.5, failure_cooldown_s=1, refetch_interval_s=60)
    verifier = JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache)
    token = sign(id_claims("alice"), key)
    assert reason(verifier, token) == "signing keys unavailable"
    fetches = jwks.fetches
    # Within the cooldown: answered at once, without hammering the endpoint.
    assert reason(verifier, token) == "signing keys unavailable"
    assert jwks.fetches == fetches
    jwks.failures = 0  # the endpoint is back
    t.now += 1
    assert verifier.verify(token)["sub"] == "alice"  # seconds later, not 60 s


@pytest.mark.security("auth")
@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": None},
        {"alg": "RS256", "kid": 7},
        {"alg": "RS256", "kid": ["a"]},
        {"alg": "RS256", "kid": "k", "crit": ["b64"], "b64": False},
        [1, 2],
        "RS256",
    ],
    ids=["kid-null", "kid-number", "kid-list", "crit", "header-array", "header-string"],
)
def test_a_malformed_header_is_a_rejection_never_another_exception(verifier, header):
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verifier.verify(f"{head}.e30.c2ln")


@pytest.mark.security("auth")
def test_an_unexpected_library_failure_is_a_rejection(verifier, key, monkeypatch):
    import jwt as pyjwt

    def explode(*args, **kwargs):
        raise KeyError("something no one foresaw")

    monkeypatch.setattr(pyjwt, "decode", explode)
    assert reason(verifier, sign(id_claims(), key)) == "invalid token"
