"""The model behind the local cloud's producers: the simulated model (the default) or real
Amazon Bedrock (``LOCAL_MODEL=bedrock``), everything else staying local.

Real Bedrock: the credentials are resolved once, at start-up, through boto3's default
chain (environment, shared files and profiles, SSO, container or instance roles) and the
region is ``AWS_REGION``, else the chain's (``AWS_DEFAULT_REGION``, the profile's). Both are
then given to every producer (the Python functions and the Node Function URL host) as
plain ``AWS_*`` variables, so both runtimes sign with the same credentials, the local
cloud runs in that region, and the AppSync emulator checks the worker's SigV4 against
exactly those credentials (moto and the other local services accept any). Bedrock's
endpoint variable is not set: the SDKs call Bedrock's regional endpoint. Without
credentials or a region, start-up stops with a message that says what is missing.

The app is the same in both cases: only its environment differs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

SIMULATED = "simulated"
BEDROCK = "bedrock"
SOURCES = (SIMULATED, BEDROCK)
SIMULATED_LABEL = "local simulated model"
# Credentials of the local endpoints only; no AWS account is involved.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
# Cross-Region inference profiles (the model id's first label) and the Regions they serve.
_PROFILE_REGIONS = {"us": ("us-",), "eu": ("eu-",), "apac": ("ap-",)}


class ModelSetupError(SystemExit):
    """The chosen model cannot be used; the message says what is missing."""


@dataclass(frozen=True)
class ModelSetup:
    source: str
    region: str
    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, for temporary ones, AWS_SESSION_TOKEN.
    credentials: Mapping[str, str] = field(default_factory=lambda: dict(LOCAL_CREDENTIALS))
    bedrock_endpoint: str | None = None
    label: str | None = None
    # Where the credentials came from (botocore's name for the provider), for the banner.
    origin: str = "local"

    def app_env(self) -> dict[str, str]:
        """The model's part of the producers' environment."""
        env = {**self.credentials}
        if self.bedrock_endpoint is not None:
            env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = self.bedrock_endpoint
        if self.label is not None:
            env["MODEL_LABEL"] = self.label
        return env

    def node_env(self) -> dict[str, str]:
        """The same for the Node.js Function URL host. ``AWS_PROFILE`` is blanked there: the
        JS SDK ignores credentials in variables while a profile is named, and would
        resolve (and sign with) credentials of its own."""
        return {**self.app_env(), "AWS_PROFILE": ""}

    @property
    def signing_credentials(self) -> tuple[str, str]:
        """The (access key id, secret) IAM callers of the local AppSync sign with."""
        return self.credentials["AWS_ACCESS_KEY_ID"], self.credentials["AWS_SECRET_ACCESS_KEY"]

    def with_endpoint(self, url: str) -> ModelSetup:
        return replace(self, bedrock_endpoint=url)

    def describe(self, model_id: str) -> str:
        if self.source == SIMULATED:
            return f"local simulated model at {self.bedrock_endpoint}"
        temporary = ", temporary: restart when they expire" if self.temporary else ""
        return (
            f"Amazon Bedrock in {self.region}, {model_id} (credentials: {self.origin}{temporary})"
        )

    @property
    def temporary(self) -> bool:
        return "AWS_SESSION_TOKEN" in self.credentials


def source_from_env(env: Mapping[str, str]) -> str:
    """``LOCAL_MODEL``: ``simulated`` (unset or empty) or ``bedrock``."""
    raw = (env.get("LOCAL_MODEL") or SIMULATED).strip().lower()
    if raw not in SOURCES:
        raise ModelSetupError(
            f"LOCAL_MODEL must be one of {', '.join(SOURCES)}, got {env.get('LOCAL_MODEL')!r}"
        )
    return raw


def simulated(region: str) -> ModelSetup:
    """The simulated model; its endpoint is set once the emulator listens."""
    return ModelSetup(SIMULATED, region, label=SIMULATED_LABEL)


def real_bedrock(model_id: str, environ: Mapping[str, str] | None = None) -> ModelSetup:
    """Real Bedrock with the default credential chain and region (see the module doc)."""
    import boto3
    from botocore.exceptions import BotoCoreError

    environ = os.environ if environ is None else environ
    hint = "or run `make run` without LOCAL_MODEL for the simulated model"
    try:
        session = boto3.Session()
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except BotoCoreError as exc:  # e.g. an expired SSO session, a broken profile
        raise ModelSetupError(
            f"LOCAL_MODEL=bedrock: the AWS credentials could not be loaded: {exc}. Fix them "
            f"(e.g. `aws sso login`), {hint}."
        ) from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        profile = environ.get("AWS_PROFILE") or "default"
        raise ModelSetupError(
            "LOCAL_MODEL=bedrock needs AWS credentials and found none: not in the "
            "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), not for profile "
            f"{profile!r} in the shared files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, "
            "~/.aws/), no SSO session, no container or instance role. Configure some (e.g. "
            f"`aws configure` or `aws sso login`), {hint}."
        )
    region = environ.get("AWS_REGION") or session.region_name
    if not region:
        raise ModelSetupError(
            "LOCAL_MODEL=bedrock needs a Region for Bedrock and found none: set AWS_REGION "
            f"(e.g. AWS_REGION=us-east-1) or `region` in your AWS profile, {hint}."
        )
    _check_profile_region(model_id, region)
    credentials = {
        "AWS_ACCESS_KEY_ID": frozen.access_key,
        "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
    }
    if frozen.token:
        credentials["AWS_SESSION_TOKEN"] = frozen.token
    origin = getattr(found, "method", None) or "default chain"
    return ModelSetup(BEDROCK, region, credentials, origin=origin)


def _check_profile_region(model_id: str, region: str) -> None:
    prefix, dot, _ = model_id.partition(".")
    regions = _PROFILE_REGIONS.get(prefix) if dot else None
    if regions is not None and not region.startswith(regions):
        raise ModelSetupError(
            f"MODEL_ID {model_id} is a {prefix}. cross-Region inference profile, which "
            f"Bedrock in {region} does not serve: pass MODEL_ID with the profile of "
            f"{region}'s geography (e.g. MODEL_ID=eu.… in eu-*, apac.… in ap-*), or set "
            "AWS_REGION to a Region of the profile."
        )


def setup(source: str, model_id: str, default_region: str) -> ModelSetup:
    """The model of one local cloud: ``source`` is ``simulated`` or ``bedrock``."""
    return real_bedrock(model_id) if source == BEDROCK else simulated(default_region)
