"""The Chalice app (app.py): every Python Lambda, the REST API, and the WebSocket API's routes,
as Chalice packages them, with this stack's roles, log groups and REST stage settings.

Settings reach the Python Lambdas only through the stage's environment variables: the Chalice
construct names its stage after the stack path, so the stages of ``.chalice/config.json`` are
never applied here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from chalice.cdk import Chalice
from constructs import Construct

from stacks.chalice_packaging import chalice_packaging
from stacks.nag import acknowledge, resource_finding
from stacks.props import API_STAGE
from stacks.rest_stream import REST_STREAM_THROTTLES
from stacks.roles import lambda_role

LAMBDA_PYTHON_RUNTIME = "python3.12"
_CfnT = TypeVar("_CfnT", bound=cdk.CfnResource)

# REST stage throttling (all callers together; API Gateway has no per-client limit without
# API keys). The stage default covers the authorized stream reads; the unauthenticated
# routes get less, since anyone may call them.
REST_THROTTLE_RATE_PER_S = 50
REST_THROTTLE_BURST = 100
# (path, method) -> (rate per s, burst). The client reads /config once per page load.
REST_METHOD_THROTTLES = {
    ("/config", "GET"): (20, 40),
    ("/health", "GET"): (10, 20),
    ("/streams/{stream_id}/cancel", "POST"): (20, 40),
    **REST_STREAM_THROTTLES,  # the streaming methods (stacks/rest_stream.py)
}
# One JSON line per request: who (sub, never the token), what, and how it ended.
REST_ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTimeEpoch",
        "method": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "responseLength": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationStatus": "$context.integrationStatus",
        "sub": "$context.authorizer.principalId",
        "error": "$context.error.message",
        "authorizerError": "$context.authorizer.error",
    }
)


def method_setting_path(path: str) -> str:
    """A resource path as API Gateway's MethodSettings want it: '/' inside it as '~1'."""
    return "/" + path.replace("/", "~1")


@jsii.implements(cdk.IStableStringProducer)
class _LateRoleArn:
    """The default role's ARN, for Chalice's stage config, before the role exists (it is a
    child of the construct whose constructor runs the packaging)."""

    def __init__(self, app: ChaliceApp) -> None:
        self._app = app

    def produce(self) -> str | None:
        return self._app.handler_role.role_arn


