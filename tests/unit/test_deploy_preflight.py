"""``make deploy``'s preflight and deploy steps (deploy/), with AWS stubbed (botocore Stubber)
and the CDK CLI replaced by a recorder: no call leaves the process."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import NoCredentialsError, SSOTokenLoadError
from botocore.stub import Stubber

from deploy.__main__ import CDK_DIR, Deployer, main
from deploy.outputs import OutputsError, load_outputs, summary
from deploy.preflight import (
    PreflightError,
    Target,
    bootstrap_qualifier,
    check_bootstrap,
    check_credentials,
    resolve_region,
)

ACCOUNT = "123456789012"
ARN = f"arn:aws:iam::{ACCOUNT}:user/deployer"
REGION = "eu-west-1"
TARGET = Target(ACCOUNT, REGION, ARN)
VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"


class FakeSession:
    """A boto3 session whose clients are real but stubbed; unexpected calls fail the test."""

    def __init__(self, region: str | None = REGION) -> None:
        self.region_name = region
        self.stubs: dict[str, Stubber] = {}
        self.clients: dict[str, Any] = {}

    def stub(self, service: str) -> Stubber:
        if service not in self.stubs:
            client = boto3.client(
                service,
                region_name=REGION,
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            self.clients[service] = client
            self.stubs[service] = Stubber(client)
            self.stubs[service].activate()
        return self.stubs[service]

    def client(self, service: str, region_name: str | None = None, **_: Any) -> Any:
        if service not in self.clients:
            self.stub(service)
        return self.clients[service]

    def verify(self) -> None:
        for stubber in self.stubs.values():
            stubber.assert_no_pending_responses()


@pytest.fixture
def session() -> Iterator[FakeSession]:
    s = FakeSession()
    yield s
    s.verify()


def caller_identity(session: FakeSession) -> None:
    session.stub("sts").add_response(
        "get_caller_identity", {"Account": ACCOUNT, "Arn": ARN, "UserId": "AIDAEXAMPLE"}, {}
    )


def bootstrap_version(session: FakeSession, version: str) -> None:
    session.stub("ssm").add_response(
        "get_parameter",
        {"Parameter": {"Name": VERSION_PARAMETER, "Value": version, "Type": "String"}},
        {"Name": VERSION_PARAMETER},
    )


# ----------------------------------------------------------------------------- Region


def test_the_region_follows_the_cdk_cli_order() -> None:
    s = FakeSession("ap-southeast-2")
    assert resolve_region(s, {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}) == (
        "eu-west-1"
    )
    assert resolve_region(s, {"AWS_DEFAULT_REGION": "us-west-2"}) == "us-west-2"
    assert resolve_region(s, {}) == "ap-southeast-2"


def test_no_region_says_how_to_set_one() -> None:
    with pytest.raises(PreflightError, match=r"No AWS Region.*aws configure.*AWS_REGION="):
        resolve_region(FakeSession(None), {})


# ------------------------------------------------------------------------ credentials


def test_credentials_name_the_account_and_region(session: FakeSession) -> None:
    caller_identity(session)
    assert check_credentials(session, REGION) == TARGET
    assert TARGET.environment == f"aws://{ACCOUNT}/{REGION}"


class RaisingSts:
    """An STS client whose credential provider failed before any request was made."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_caller_identity(self) -> None:
        raise self.error


def test_missing_credentials_say_what_to_run(session: FakeSession) -> None:
    session.clients["sts"] = RaisingSts(NoCredentialsError())
    with pytest.raises(PreflightError, match=r"aws configure.*aws sso login") as err:
        check_credentials(session, REGION)
    assert "No usable AWS credentials" in str(err.value)


def test_an_sso_session_never_started_says_aws_sso_login(session: FakeSession) -> None:
    session.clients["sts"] = RaisingSts(SSOTokenLoadError(error_msg="no token for my-sso"))
    with pytest.raises(PreflightError, match=r"aws sso login --profile"):
        check_credentials(session, REGION)


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("ExpiredToken", "have expired"),
        ("InvalidClientTokenId", "access key is wrong"),
        ("SomethingElse", r"GetCallerIdentity failed \(SomethingElse\)"),
    ],
)
def test_refused_credentials_are_explained(session: FakeSession, code: str, needle: str) -> None:
    session.stub("sts").add_client_error("get_caller_identity", service_error_code=code)
    with pytest.raises(PreflightError, match=needle):
        check_credentials(session, REGION)


# -------------------------------------------------------------------------- bootstrap


