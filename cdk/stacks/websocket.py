"""Architecture 2: the WebSocket API (Chalice's routes and functions) and what Chalice cannot
declare: the ``$connect`` authorizer, an auto-deploying stage with throttling and access logs,
the ``@connections`` and generator permissions, and the generator's asynchronous invoke
settings (no retries; a failure destination when the app has one)."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.bedrock import BedrockModel
from stacks.chalice_app import ChaliceApp
from stacks.nag import acknowledge, resource_finding
from stacks.props import API_STAGE
from stacks.roles import lambda_role
from stacks.store import StreamStore

# Logical ids of the Chalice template's WebSocket functions (app.py names them; Chalice fixes
# the WebsocketConnect/Message/Disconnect ids).
WS_AUTHORIZER_FUNCTION = "WsAuthorize"
WS_MESSAGE_FUNCTION = "WebsocketMessage"
WS_GENERATE_FUNCTION = "WsGenerate"
# Optional: app.py's ws_generate_failed, the generator's on-failure destination. It receives
# Lambda's record of a failed asynchronous invocation and ends that stream with an error frame
# at once, instead of after the stream's lease lapses.
WS_GENERATE_FAILED_FUNCTION = "WsGenerateFailed"
WS_CONNECTION_FUNCTIONS = ("WebsocketConnect", "WebsocketDisconnect")
WS_ROUTES = ("WebsocketConnectRoute", "WebsocketMessageRoute", "WebsocketDisconnectRoute")
# The client offers ["llm-stream.v1", "auth.<idToken>"]: the token never appears in a URL.
WS_IDENTITY_SOURCE = "route.request.header.Sec-WebSocket-Protocol"
# Lambda's maximum: one invocation runs a whole generation (ws_flow stops 10 s before it).
GENERATOR_TIMEOUT_S = 900
# Stage-wide limits on client messages ($connect, $default): a stream start costs an async
# Lambda of up to 15 min and Bedrock tokens, so a flood is cut off at the gateway.
WS_THROTTLE_RATE_PER_S = 50
WS_THROTTLE_BURST = 100
# The $default route (every client message) on its own, below the stage's limit, so a message
# flood cannot use up the stage's share that $connect needs. The per-connection message rate
# is the app's (ws_flow); these bound all connections together.
WS_DEFAULT_ROUTE_THROTTLE_RATE_PER_S = 30
WS_DEFAULT_ROUTE_THROTTLE_BURST = 60
WS_ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTimeEpoch",
        "routeKey": "$context.routeKey",
        "eventType": "$context.eventType",
        "connectionId": "$context.connectionId",
        "status": "$context.status",
        "sub": "$context.authorizer.sub",
        "error": "$context.error.message",
        "authorizerError": "$context.authorizer.error",
    }
)


class WebsocketTransport(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, store: StreamStore, model: BedrockModel
    ) -> None:
        super().__init__(scope, construct_id)
        self._store = store
        # $connect/$disconnect only accept or acknowledge a socket: no data, no model.
        self.connection_role = lambda_role(
            self,
            "ConnectionRole",
            "llm-stream $connect/$disconnect handlers: write logs; nothing else",
        )
        # Separate from the generator's role: this one may invoke the generator, and a role
        # granting invoke on the function that uses it would be a CloudFormation cycle.
        self.message_role = lambda_role(
            self,
            "MessageRole",
            (
                "llm-stream WebSocket messages: stream store, post to this API's connections, "
                "start the generator"
            ),
        )
        self.generator_role = lambda_role(
            self,
            "GeneratorRole",
            (
                "llm-stream generator: stream store, one Bedrock model, post to this API's "
                "connections"
            ),
        )
        store.grant_read_write(self.message_role)
        store.grant_read_write(self.generator_role)
        model.grant(self.generator_role)
        self.failure_role: iam.Role | None = None

    def roles_for(self, app: ChaliceApp) -> dict[str, iam.Role]:
        """The role of each WebSocket function of ``app`` (the authorizer's is the app's)."""
        app.require_functions(
            WS_AUTHORIZER_FUNCTION,
            WS_MESSAGE_FUNCTION,
            WS_GENERATE_FUNCTION,
            *WS_CONNECTION_FUNCTIONS,
        )
        roles = {
            WS_MESSAGE_FUNCTION: self.message_role,
            WS_GENERATE_FUNCTION: self.generator_role,
            **dict.fromkeys(WS_CONNECTION_FUNCTIONS, self.connection_role),
        }
        if WS_GENERATE_FAILED_FUNCTION in app.functions:
            # Like the message handler: the store, and an error frame to the connection.
            self.failure_role = lambda_role(
                self,
                "GenerateFailedRole",
                (
                    "llm-stream failed-generation handler: stream store, post to this API's "
                    "connections"
                ),
            )
            self._store.grant_read_write(self.failure_role)
            roles[WS_GENERATE_FAILED_FUNCTION] = self.failure_role
        return roles

    def bind(self, app: ChaliceApp, *, logs_ready: cdk.CfnResource | None) -> None:
        """Wire the Chalice WebSocket resources (after :meth:`roles_for` and the app's
        ``assign_roles``)."""
        self.api_id = app.get_resource("WebsocketAPI").ref
        # The stage is Chalice's api_gateway_stage, the same as the REST API's.
        self.host = f"{self.api_id}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        self.url = f"wss://{self.host}/{API_STAGE}"
        self.management_url = f"https://{self.host}/{API_STAGE}"
        self._grant(app)
        # Every function imports app.py, which builds the @connections client from the
        # settings; GET /config publishes the public URL.
        app.set_environment("WEBSOCKET_MANAGEMENT_URL", self.management_url)
        app.set_environment("PUBLIC_WEBSOCKET_URL", self.url)
        # Only the invoker: the generator naming itself would be a CloudFormation cycle.
        app.set_environment(
            "GENERATE_FUNCTION_NAME",
            app.functions[WS_GENERATE_FUNCTION].ref,
            only=WS_MESSAGE_FUNCTION,
        )
        # Everything else keeps the stage's lambda_timeout (30 s: API Gateway's integration
        # timeout is 29 s, and the message handler hands generation off and returns at once).
        app.functions[WS_GENERATE_FUNCTION].add_property_override("Timeout", GENERATOR_TIMEOUT_S)
        self.authorizer = self._authorizer(app)
        self._stage(app, logs_ready)
        self._generator_async_config(app)
        self._acknowledgements(app)

    def connections_arn(self) -> str:
        """``@connections`` POST (post_to_connection) on this API's stage only. The app never
        reads (GET) or closes (DELETE) a connection, so neither is granted."""
        return cdk.Stack.of(self).format_arn(
            service="execute-api",
            resource=self.api_id,
            resource_name=f"{API_STAGE}/POST/@connections/*",
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )

    def _posting_roles(self) -> list[iam.Role]:
        roles = [self.message_role, self.generator_role]
        return [*roles, self.failure_role] if self.failure_role is not None else roles

    def _grant(self, app: ChaliceApp) -> None:
        post = iam.PolicyStatement(
            actions=["execute-api:ManageConnections"], resources=[self.connections_arn()]
        )
        # Error frames and resume replays; the stream's frames; a failed generation's error.
        for role in self._posting_roles():
            role.add_to_policy(post)
        # Exactly the generator, unqualified (ws_message invokes it by name, InvocationType
        # Event); not grant_invoke(), which would add every version and alias (":*").
        self.message_role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[app.function_arn(WS_GENERATE_FUNCTION)],
            )
        )

    def _authorizer(self, app: ChaliceApp) -> apigwv2.CfnAuthorizer:
        """The ``$connect`` Lambda REQUEST authorizer, which Chalice cannot declare
        (docs/security.md).

        The identity source is required to be present: a handshake without the header gets 401
        from API Gateway without invoking the function. WebSocket authorizers have no result
        cache (the TTL setting is HTTP-API only), so every handshake is verified.
        """
        function_arn = app.function_arn(WS_AUTHORIZER_FUNCTION)
        authorizer = apigwv2.CfnAuthorizer(
            self,
            "ConnectAuthorizer",
            api_id=self.api_id,
            name="ws-connect-authorizer",
            authorizer_type="REQUEST",
            identity_source=[WS_IDENTITY_SOURCE],
            authorizer_uri=(
                f"arn:{cdk.Aws.PARTITION}:apigateway:{cdk.Aws.REGION}:lambda:path/2015-03-31"
                f"/functions/{function_arn}/invocations"
            ),
        )
        # Resource policy for exactly this authorizer, not any route or API. (L1, because
        # add_permission on Chalice's imported IFunction may be skipped when CDK cannot prove
        # the function is in this stack's account.)
        lambda_.CfnPermission(
            self,
            "ConnectAuthorizerInvokePermission",
            action="lambda:InvokeFunction",
            function_name=function_arn,
            principal="apigateway.amazonaws.com",
            source_arn=cdk.Stack.of(self).format_arn(
                service="execute-api",
                resource=self.api_id,
                resource_name=f"authorizers/{authorizer.ref}",
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            ),
        )
        # Set on the typed L1 (CfnInclude builds one), not as a raw override, so that
        # cdk-nag, which reads the L1's properties, sees the authorizer too.
        route = app.included(apigwv2.CfnRoute, "WebsocketConnectRoute")
        route.authorization_type = "CUSTOM"
        route.authorizer_id = authorizer.ref
        return authorizer

    def _stage(self, app: ChaliceApp, logs_ready: cdk.CfnResource | None) -> None:
        """Make the stage auto-deploy, so route and authorizer changes go live; throttle it
        and its $default route; log every connect, message and disconnect.

        Chalice pairs the stage with a Deployment of a static logical id, which CloudFormation
        never replaces: after the first deploy, a changed route (such as adding the authorizer)
        would stay undeployed. AutoDeploy redeploys on every API change instead, and a
        stage's DeploymentId cannot be updated while AutoDeploy is on (API Gateway v2 API
        reference). So the stage loses its DeploymentId and Chalice's Deployment is dropped
        (it would be an unused snapshot); the stage depends on the routes, so its first
        deployment already includes them and the authorizer.
        """
        stage = app.included(apigwv2.CfnStage, "WebsocketAPIStage")
        stage.auto_deploy = True
        stage.deployment_id = None
        stage.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=WS_THROTTLE_RATE_PER_S,
            throttling_burst_limit=WS_THROTTLE_BURST,
        )
        stage.route_settings = {
            "$default": {
                "ThrottlingRateLimit": WS_DEFAULT_ROUTE_THROTTLE_RATE_PER_S,
                "ThrottlingBurstLimit": WS_DEFAULT_ROUTE_THROTTLE_BURST,
            }
        }
        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_log_group.log_group_arn, format=WS_ACCESS_LOG_FORMAT
        )
        if logs_ready is not None:
            stage.add_resource_dependency(logs_ready)
        if not app.sam_template.node.try_remove_child("WebsocketAPIDeployment"):
            raise RuntimeError("the Chalice template has no WebsocketAPIDeployment")
        for route_id in WS_ROUTES:
            # The route-level settings name $default: the route must exist first.
            stage.add_resource_dependency(app.get_resource(route_id))

    def _generator_async_config(self, app: ChaliceApp) -> None:
        """No automatic retry of the generator's asynchronous invoke; on failure, the
        failure handler when the app has one.

        A retry could never produce twice (the generator claims the stream with a conditional
        write, ``attribute_not_exists(claimedBy)``), but neither can it resume: after a crash
        mid-stream the stream is claimed, so a retry 1-2 minutes later would only skip it.
        Throttled invocations are still requeued by Lambda (that is not a retry attempt).
        Lambda invokes an on-failure destination with the generator's own role, which may
        invoke exactly that function.
        """
        generator = app.functions[WS_GENERATE_FUNCTION]
        destination = None
        if WS_GENERATE_FAILED_FUNCTION in app.functions:
            failed_arn = app.function_arn(WS_GENERATE_FAILED_FUNCTION)
            self.generator_role.add_to_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[failed_arn])
            )
            destination = lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(destination=failed_arn)
            )
        config = lambda_.CfnEventInvokeConfig(
            self,
            "GenerateEventInvokeConfig",
            function_name=generator.ref,
            qualifier="$LATEST",
            maximum_retry_attempts=0,
            destination_config=destination,
        )
        if destination is not None:
            # Lambda checks the destination permission when the config is created.
            policy = self.generator_role.node.try_find_child("DefaultPolicy")
            config.add_resource_dependency(policy.node.default_child)  # type: ignore[union-attr, arg-type]
        # The message handler can start a generation only once no-retry is in force.
        app.functions[WS_MESSAGE_FUNCTION].add_resource_dependency(config)

    def _acknowledgements(self, app: ChaliceApp) -> None:
        connections = resource_finding(self, self.connections_arn())
        for role in self._posting_roles():
            acknowledge(
                role,
                f"AwsSolutions-IAM5[{connections}]",
                "The last part of an @connections ARN is the connection id, which API Gateway "
                "assigns to each client at $connect and the handlers learn only at run time, "
                "so no narrower resource exists. The ARN is fixed to this WebSocket API's id, "
                f"its stage ({API_STAGE}) and POST (post_to_connection); GET and DELETE are "
                "not granted.",
            )
        for route_id in ("WebsocketMessageRoute", "WebsocketDisconnectRoute"):
            acknowledge(
                app.get_resource(route_id),
                "AwsSolutions-APIG4",
                "API Gateway WebSocket APIs authorize only the $connect route (here the Lambda "
                "REQUEST authorizer ConnectAuthorizer); $default and $disconnect cannot have an "
                "authorizer and run only on a connection authorized at $connect. Its context "
                "(sub) reaches them in requestContext.authorizer, and the message handler "
                "refuses any message without it.",
            )