class ChaliceApp(Chalice):
    """The packaged Chalice app, plus what Chalice cannot express.

    * Roles are ours, not Chalice's (autogen off): each function gets the role of its job
      (:meth:`assign_roles`; default: the handler role), visible to cdk-nag.
    * Each function logs as JSON to its own log group with retention.
    * The REST API is REGIONAL (CloudFront fronts it, docs/architecture.md), with access
      logging and stage and per-method throttling.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source_dir: str | os.PathLike[str],
        environment: Mapping[str, str],
        lambda_timeout_s: int,
        lambda_memory_mb: int,
    ) -> None:
        project_dir = os.path.abspath(source_dir)
        with chalice_packaging(project_dir, LAMBDA_PYTHON_RUNTIME):
            super().__init__(
                scope,
                construct_id,
                source_dir=project_dir,
                stage_config={
                    "api_gateway_stage": API_STAGE,
                    "api_gateway_endpoint_type": "REGIONAL",
                    "lambda_timeout": lambda_timeout_s,
                    "lambda_memory_size": lambda_memory_mb,
                    "autogen_policy": False,
                    "manage_iam_role": False,
                    "iam_role_arn": cdk.Lazy.string(_LateRoleArn(self)),
                    "environment_variables": dict(environment),
                },
            )
        self.handler_role = lambda_role(
            self,
            "HandlerRole",
            "llm-stream REST and other Python handlers: stream store tables, logs",
        )
        self.authorizer_role = lambda_role(
            self,
            "AuthorizerRole",
            "llm-stream API authorizers: verify JWTs, write logs; nothing else",
        )
        self.functions = self._serverless_functions()
        if not self.functions:
            raise RuntimeError("the Chalice template has no AWS::Serverless::Function")
        for logical_id, function in self.functions.items():
            packaged_for = cdk.Stack.of(self).resolve(function.runtime)  # type: ignore[attr-defined]
            if packaged_for != LAMBDA_PYTHON_RUNTIME:
                # The deployment zip's binary wheels match packaged_for only.
                raise RuntimeError(
                    f"{logical_id} was packaged for {packaged_for}, not {LAMBDA_PYTHON_RUNTIME}"
                )
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.rest_api_id = self.get_resource("RestAPI").ref
        self.rest_api_url = self.sam_template.get_output("EndpointURL").value
        # The REST API's host: CloudFront's origin for /config and /streams/*.
        self.rest_api_domain = (
            f"{self.rest_api_id}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        )

    # -- functions ---------------------------------------------------------------------------

    def _serverless_functions(self) -> dict[str, cdk.CfnResource]:
        """Every ``AWS::Serverless::Function`` of the Chalice template, by logical id."""
        return {
            child.node.id: child
            for child in self.sam_template.node.children
            if isinstance(child, cdk.CfnResource)
            and child.cfn_resource_type == "AWS::Serverless::Function"
        }

    def included(self, cfn_type: type[_CfnT], logical_id: str) -> _CfnT:
        """A resource of the Chalice template as its typed L1 class."""
        resource = self.get_resource(logical_id)
        if not isinstance(resource, cfn_type):
            raise TypeError(f"{logical_id} is a {type(resource).__name__}, not {cfn_type.__name__}")
        return resource

    def function_arn(self, logical_id: str) -> str:
        return cdk.Token.as_string(self.functions[logical_id].get_att("Arn"))

    def require_functions(self, *logical_ids: str) -> None:
        missing = set(logical_ids) - set(self.functions)
        if missing:
            # The stack wires these by logical id: fail rather than deploy half a transport.
            raise RuntimeError(f"the Chalice app lacks the functions {sorted(missing)}")

    def set_environment(self, name: str, value: str, *, only: str | None = None) -> None:
        """An environment variable known only once the Chalice resources exist."""
        for logical_id, function in self.functions.items():
            if only is None or logical_id == only:
                function.add_property_override(f"Environment.Variables.{name}", value)

    def authorizer_function_ids(self) -> set[str]:
        """Logical ids of the functions the REST API uses as authorizers, read from the API's
        swagger ``securityDefinitions`` (``${JwtAuth.Arn}`` in the authorizer URI)."""
        ids: set[str] = set()
        for child in self.sam_template.node.children:
            if not (
                isinstance(child, cdk.CfnResource)
                and child.cfn_resource_type == "AWS::Serverless::Api"
            ):
                continue
            body = cdk.Stack.of(self).resolve(child.definition_body) or {}  # type: ignore[attr-defined]
            for scheme in body.get("securityDefinitions", {}).values():
                uri = scheme.get("x-amazon-apigateway-authorizer", {}).get("authorizerUri")
                sub = uri.get("Fn::Sub") if isinstance(uri, dict) else None
                if isinstance(sub, str):
                    ids.update(re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", sub))
        return ids

    def assign_roles(
        self, roles: Mapping[str, iam.Role], *, authorizers: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Each function gets the role of its job: ``roles`` by logical id, the authorizer role
        for the REST authorizers and ``authorizers``, the handler role for anything else (the
        REST handler, functions added later). Then its own log group, JSON logs, and a
        dependency on its role's policy (a function must not run before its permissions)."""
        unknown = set(roles) - set(self.functions)
        if unknown:
            raise RuntimeError(f"roles for functions the Chalice app lacks: {sorted(unknown)}")
        all_authorizers = self.authorizer_function_ids() | set(authorizers)
        for logical_id, function in self.functions.items():
            if logical_id in all_authorizers:
                role = self.authorizer_role
            else:
                role = roles.get(logical_id, self.handler_role)
            function.add_property_override("Runtime", LAMBDA_PYTHON_RUNTIME)
            function.add_property_override("Role", role.role_arn)
            # Our own log group (retention set) instead of the implicit never-expiring one.
            log_group = logs.LogGroup(
                self,
                f"{logical_id}LogGroup",
                retention=logs.RetentionDays.ONE_MONTH,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            log_group.grant_write(role)
            # JSON log format: Lambda renders standard-library log records (chalicelib) as
            # JSON too, so every line is structured, not only the Powertools Logger's.
            function.add_property_override(
                "LoggingConfig", {"LogGroup": log_group.log_group_name, "LogFormat": "JSON"}
            )
            self.log_groups[logical_id] = log_group
            policy = role.node.try_find_child("DefaultPolicy")
            if policy is not None:
                function.add_resource_dependency(policy.node.default_child)  # type: ignore[arg-type]

    # -- the REST API stage ------------------------------------------------------------------

    def configure_rest_stage(self, *, logs_ready: cdk.CfnResource | None) -> logs.LogGroup:
        """Access logs (JSON, to a log group with retention), execution logs of errors only
        (no request or response data: DataTraceEnabled off), and throttling.

        Stage logging needs the Region's API Gateway CloudWatch Logs role (an account
        setting); ``logs_ready`` is the resource that sets it, when this stack does.
        """
        api = self.get_resource("RestAPI")
        log_group = logs.LogGroup(
            self,
            "RestApiAccessLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        api.add_property_override(
            "AccessLogSetting",
            {"DestinationArn": log_group.log_group_arn, "Format": REST_ACCESS_LOG_FORMAT},
        )
        settings: list[dict[str, Any]] = [
            {
                "ResourcePath": "/*",
                "HttpMethod": "*",
                "ThrottlingRateLimit": REST_THROTTLE_RATE_PER_S,
                "ThrottlingBurstLimit": REST_THROTTLE_BURST,
                "LoggingLevel": "ERROR",
                "DataTraceEnabled": False,  # would log request and response bodies
                "MetricsEnabled": False,
            }
        ]
        for (path, method), (rate, burst) in REST_METHOD_THROTTLES.items():
            settings.append(
                {
                    "ResourcePath": method_setting_path(path),
                    "HttpMethod": method,
                    "ThrottlingRateLimit": rate,
                    "ThrottlingBurstLimit": burst,
                    "LoggingLevel": "ERROR",
                    "DataTraceEnabled": False,
                    "MetricsEnabled": False,
                }
            )
        api.add_property_override("MethodSettings", settings)
        if logs_ready is not None:
            # SAM puts the API's DependsOn on the RestApi it generates; its stage refers to
            # the RestApi (through the deployment), so it is created after the setting too.
            api.add_resource_dependency(logs_ready)
        self.rest_access_log_group = log_group
        return log_group


def api_gateway_logs_role(scope: Construct) -> apigw.CfnAccount:
    """The Region's API Gateway CloudWatch Logs role (AWS::ApiGateway::Account), which REST and
    WebSocket stage logging require.

    It is an account-and-Region setting, not a part of this stack: both resources are retained
    on delete, so destroying the stack never breaks the logging of other APIs that came to
    rely on the role. A deployer whose account already manages the setting passes
    ``-c apiGatewayLogsRole=existing``.
    """
    # What AWS's AmazonAPIGatewayPushToCloudWatchLogs allows, inline: no managed policy.
    push_logs = iam.PolicyStatement(
        actions=[
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:DescribeLogGroups",
            "logs:DescribeLogStreams",
            "logs:PutLogEvents",
            "logs:GetLogEvents",
            "logs:FilterLogEvents",
        ],
        resources=[
            cdk.Stack.of(scope).format_arn(
                service="logs",
                resource="log-group",
                resource_name="*",
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )
        ],
    )
    role = iam.Role(
        scope,
        "ApiGatewayLogsRole",
        assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
        description="API Gateway (this Region): write REST and WebSocket stage logs",
        inline_policies={"PushLogs": iam.PolicyDocument(statements=[push_logs])},
    )
    role.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
    acknowledge(
        role,
        f"AwsSolutions-IAM5[{resource_finding(scope, push_logs.resources[0])}]",
        "This is the Region-wide role API Gateway uses for every API's stage logs (the account "
        "setting AWS::ApiGateway::Account): it creates and writes log groups it names per API "
        "and stage (API-Gateway-Execution-Logs_<api>/<stage>) and the access-log groups of any "
        "API, so no narrower log-group ARN exists. Only apigateway.amazonaws.com assumes it.",
    )
    account = apigw.CfnAccount(scope, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
    account.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
    return account
