"""Which model the local cloud's producers call, and with what (local/model.py): the
simulated model's local settings, or real Bedrock's credentials and Region from boto3's
default chain, refused with a message that says what is missing. No AWS call is made:
resolving credentials from the environment or from files is local."""

from __future__ import annotations

import pytest

from local.model import (
    BEDROCK,
    LOCAL_CREDENTIALS,
    SIMULATED,
    ModelSetupError,
    real_bedrock,
    setup,
    simulated,
    source_from_env,
)

US_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """No AWS setting of the machine leaks in; files live in tmp_path."""
    import os

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def test_the_setting_is_simulated_unless_it_says_bedrock():
    assert source_from_env({}) == SIMULATED
    assert source_from_env({"LOCAL_MODEL": ""}) == SIMULATED
    assert source_from_env({"LOCAL_MODEL": " Bedrock "}) == BEDROCK
    with pytest.raises(ModelSetupError, match="LOCAL_MODEL must be one of simulated, bedrock"):
        source_from_env({"LOCAL_MODEL": "claude"})


def test_the_simulated_model_keeps_local_credentials_and_its_endpoint():
    m = simulated("us-east-1").with_endpoint("http://127.0.0.1:9/")
    assert m.app_env() == {
        **LOCAL_CREDENTIALS,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:9/",
        "MODEL_LABEL": "local simulated model",
    }
    assert m.signing_credentials == ("local", "local")
    assert setup(SIMULATED, US_MODEL, "us-east-1").source == SIMULATED


def test_real_bedrock_takes_the_chains_credentials_and_region_and_no_endpoint(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    m = real_bedrock(US_MODEL)
    assert (m.source, m.region, m.origin, m.temporary) == (BEDROCK, "us-west-2", "env", False)
    env = m.app_env()
    assert env == {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    assert "AWS_ENDPOINT_URL_BEDROCK_RUNTIME" not in env and "MODEL_LABEL" not in env
    assert m.signing_credentials == ("AKIDENV", "env-secret")
    # Node's SDK would prefer a named profile to these variables: none is named there.
    assert m.node_env() == {**env, "AWS_PROFILE": ""}
    assert "env-secret" not in m.describe(US_MODEL)
    # AWS_REGION (what Lambda sets) comes first.
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    assert real_bedrock(US_MODEL).region == "us-east-2"


def test_a_profile_in_the_shared_files_is_found_with_its_session_token(aws_env, monkeypatch):
    (aws_env / "credentials").write_text(
        "[bench]\naws_access_key_id = AKIDFILE\naws_secret_access_key = file-secret\n"
        "aws_session_token = file-token\n"
    )
    (aws_env / "config").write_text("[profile bench]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_PROFILE", "bench")
    m = real_bedrock("eu.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert m.region == "eu-central-1" and m.origin == "shared-credentials-file"
    assert m.credentials == {
        "AWS_ACCESS_KEY_ID": "AKIDFILE",
        "AWS_SECRET_ACCESS_KEY": "file-secret",
        "AWS_SESSION_TOKEN": "file-token",
    }
    assert m.temporary and "restart when they expire" in m.describe("x")


def test_no_credentials_no_region_or_a_broken_profile_are_refused_by_name(aws_env, monkeypatch):
    with pytest.raises(ModelSetupError) as info:
        real_bedrock(US_MODEL)
    assert "needs AWS credentials and found none" in str(info.value)
    assert "profile 'default'" in str(info.value)
    monkeypatch.setenv("AWS_PROFILE", "missing")
    with pytest.raises(ModelSetupError, match="could not be loaded: The config profile"):
        real_bedrock(US_MODEL)
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    with pytest.raises(ModelSetupError, match="needs a Region for Bedrock and found none"):
        real_bedrock(US_MODEL)


@pytest.mark.parametrize(
    ("model_id", "region", "ok"),
    [
        (US_MODEL, "us-east-1", True),
        (US_MODEL, "eu-west-1", False),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu-west-1", True),
        ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu-west-1", False),
        ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "ap-northeast-1", True),
        ("anthropic.claude-3-haiku-20240307-v1:0", "eu-west-1", True),  # no profile
    ],
)
def test_an_inference_profile_of_another_geography_is_refused(
    aws_env, monkeypatch, model_id, region, ok
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", region)
    if ok:
        assert real_bedrock(model_id).region == region
    else:
        with pytest.raises(ModelSetupError, match=f"which Bedrock in {region} does not serve"):
            real_bedrock(model_id)
