"""Architecture 1: the Node.js Lambda that streams a generation as SSE over its Function URL."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.bedrock import BedrockModel
from stacks.roles import lambda_role
from stacks.store import StreamStore

# Response streaming is native only on the Node.js managed runtimes. The newest aws-cdk-lib
# offers, which cdk-nag's AwsSolutions-L1 wants.
NODE_RUNTIME = lambda_.Runtime.NODEJS_24_X
NODE_HANDLER = "index.handler"
NODE_ENTRY_FILE = "index.mjs"
# Not shipped: the function's tests, local npm settings (may hold registry tokens), coverage.
NODE_ASSET_EXCLUDE = ("test", "test/**", "*.test.mjs", ".npmrc", "coverage")
STREAM_FUNCTION_TIMEOUT_S = 900  # Lambda's maximum: one invocation streams a whole generation
# Request headers a browser may send (one per entry): the ID token, the JSON body, and the
# SSE resume position.
FUNCTION_URL_ALLOWED_HEADERS = ("authorization", "content-type", "last-event-id")
FUNCTION_URL_ALLOWED_METHODS = ("GET", "POST")
FUNCTION_URL_CORS_MAX_AGE_S = 600

# Python level names (LOG_LEVEL) as Lambda's application log levels (JSON log format).
APPLICATION_LOG_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
    "CRITICAL": lambda_.ApplicationLogLevel.FATAL,
}


def check_node_function_dir(path: str | os.PathLike[str], *, require_dependencies: bool) -> Path:
    """The Node.js function's directory, checked so that synth fails rather than deploying a
    function that cannot start.

    ``index.mjs`` (the handler) must exist. With ``require_dependencies``, so must every
    dependency of its ``package.json`` in ``node_modules`` (the asset ships ``node_modules``
    as it is: nothing is bundled at synth). The unit-test synth turns that part off, so that it
    does not depend on ``npm ci`` in node_function having run first.
    """
    directory = Path(path).resolve()
    if not (directory / NODE_ENTRY_FILE).is_file():
        raise FileNotFoundError(
            f"{directory / NODE_ENTRY_FILE} not found: the Function URL's Node.js handler "
            f"({NODE_HANDLER}) is missing"
        )
    if require_dependencies:
        manifest = directory / "package.json"
        dependencies = (
            json.loads(manifest.read_text()).get("dependencies", {}) if manifest.is_file() else {}
        )
        missing = [
            name
            for name in sorted(dependencies)
            if not (directory / "node_modules" / name / "package.json").is_file()
        ]
        if missing:
            raise RuntimeError(
                f"{directory}: dependencies not installed ({', '.join(missing)}); run "
                "`npm ci --omit=dev` there before synth, or the function fails at its first import"
            )
    return directory


class StreamFunctionUrl(Construct):
    """The streamer, its own role and log group, and its URL (auth NONE: the handler verifies
    the Cognito ID token itself, docs/security.md).

    Built from nothing of the Chalice app: the Chalice functions publish its URL
    (PUBLIC_FUNCTION_URL), so the reverse would be a CloudFormation cycle.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        environment: Mapping[str, str],
        store: StreamStore,
        model: BedrockModel,
        memory_mb: int,
        reserved_concurrency: int | None,
        log_level: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = role = lambda_role(
            self,
            "Role",
            "llm-stream Function URL streamer: stream store, one Bedrock model, logs",
        )
        store.grant_read_write(role)
        model.grant(role)
        log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        log_group.grant_write(role)
        self.function = function = lambda_.Function(
            self,
            "Function",
            description="llm-stream architecture 1: Bedrock ConverseStream as SSE (Function URL)",
            runtime=NODE_RUNTIME,
            handler=NODE_HANDLER,
            # As installed (npm ci): node_modules included, nothing bundled at synth.
            code=lambda_.Code.from_asset(str(code_dir), exclude=list(NODE_ASSET_EXCLUDE)),
            role=role,
            memory_size=memory_mb,
            timeout=cdk.Duration.seconds(STREAM_FUNCTION_TIMEOUT_S),
            # None unless the deployer asks (see LlmStreamProps.stream_reserved_concurrency).
            reserved_concurrent_executions=reserved_concurrency,
            environment=dict(environment),
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=APPLICATION_LOG_LEVELS[log_level],
        )
        # Auth NONE is deliberate: a Function URL offers only AWS_IAM (SigV4, which a browser
        # with a Cognito ID token cannot sign) or NONE. CDK adds the two resource-policy
        # statements a new NONE-auth URL needs (since October 2025): lambda:InvokeFunctionUrl
        # with FunctionUrlAuthType NONE, and lambda:InvokeFunction with InvokedViaFunctionUrl,
        # so principal "*" can invoke through the URL only, never through the Invoke API.
        # Lambda answers preflight and adds the CORS headers itself; the handler must not add
        # its own (browsers refuse a duplicated Access-Control-Allow-Origin). The origins are
        # set by allow_origins once the client's distribution exists.
        self.url = function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM,
            cors=lambda_.FunctionUrlCorsOptions(
                allowed_methods=[lambda_.HttpMethod(m) for m in FUNCTION_URL_ALLOWED_METHODS],
                allowed_headers=list(FUNCTION_URL_ALLOWED_HEADERS),
                max_age=cdk.Duration.seconds(FUNCTION_URL_CORS_MAX_AGE_S),
            ),
        )

    def allow_origins(self, origins: Sequence[str]) -> cr.AwsCustomResource:
        """Set the URL's CORS origins after both it and the client's distribution exist.

        The distribution's CSP names this URL, so the URL's own CORS property cannot name
        the distribution (a CloudFormation cycle). A custom resource calls
        UpdateFunctionUrlConfig instead, with exactly these origins, after the URL is created.
        It runs again whenever the origins change, and whenever the URL resource's template
        changes (CloudFormation would then reset its CORS): the physical id carries a
        fingerprint of that template.
        """
        cfn_url = self.url.node.default_child
        assert isinstance(cfn_url, lambda_.CfnUrl)
        fingerprint = hashlib.sha256(
            json.dumps(cdk.Stack.of(self).resolve(cfn_url._cfn_properties), sort_keys=True).encode()  # type: ignore[attr-defined]
        ).hexdigest()[:16]
        role = lambda_role(
            self,
            "CorsUpdaterRole",
            "llm-stream Function URL CORS origins: update this one URL's configuration",
        )
        log_group = logs.LogGroup(
            self,
            "CorsUpdaterLogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        log_group.grant_write(role)
        call = cr.AwsSdkCall(
            service="Lambda",
            action="updateFunctionUrlConfig",
            parameters={
                "FunctionName": self.function.function_name,
                "Cors": {
                    "AllowOrigins": list(origins),  # exact origins, never "*"
                    "AllowMethods": list(FUNCTION_URL_ALLOWED_METHODS),
                    "AllowHeaders": list(FUNCTION_URL_ALLOWED_HEADERS),
                    "MaxAge": FUNCTION_URL_CORS_MAX_AGE_S,
                    "AllowCredentials": False,  # bearer tokens, no cookies
                },
            },
            physical_resource_id=cr.PhysicalResourceId.of(f"function-url-cors-{fingerprint}"),
        )
        updater = cr.AwsCustomResource(
            self,
            "CorsOrigins",
            on_create=call,
            on_update=call,
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [
                    iam.PolicyStatement(
                        actions=["lambda:UpdateFunctionUrlConfig"],
                        resources=[self.function.function_arn],
                    )
                ]
            ),
            role=role,
            log_group=log_group,
            install_latest_aws_sdk=False,  # the runtime's SDK: no download at deploy time
        )
        updater.node.add_dependency(self.url)
        self.cors_origins = list(origins)
        return updater