def test_a_bootstrapped_target_reports_its_version(session: FakeSession) -> None:
    bootstrap_version(session, "28")
    assert check_bootstrap(session, TARGET) == 28


def test_a_target_not_bootstrapped_names_the_command(session: FakeSession) -> None:
    session.stub("ssm").add_client_error("get_parameter", service_error_code="ParameterNotFound")
    with pytest.raises(PreflightError) as err:
        check_bootstrap(session, TARGET)
    assert f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in str(err.value)
    assert "not bootstrapped" in str(err.value)


def test_an_old_bootstrap_asks_for_an_upgrade(session: FakeSession) -> None:
    bootstrap_version(session, "4")
    with pytest.raises(PreflightError, match=r"version 4; this CDK needs 6 or later"):
        check_bootstrap(session, TARGET)


def test_without_ssm_access_the_toolkit_stack_is_read(session: FakeSession) -> None:
    session.stub("ssm").add_client_error("get_parameter", service_error_code="AccessDenied")
    session.stub("cloudformation").add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "CDKToolkit",
                    "CreationTime": "2026-01-01T00:00:00Z",
                    "StackStatus": "UPDATE_COMPLETE",
                    "Outputs": [{"OutputKey": "BootstrapVersion", "OutputValue": "27"}],
                }
            ]
        },
        {"StackName": "CDKToolkit"},
    )
    assert check_bootstrap(session, TARGET) == 27


def test_a_missing_toolkit_stack_means_not_bootstrapped(session: FakeSession) -> None:
    session.stub("ssm").add_client_error("get_parameter", service_error_code="AccessDenied")
    session.stub("cloudformation").add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message="Stack with id CDKToolkit does not exist",
    )
    with pytest.raises(PreflightError, match="cdk bootstrap aws://"):
        check_bootstrap(session, TARGET)


def test_unreadable_bootstrap_is_left_to_the_cdk(session: FakeSession) -> None:
    session.stub("ssm").add_client_error("get_parameter", service_error_code="AccessDenied")
    session.stub("cloudformation").add_client_error(
        "describe_stacks", service_error_code="AccessDenied"
    )
    assert check_bootstrap(session, TARGET) is None


def test_the_qualifier_comes_from_cdk_json(tmp_path: Path) -> None:
    custom = tmp_path / "cdk.json"
    custom.write_text(json.dumps({"context": {"@aws-cdk/core:bootstrapQualifier": "abc123"}}))
    assert bootstrap_qualifier(custom) == "abc123"
    assert bootstrap_qualifier(tmp_path / "missing.json") == "hnb659fds"
    assert bootstrap_qualifier() == "hnb659fds"  # the project's cdk.json sets none


# ----------------------------------------------------------------------------- deploy


