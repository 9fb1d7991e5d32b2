"""AppSync's user-pool authorization as the local emulator has it (local/appsync.py): ID and
access tokens of the app client, on the product's signature and claim checks."""

from __future__ import annotations

import time

import pytest

from chalicelib.jwt_verify import JwksCache, JwtVerifier, TokenError
from local.appsync import UserPoolAuth
from tests.support.tokens import CLIENT_ID, ISSUER, SigningKey, id_claims, sign


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def auth(key: SigningKey) -> UserPoolAuth:
    cache = JwksCache("http://jwks.invalid", fetch=lambda url, timeout: {"keys": [key.jwk()]})
    return UserPoolAuth(JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache))


def access_claims(sub: str = "user-1", **overrides) -> dict:
    return id_claims(
        sub, **{"token_use": "access", "aud": None, "client_id": CLIENT_ID, **overrides}
    )


def reason(auth: UserPoolAuth, token: str) -> str:
    with pytest.raises(TokenError) as exc:
        auth.verify(token)
    return exc.value.reason


def test_an_access_token_of_our_client_is_accepted(auth, key):
    claims = auth.verify(sign(access_claims("alice"), key))
    assert (claims["sub"], claims["token_use"]) == ("alice", "access")


def test_id_tokens_are_accepted_too(auth, key):
    assert auth.verify(sign(id_claims("bob"), key))["token_use"] == "id"


def test_an_access_token_of_another_client_is_rejected(auth, key):
    assert reason(auth, sign(access_claims(client_id="another-client"), key)) == "wrong client"


def test_an_access_token_without_client_id_is_rejected(auth, key):
    assert reason(auth, sign(access_claims(client_id=None), key)) == "wrong client"


def test_id_tokens_keep_the_audience_check(auth, key):
    assert reason(auth, sign(id_claims(aud="another-client"), key)) == "wrong audience"


def test_other_token_uses_are_rejected(auth, key):
    assert reason(auth, sign(id_claims(token_use="refresh"), key)) == "not an ID or access token"


def test_an_expired_access_token_is_rejected(auth, key):
    token = sign(access_claims(exp=int(time.time()) - 61), key)
    assert reason(auth, token) == "token expired"


def test_the_product_verifier_itself_accepts_id_tokens_only(key):
    cache = JwksCache("http://jwks.invalid", fetch=lambda url, timeout: {"keys": [key.jwk()]})
    verifier = JwtVerifier(issuer=ISSUER, client_id=CLIENT_ID, jwks=cache)
    with pytest.raises(TokenError, match="not an ID token"):
        verifier.verify(sign(access_claims(), key))
