"""The deployable stack (docs/architecture.md), composed of one construct per concern:

* :class:`~stacks.store.StreamStore`: the two stream-store tables;
* :class:`~stacks.auth.Auth`: the Cognito user pool and app client;
* :class:`~stacks.graphql.GraphqlStreams`: AppSync, its resolvers, the SQS work queue and DLQ
  (architecture 3);
* :class:`~stacks.function_url.StreamFunctionUrl`: the Node.js streamer behind a Function URL
  (architecture 1);
* :class:`~stacks.chalice_app.ChaliceApp`: the Chalice app (app.py) with its REST API and
  Python Lambdas;
* :class:`~stacks.websocket.WebsocketTransport`: the WebSocket API's authorizer, stage and
  permissions (architecture 2);
* :class:`~stacks.hosting.ClientHosting`: the built client on S3 behind CloudFront, which
  routes the REST paths to the REST API on the same origin.

Order matters only for CloudFormation references, which must not form a cycle: the
Function URL and AppSync are built from nothing of the Chalice app (its functions publish
their URLs); the distribution names the REST API and every endpoint (CSP), so nothing of
those names the distribution. The distribution's domain reaches the Function URL's CORS
through a custom resource run after both exist, and reaches GET /config through the
viewer's host header; the REST API needs no CORS through CloudFront (same origin).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.auth import Auth
from stacks.bedrock import BedrockModel
from stacks.chalice_app import ChaliceApp, api_gateway_logs_role
from stacks.function_url import StreamFunctionUrl, check_node_function_dir
from stacks.graphql import GraphqlStreams
from stacks.hosting import ClientHosting, check_client_dist, host_of
from stacks.nag import acknowledge
from stacks.props import SERVICE_NAME, LlmStreamProps, concrete_region
from stacks.rest_stream import RestStreamRoutes
from stacks.store import StreamStore
from stacks.websocket import WS_AUTHORIZER_FUNCTION, WebsocketTransport

# The directory holding the Chalice app (app.py, chalicelib/, .chalice/, requirements.txt).
REPO_ROOT = Path(__file__).resolve().parents[2]
# The id under which aws-cdk-lib puts AwsCustomResource's provider function.
CDK_AWS_CUSTOM_RESOURCE_PROVIDER = "AWS679f53fac002430cb0da5b7982bd2287"
# The CORS origin setting that turns the REST API's CORS off (no extra origin given).
NO_CORS_ORIGIN = "none"


class LlmStreamStack(cdk.Stack):
    """``node_function_dir`` defaults to ``<source_dir>/node_function`` and
    ``client_dist_dir`` to ``<source_dir>/client/dist``; ``require_node_modules`` (see
    check_node_function_dir) is on except in the unit-test synth."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: LlmStreamProps | None = None,
        source_dir: str | os.PathLike[str] = REPO_ROOT,
        node_function_dir: str | os.PathLike[str] | None = None,
        client_dist_dir: str | os.PathLike[str] | None = None,
        require_node_modules: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.props = props = props or LlmStreamProps.from_context(self)
        node_dir = check_node_function_dir(
            Path(source_dir) / "node_function" if node_function_dir is None else node_function_dir,
            require_dependencies=require_node_modules,
        )
        client_dist = check_client_dist(
            Path(source_dir) / "client" / "dist" if client_dist_dir is None else client_dist_dir
        )
        self.model_id = props.model_id_for(concrete_region(self))
        # First, so that it is the template's first output (make deploy prints it last).
        client_url = cdk.CfnOutput(
            self, "ClientUrl", value="", description="The comparison client (open in a browser)"
        )

        self.store = StreamStore(self, "Store")
        self.auth = Auth(self, "Auth", threat_protection=props.threat_protection)
        model = BedrockModel(self, self.model_id)
        self.graphql = GraphqlStreams(
            self, "Graphql", auth=self.auth, store=self.store, model=model
        )
        shared_environment = {
            **self.store.environment(),
            "MODEL_ID": self.model_id,
            **self.auth.environment(),
        }
        self.function_url = StreamFunctionUrl(
            self,
            "Streamer",
            code_dir=node_dir,
            environment=shared_environment,
            store=self.store,
            model=model,
            memory_mb=props.stream_memory_mb,
            reserved_concurrency=props.stream_reserved_concurrency,
            log_level=props.log_level,
        )
        self.websocket = WebsocketTransport(self, "Websocket", store=self.store, model=model)

        extra_origin = props.extra_allowed_origins[0] if props.extra_allowed_origins else None
        self.chalice = ChaliceApp(
            self,
            "ChaliceApp",
            source_dir=source_dir,
            environment={
                **shared_environment,
                # Through CloudFront the page and the REST API share an origin: no CORS,
                # unless the deployer names another origin.
                "CORS_ALLOW_ORIGIN": extra_origin or NO_CORS_ORIGIN,
                "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                "LOG_LEVEL": props.log_level,
                **self.graphql.environment(),
                # GET /config publishes it, so clients need no hand-copied URL.
                "PUBLIC_FUNCTION_URL": self.function_url.url.url,
            },
            lambda_timeout_s=props.lambda_timeout_s,
            lambda_memory_mb=props.lambda_memory_mb,
        )
        self.chalice.assign_roles(
            {**self.websocket.roles_for(self.chalice), **self.graphql.roles_for(self.chalice)},
            # The $connect authorizer, which Chalice knows only as a plain function.
            authorizers={WS_AUTHORIZER_FUNCTION},
        )
        logs_ready = (
            api_gateway_logs_role(self) if props.api_gateway_logs_role == "create" else None
        )
        self.chalice.configure_rest_stage(logs_ready=logs_ready)
        # Architecture 4: the streamer behind the REST API's gateway authorizer.
        self.rest_stream = RestStreamRoutes(
            self,
            "RestStream",
            api=self.chalice.get_resource("RestAPI"),
            function=self.function_url.function,
            web_acl_arn=props.rest_web_acl_arn,
        )
        # A REST proxy integration adds no CORS headers: the function does, as Chalice does.
        self.function_url.function.add_environment(
            "CORS_ALLOW_ORIGIN", extra_origin or NO_CORS_ORIGIN
        )
        self.websocket.bind(self.chalice, logs_ready=logs_ready)
        self.graphql.bind(self.chalice)

        self.hosting = ClientHosting(
            self,
            "Hosting",
            client_dist=client_dist,
            rest_api_domain=self.chalice.rest_api_domain,
            connect_sources=[
                f"https://{host_of(self.function_url.url.url)}",
                f"wss://{self.websocket.host}",
                f"https://{host_of(self.graphql.api.graphql_url)}",
                f"wss://{host_of(self.graphql.realtime_url)}",
                # Sign-in: the browser calls Cognito's API directly.
                f"https://cognito-idp.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}",
            ],
        )
        self.function_url.allow_origins([self.hosting.origin, *props.extra_allowed_origins])
        client_url.value = f"{self.hosting.origin}/"
        self._cdk_provider_functions()
        self._outputs()

    def _cdk_provider_functions(self) -> None:
        """CDK's own custom-resource functions (client upload, CORS update), which CDK puts at
        the stack's top level: they log as JSON too, like every function of the stack."""
        for child in self.node.children:
            if not child.node.id.startswith(("Custom::", CDK_AWS_CUSTOM_RESOURCE_PROVIDER)):
                continue
            for sub in child.node.find_all():
                if isinstance(sub, lambda_.CfnFunction):
                    sub.add_property_override("LoggingConfig.LogFormat", "JSON")
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                acknowledge(
                    child,
                    "AwsSolutions-L1",
                    "The client upload function is aws-cdk-lib's BucketDeployment provider, "
                    "whose Python runtime (and AWS CLI layer) aws-cdk-lib fixes and moves "
                    "forward with its own releases; it runs only during deployments.",
                )

    def _outputs(self) -> None:
        cdk.CfnOutput(
            self,
            "RestApiUrl",
            value=self.chalice.rest_api_url,
            description="REST API base URL (GET /health, GET /config, /streams/...)",
        )
        cdk.CfnOutput(
            self,
            "WebsocketUrl",
            value=self.websocket.url,
            description=(
                "WebSocket URL; offer subprotocols llm-stream.v1 and auth.<ID token> "
                "(Sec-WebSocket-Protocol)"
            ),
        )
        cdk.CfnOutput(
            self,
            "FunctionUrl",
            value=self.function_url.url.url,
            description=(
                "Function URL (SSE): POST a start request, or GET ?streamId= to resume, with "
                "Authorization: Bearer <ID token>"
            ),
        )
        cdk.CfnOutput(
            self,
            "RestStreamUrl",
            value=self.rest_stream.url,
            description=(
                "REST API streaming (SSE): POST a start request here, or GET "
                "<url>/<streamId>/events to resume, with Authorization: Bearer <ID token>"
            ),
        )
        cdk.CfnOutput(self, "UserPoolId", value=self.auth.user_pool.user_pool_id)
        cdk.CfnOutput(
            self, "UserPoolClientId", value=self.auth.user_pool_client.user_pool_client_id
        )
        cdk.CfnOutput(self, "Region", value=self.region)
        cdk.CfnOutput(self, "ModelId", value=self.model_id)
        cdk.CfnOutput(self, "StreamsTableName", value=self.store.streams_table.table_name)
        cdk.CfnOutput(self, "FramesTableName", value=self.store.frames_table.table_name)
        cdk.CfnOutput(
            self,
            "AppsyncGraphqlUrl",
            value=self.graphql.api.graphql_url,
            description="AppSync GraphQL URL (queries, mutations); Authorization: <ID token>",
        )
        cdk.CfnOutput(
            self,
            "AppsyncRealtimeUrl",
            value=self.graphql.realtime_url,
            description="AppSync real-time URL (subscriptions, graphql-ws)",
        )
        cdk.CfnOutput(self, "AppsyncApiId", value=self.graphql.api.api_id)
        cdk.CfnOutput(self, "WorkQueueUrl", value=self.graphql.work_queue.queue_url)
        cdk.CfnOutput(self, "WorkDeadLetterQueueUrl", value=self.graphql.work_dlq.queue_url)
        cdk.CfnOutput(
            self,
            "WorkDeadLetterQueueAlarmName",
            value=self.graphql.dlq_alarm.alarm_name,
            description="In alarm while the work DLQ holds messages; add actions to be told",
        )
        cdk.CfnOutput(
            self,
            "ClientBucketName",
            value=self.hosting.bucket.bucket_name,
            description="The client's files (deployed from client/dist)",
        )