class Recorder:
    """Stands in for the CDK CLI: records the call, writes what cdk deploy would write."""

    def __init__(self, outputs: dict[str, Any] | None = None, code: int = 0) -> None:
        self.calls: list[tuple[list[str], Path, dict[str, str]]] = []
        self.outputs = outputs
        self.code = code

    def __call__(self, args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
        self.calls.append((list(args), cwd, dict(env)))
        if self.outputs is not None and "--outputs-file" in args:
            Path(args[list(args).index("--outputs-file") + 1]).write_text(json.dumps(self.outputs))
        return self.code


STACK_OUTPUTS = {
    "LlmStream": {
        "UserPoolId": f"{REGION}_AbC123xyz",
        "Region": REGION,
        "ClientUrl": "https://d111111abcdef8.cloudfront.net/",
        "RestApiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/api/",
    }
}


def test_deploy_checks_first_then_writes_outputs_and_prints_client_url_last(
    session: FakeSession, tmp_path: Path
) -> None:
    caller_identity(session)
    bootstrap_version(session, "28")
    cdk = Recorder(STACK_OUTPUTS)
    out = io.StringIO()
    outputs_file = tmp_path / ".local" / "stack-outputs.json"
    deployer = Deployer(session, {"PATH": "/usr/bin"}, cdk, outputs_file, out)

    assert deployer.deploy(["-c", "modelId=eu.anthropic.claude-sonnet-4-5-20250929-v1:0"]) == 0

    [(args, cwd, env)] = cdk.calls
    assert args[:4] == ["npx", "cdk", "deploy", "--all"]
    assert args[args.index("--outputs-file") + 1] == str(outputs_file)
    assert args[-2:] == ["-c", "modelId=eu.anthropic.claude-sonnet-4-5-20250929-v1:0"]
    assert cwd == CDK_DIR
    # The CLI deploys where the preflight looked.
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == REGION
    lines = out.getvalue().splitlines()
    assert lines[0] == f"AWS account {ACCOUNT}, Region {REGION} (as {ARN})"
    assert lines[1] == "  bootstrap: version 28"
    assert lines[-1] == "ClientUrl: https://d111111abcdef8.cloudfront.net/"
    assert any("UserPoolId" in line and f"{REGION}_AbC123xyz" in line for line in lines)


def test_deploy_stops_before_the_cdk_when_not_bootstrapped(
    session: FakeSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    caller_identity(session)
    session.stub("ssm").add_client_error("get_parameter", service_error_code="ParameterNotFound")
    cdk = Recorder(STACK_OUTPUTS)
    deployer = Deployer(session, {}, cdk, tmp_path / "outputs.json", io.StringIO())

    assert main(["deploy"], deployer) == 1

    assert cdk.calls == []
    assert f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in capsys.readouterr().err
    assert not (tmp_path / "outputs.json").exists()


def test_a_failed_cdk_deploy_is_reported_with_its_exit_code(
    session: FakeSession, tmp_path: Path
) -> None:
    caller_identity(session)
    bootstrap_version(session, "28")
    out = io.StringIO()
    deployer = Deployer(session, {}, Recorder(code=3), tmp_path / "o.json", out)
    assert deployer.deploy() == 3
    assert "cdk deploy failed (exit 3)" in out.getvalue()


def test_destroy_targets_the_deployed_region_and_removes_the_outputs_file(
    session: FakeSession, tmp_path: Path
) -> None:
    caller_identity(session)
    outputs_file = tmp_path / "stack-outputs.json"
    outputs_file.write_text(json.dumps({"LlmStream": {"Region": "ap-south-1"}}))
    cdk = Recorder()
    out = io.StringIO()
    deployer = Deployer(session, {"AWS_REGION": "us-west-2"}, cdk, outputs_file, out)

    assert main(["destroy", "--force", "--"], deployer) == 0

    [(args, _, env)] = cdk.calls
    assert args == ["npx", "cdk", "destroy", "--all", "--force"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "ap-south-1"
    assert "The stack is in ap-south-1" in out.getvalue()
    assert not outputs_file.exists()


def test_a_failed_destroy_keeps_the_outputs_file(session: FakeSession, tmp_path: Path) -> None:
    caller_identity(session)
    outputs_file = tmp_path / "stack-outputs.json"
    outputs_file.write_text(json.dumps(STACK_OUTPUTS))
    deployer = Deployer(session, {}, Recorder(code=1), outputs_file, io.StringIO())
    assert main(["destroy"], deployer) == 1
    assert outputs_file.exists()


def test_cdk_args_and_the_approval_mode_reach_the_cli(session: FakeSession, tmp_path: Path) -> None:
    for _ in range(2):
        caller_identity(session)
        bootstrap_version(session, "28")
    cdk = Recorder(STACK_OUTPUTS)
    deployer = Deployer(session, {}, cdk, tmp_path / "o.json", io.StringIO())
    assert main(["deploy", "--", "-c", "threatProtection=true"], deployer) == 0
    assert main(["deploy", "--require-approval", "never", "--"], deployer) == 0
    assert [call[0][-4:] for call in cdk.calls] == [
        ["--outputs-file", str(tmp_path / "o.json"), "-c", "threatProtection=true"],
        ["--require-approval", "never", "--outputs-file", str(tmp_path / "o.json")],
    ]


# ---------------------------------------------------------------------------- outputs


def test_outputs_are_read_from_the_named_or_only_stack(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"Other": {"A": "1"}}))
    assert load_outputs(path) == {"A": "1"}
    path.write_text(json.dumps({"Other": {"A": "1"}, "LlmStream": {"B": "2"}}))
    assert load_outputs(path) == {"B": "2"}
    path.write_text(json.dumps({"One": {}, "Two": {}}))
    with pytest.raises(OutputsError, match="One, Two but not 'LlmStream'"):
        load_outputs(path)


def test_a_missing_outputs_file_says_to_deploy(tmp_path: Path) -> None:
    with pytest.raises(OutputsError, match=r"does not exist: deploy the stack first \(make deploy"):
        load_outputs(tmp_path / "none.json")


def test_the_summary_ends_with_client_url() -> None:
    lines = summary({"Zeta": "z", "ClientUrl": "https://x/", "Alpha": "a"})
    assert lines[-1] == "ClientUrl: https://x/"
    assert [line.split()[0] for line in lines[:-1]] == ["Alpha", "Zeta"]
    assert summary({"Alpha": "a"})[-1].startswith("(the stack has no ClientUrl output")
