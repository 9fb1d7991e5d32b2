"""What ``cdk deploy`` needs before it starts: credentials, a Region and a bootstrapped target.

Each check ends in :class:`PreflightError` whose message says what to run, so a first deploy
fails in a second with a fix instead of minutes later inside CloudFormation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk" / "cdk.json"
DEFAULT_QUALIFIER = "hnb659fds"
# The stacks the installed aws-cdk-lib synthesizes check this at deploy (CheckBootstrapVersion).
MIN_BOOTSTRAP_VERSION = 6
TOOLKIT_STACK = "CDKToolkit"

SIGN_IN_HELP = (
    "Configure credentials with `aws configure` (access keys), or `aws configure sso` once and "
    "then `aws sso login --profile NAME` with `export AWS_PROFILE=NAME`."
)
_PROFILE_HELP = "Check AWS_PROFILE, or create the profile with `aws configure --profile NAME`."
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}
_INVALID = {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


class PreflightError(RuntimeError):
    """A deploy cannot start; the message says what is missing and what to run."""


@dataclass(frozen=True)
class Target:
    """The account and Region the credentials deploy to."""

    account: str
    region: str
    arn: str

    @property
    def environment(self) -> str:
        return f"aws://{self.account}/{self.region}"


def resolve_region(session: Any, environ: Mapping[str, str] = os.environ) -> str:
    """The Region the CDK CLI would use: AWS_REGION, AWS_DEFAULT_REGION, then the profile."""
    try:
        profile_region = session.region_name
    except ProfileNotFound as e:
        raise PreflightError(f"{e}. {_PROFILE_HELP}") from e
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or profile_region
    if not region:
        raise PreflightError(
            "No AWS Region is configured: set one with `aws configure` (or in your profile), "
            "or run e.g. `AWS_REGION=eu-west-1 make deploy`."
        )
    return region


def session_from_environment() -> Any:
    """A boto3 session with the default credential chain (AWS_PROFILE is honoured)."""
    try:
        return boto3.session.Session()
    except ProfileNotFound as e:
        raise PreflightError(f"{e}. {_PROFILE_HELP}") from e


def check_credentials(session: Any, region: str) -> Target:
    """Who the credentials are (STS GetCallerIdentity), or why they are not usable."""
    try:
        identity = session.client("sts", region_name=region).get_caller_identity()
    except ProfileNotFound as e:
        raise PreflightError(f"{e}. {_PROFILE_HELP}") from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise PreflightError(f"No usable AWS credentials were found. {SIGN_IN_HELP}") from e
    except (SSOError, TokenRetrievalError) as e:
        raise PreflightError(
            "The AWS SSO session has expired or was never started: run "
            "`aws sso login --profile NAME` (the profile in AWS_PROFILE)."
        ) from e
    except ClientError as e:
        code = _code(e)
        if code in _EXPIRED:
            raise PreflightError(
                "The AWS credentials have expired: sign in again (`aws sso login`, or new "
                "keys with `aws configure`)."
            ) from e
        if code in _INVALID:
            raise PreflightError(
                f"AWS refused the credentials ({code}): the access key is wrong or deleted. "
                + SIGN_IN_HELP
            ) from e
        raise PreflightError(f"STS GetCallerIdentity failed ({code}): {_message(e)}") from e
    except BotoCoreError as e:
        raise PreflightError(f"Could not reach AWS STS in {region}: {e}") from e
    return Target(account=identity["Account"], region=region, arn=identity["Arn"])


def bootstrap_qualifier(cdk_json: Path = CDK_JSON) -> str:
    """The bootstrap qualifier the app synthesizes for (cdk.json context, else CDK's default)."""
    try:
        context = json.loads(cdk_json.read_text()).get("context", {})
    except (OSError, ValueError):
        return DEFAULT_QUALIFIER
    return str(context.get("@aws-cdk/core:bootstrapQualifier") or DEFAULT_QUALIFIER)


def check_bootstrap(session: Any, target: Target, qualifier: str = DEFAULT_QUALIFIER) -> int | None:
    """The target's bootstrap version; ``None`` when the credentials may not read it.

    The version parameter is what the CLI itself reads; the CDKToolkit stack is the fallback
    for credentials that may not read SSM.
    """
    bootstrap = f"`cd cdk && npx cdk bootstrap {target.environment}`"
    try:
        version = _version_from_ssm(session, target, qualifier)
    except _Denied:
        try:
            version = _version_from_stack(session, target)
        except _Denied:
            return None
    if version is None:
        raise PreflightError(
            f"{target.environment} is not bootstrapped for the CDK (no /cdk-bootstrap/"
            f"{qualifier}/version parameter, no {TOOLKIT_STACK} stack). Run {bootstrap} once, "
            "with credentials that may create IAM roles and an S3 bucket."
        )
    if version < MIN_BOOTSTRAP_VERSION:
        raise PreflightError(
            f"{target.environment} is bootstrapped at version {version}; this CDK needs "
            f"{MIN_BOOTSTRAP_VERSION} or later. Run {bootstrap} to upgrade it."
        )
    return version


class _Denied(Exception):
    pass


def _version_from_ssm(session: Any, target: Target, qualifier: str) -> int | None:
    ssm = session.client("ssm", region_name=target.region)
    try:
        value = ssm.get_parameter(Name=f"/cdk-bootstrap/{qualifier}/version")["Parameter"]["Value"]
    except ClientError as e:
        if _code(e) == "ParameterNotFound":
            return None
        if _code(e) in _DENIED:
            raise _Denied from e
        raise PreflightError(f"Reading the CDK bootstrap version failed: {_message(e)}") from e
    return _int(value)


def _version_from_stack(session: Any, target: Target) -> int | None:
    cloudformation = session.client("cloudformation", region_name=target.region)
    try:
        stack = cloudformation.describe_stacks(StackName=TOOLKIT_STACK)["Stacks"][0]
    except ClientError as e:
        if _code(e) == "ValidationError":  # "Stack with id CDKToolkit does not exist"
            return None
        if _code(e) in _DENIED:
            raise _Denied from e
        raise PreflightError(f"Reading the {TOOLKIT_STACK} stack failed: {_message(e)}") from e
    if stack.get("StackStatus") in ("DELETE_COMPLETE", "ROLLBACK_COMPLETE", "CREATE_FAILED"):
        return None
    for output in stack.get("Outputs", []):
        if output.get("OutputKey") == "BootstrapVersion":
            return _int(output.get("OutputValue"))
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", "")) or _code(error)
