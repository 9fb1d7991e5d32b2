import json
from pathlib import Path

import pytest

from chalicelib.settings import Settings, SettingsError

# The two settings a function cannot start without.
REQUIRED = {"USER_POOL_ID": "us-east-1_TestPool1", "USER_POOL_CLIENT_ID": "test-client"}


def test_defaults_work_without_any_environment():
    s = Settings.from_env(REQUIRED)
    assert s.region == "us-east-1"
    assert s.flush_interval_ms == 50
    assert s.limits.max_input_chars == 32_000
    assert s.limits.max_streams_per_user == 3
    assert s.jwt_issuer == f"https://cognito-idp.us-east-1.amazonaws.com/{s.user_pool_id}"
    assert s.jwks_url == s.jwt_issuer + "/.well-known/jwks.json"


def test_environment_values_are_typed():
    s = Settings.from_env(
        {
            **REQUIRED,
            "AWS_REGION": "eu-west-1",
            "USER_POOL_ID": "eu-west-1_abc",
            "FLUSH_INTERVAL_MS": "25",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "MAX_STREAMS_PER_USER": "5",
        }
    )
    assert s.jwt_issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"
    assert (s.flush_interval_ms, s.heartbeat_interval_s) == (25, 0.5)
    assert s.limits.max_streams_per_user == 5


def test_explicit_issuer_and_jwks_url_win_over_derived_ones():
    s = Settings.from_env(
        {**REQUIRED, "JWT_ISSUER": "http://127.0.0.1:9/pool", "JWKS_URL": "http://127.0.0.1:9/keys"}
    )
    assert (s.jwt_issuer, s.jwks_url) == ("http://127.0.0.1:9/pool", "http://127.0.0.1:9/keys")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLUSH_INTERVAL_MS": "fast"}, "FLUSH_INTERVAL_MS must be an integer"),
        ({"FLUSH_INTERVAL_MS": "0"}, "FLUSH_INTERVAL_MS must be between 1 and 10000"),
        ({"JWT_LEEWAY_S": "300"}, "JWT_LEEWAY_S must be between 0 and 60"),
        ({"HEARTBEAT_INTERVAL_S": "x"}, "HEARTBEAT_INTERVAL_S must be a number"),
        ({"DEFAULT_MAX_TOKENS": "5000"}, "DEFAULT_MAX_TOKENS must not exceed MAX_TOKENS_LIMIT"),
    ],
)
def test_bad_values_name_the_variable_and_the_limit(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**REQUIRED, **env})


@pytest.mark.parametrize("missing", ["USER_POOL_ID", "USER_POOL_CLIENT_ID"])
def test_a_function_without_its_user_pool_settings_fails_naming_the_missing_one(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{missing} is required and not set"):
        Settings.from_env(env)


def test_overrides_refuse_unknown_settings():
    with pytest.raises(SettingsError, match="unknown settings"):
        Settings().with_overrides(flush_interval=1)
    assert Settings().with_overrides(flush_interval_ms=10).flush_interval_ms == 10


SENDER_VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "sender.json").read_text("utf-8")
)["senderMode"]


@pytest.mark.parametrize("case", SENDER_VECTORS, ids=lambda c: c["name"])
def test_sender_mode_vector(case):
    env = dict(REQUIRED) if case["env"] is None else {**REQUIRED, "SENDER_MODE": case["env"]}
    if "error" in case:
        with pytest.raises(SettingsError, match=case["error"]):
            Settings.from_env(env)
    else:
        assert Settings.from_env(env).sender_mode == case["mode"]


def test_an_unknown_sender_mode_is_refused_in_code_too():
    with pytest.raises(SettingsError, match="sender_mode must be one of coalesce, per_token"):
        Settings(sender_mode="batch")
