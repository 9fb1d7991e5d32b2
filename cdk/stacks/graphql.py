"""Architecture 3: the AppSync GraphQL API, its APPSYNC_JS resolvers, and the SQS work queue
(with DLQ and alarm) between the resolver function and the worker. Chalice has no AppSync and
no SQS partial batch responses: this construct wires the resolvers to the ``appsync_resolver``
function and sets the worker's SQS event source."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_appsync as appsync
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.auth import Auth
from stacks.bedrock import BedrockModel
from stacks.chalice_app import ChaliceApp
from stacks.nag import acknowledge
from stacks.props import SERVICE_NAME
from stacks.roles import lambda_role
from stacks.store import StreamStore

# Logical ids of the Chalice template's functions (app.py names them appsync_resolver and
# appsync_worker) and of the worker's SQS event.
APPSYNC_RESOLVER_FUNCTION = "AppsyncResolver"
APPSYNC_WORKER_FUNCTION = "AppsyncWorker"
APPSYNC_WORKER_EVENT_SOURCE = "AppsyncWorkerSqsEventSource"
# The schema and the APPSYNC_JS resolver code, shared with the local AppSync emulator.
APPSYNC_DIR = Path(__file__).resolve().parents[1] / "appsync"
APPSYNC_SCHEMA_FILE = "schema.graphql"
APPSYNC_JS_RUNTIME = appsync.CfnResolver.AppSyncRuntimeProperty(
    name="APPSYNC_JS", runtime_version="1.0.0"
)
# What one GraphQL request may cost: aliases can repeat a resolver field many times in one
# query (50 aliased streamFrames ran 50 Lambda invocations), so AppSync refuses a query
# nested deeper than this or resolving more resolver fields than this. The local AppSync
# emulator enforces the same two numbers. (AppSync's ranges: depth 1-75, count 1-10000.)
QUERY_DEPTH_LIMIT = 5
RESOLVER_COUNT_LIMIT = 3
# The only mutation the worker may call (IAM auth): it publishes frames to subscribers.
PUBLISH_MUTATION = "publishFrames"
# (type, field, data source, code): the Lambda data source is the appsync_resolver function;
# the NONE data source returns its arguments (publish) or sets the subscription filter.
APPSYNC_LAMBDA = "lambda"
APPSYNC_NONE = "none"
APPSYNC_RESOLVERS = (
    ("Mutation", "startStream", APPSYNC_LAMBDA, "stream_operation.js"),
    ("Mutation", "cancelStream", APPSYNC_LAMBDA, "stream_operation.js"),
    ("Query", "streamFrames", APPSYNC_LAMBDA, "stream_operation.js"),
    ("Mutation", PUBLISH_MUTATION, APPSYNC_NONE, "publish_frames.js"),
    ("Subscription", "onStreamFrame", APPSYNC_NONE, "on_stream_frame.js"),
)
# AppSync gives a resolver 30 s in all; the resolver only writes the store and enqueues.
APPSYNC_RESOLVER_TIMEOUT_S = 10
# The SQS worker: one constant each for the function, the queue and the settings it reads
# (WORKER_TIMEOUT_S, WORKER_BATCH_SIZE, WORKER_MAX_RECEIVE_COUNT).
WORKER_TIMEOUT_S = 180
WORKER_MEMORY_MB = 512
# A record is a whole generation and the records of a batch run one after another, so each
# stream gets its own invocation; Lambda's concurrency is the parallelism.
WORKER_BATCH_SIZE = 1
# Lambda's guidance for SQS event sources: visibility timeout >= 6x the function timeout, so a
# batch retried after throttling is not redelivered while still being processed.
WORK_QUEUE_VISIBILITY_TIMEOUT_S = 6 * WORKER_TIMEOUT_S
# Receives before a message moves to the DLQ; the worker ends the stream with an error frame
# on the last one, so no client waits forever (docs/architecture.md, stream store).
WORKER_MAX_RECEIVE_COUNT = 3
# Caps concurrent worker invocations, i.e. concurrent AppSync streams (Bedrock cost and
# quota). Unlike reserved concurrency, the event source then polls less instead of being
# throttled, and throttled receives would count towards WORKER_MAX_RECEIVE_COUNT.
WORKER_MAX_CONCURRENCY = 100
DLQ_RETENTION = cdk.Duration.days(14)  # SQS's maximum: time to inspect and redrive
# What the event source mapping does with the execution role's permissions, plus
# ChangeMessageVisibility for the worker itself; never on "*" (Chalice's autogen policy).
WORKER_SQS_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
)


class GraphqlStreams(Construct):
    """Built before the Chalice app, and from nothing of it: the Chalice functions name the
    queue and the API in their environment (:meth:`environment`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        auth: Auth,
        store: StreamStore,
        model: BedrockModel,
    ) -> None:
        super().__init__(scope, construct_id)
        self.work_dlq, self.work_queue = self._work_queues()
        self.dlq_alarm = self._dlq_alarm()
        self.api = self._graphql_api(auth)
        # The resolver starts, cancels and reads streams and enqueues work; the worker
        # produces them and publishes the frames to AppSync.
        self.resolver_role = lambda_role(
            self,
            "ResolverRole",
            "llm-stream AppSync resolver: stream store, send to the work queue",
        )
        self.worker_role = lambda_role(
            self,
            "WorkerRole",
            (
                "llm-stream AppSync worker: stream store, one Bedrock model, consume the work "
                "queue, publish frames to this API"
            ),
        )
        store.grant_read_write(self.resolver_role)
        store.grant_read_write(self.worker_role)
        model.grant(self.worker_role)
        queue_arn = self.work_queue.queue_arn
        self.resolver_role.add_to_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue_arn])
        )
        self.worker_role.add_to_policy(
            iam.PolicyStatement(actions=list(WORKER_SQS_ACTIONS), resources=[queue_arn])
        )
        # appsync:GraphQL on apis/<id>/types/Mutation/fields/publishFrames only.
        self.api.grant_mutation(self.worker_role, PUBLISH_MUTATION)

    def environment(self) -> dict[str, str]:
        graphql_url = self.api.graphql_url
        return {
            # WORK_QUEUE_ARN also feeds app.py's @on_sqs_message, but that value is not
            # trusted (see _worker_event_source).
            "WORK_QUEUE_URL": self.work_queue.queue_url,
            "WORK_QUEUE_ARN": self.work_queue.queue_arn,
            "APPSYNC_GRAPHQL_URL": graphql_url,
            "WORKER_BATCH_SIZE": str(WORKER_BATCH_SIZE),
            "WORKER_TIMEOUT_S": str(WORKER_TIMEOUT_S),
            "WORKER_MAX_RECEIVE_COUNT": str(WORKER_MAX_RECEIVE_COUNT),
            "PUBLIC_APPSYNC_GRAPHQL_URL": graphql_url,
            "PUBLIC_APPSYNC_REALTIME_URL": self.realtime_url,
        }

    def roles_for(self, app: ChaliceApp) -> dict[str, iam.Role]:
        app.require_functions(APPSYNC_RESOLVER_FUNCTION, APPSYNC_WORKER_FUNCTION)
        return {
            APPSYNC_RESOLVER_FUNCTION: self.resolver_role,
            APPSYNC_WORKER_FUNCTION: self.worker_role,
        }

    def bind(self, app: ChaliceApp) -> None:
        """Timeouts, the worker's SQS event source and the resolvers. Chalice's per-function
        settings (``lambda_functions``) are read from .chalice/config.json only, never from
        the construct's stage_config, so these are property overrides."""
        app.functions[APPSYNC_RESOLVER_FUNCTION].add_property_override(
            "Timeout", APPSYNC_RESOLVER_TIMEOUT_S
        )
        worker = app.functions[APPSYNC_WORKER_FUNCTION]
        worker.add_property_override("Timeout", WORKER_TIMEOUT_S)
        worker.add_property_override("MemorySize", WORKER_MEMORY_MB)
        self._worker_event_source(worker)
        self._resolvers(app)

    # -- queues ------------------------------------------------------------------------------

    def _work_queues(self) -> tuple[sqs.Queue, sqs.Queue]:
        """The work queue (resolver -> worker) and its DLQ: encrypted at rest, TLS only."""
        dlq = sqs.Queue(
            self,
            "WorkDeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Standard queues keep a message's original enqueue time in the DLQ, so this must
            # exceed the work queue's retention (4 days by default).
            retention_period=DLQ_RETENTION,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        queue = sqs.Queue(
            self,
            "WorkQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(WORK_QUEUE_VISIBILITY_TIMEOUT_S),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=dlq, max_receive_count=WORKER_MAX_RECEIVE_COUNT
            ),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        return dlq, queue

    def _dlq_alarm(self) -> cloudwatch.Alarm:
        """In alarm while any message waits in the DLQ. No action: a deployer subscribes to it."""
        return cloudwatch.Alarm(
            self,
            "WorkDeadLetterQueueAlarm",
            alarm_description=(
                "llm-stream: AppSync work messages failed "
                f"{WORKER_MAX_RECEIVE_COUNT} receives and are in the DLQ; inspect the "
                "worker's logs, then redrive or purge them"
            ),
            metric=self.work_dlq.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # SQS stops publishing metrics of an empty queue that nothing uses: that is OK.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    # -- the API -----------------------------------------------------------------------------

    def _graphql_api(self, auth: Auth) -> appsync.GraphqlApi:
        """Clients with Cognito ID tokens of this stack's app client (default mode), the
        worker with IAM (``@aws_iam`` on publishFrames).

        Logs: field errors only, and without verbose content (request and response headers,
        resolver contexts and evaluated code), which would hold prompts and tokens. The log
        group is this stack's, with retention, instead of one AppSync creates never to expire.
        """
        log_role = iam.Role(
            self,
            "LogRole",
            assumed_by=iam.ServicePrincipal("appsync.amazonaws.com"),
            description="llm-stream AppSync API: write its own log group; nothing else",
        )
        stack = cdk.Stack.of(self)
        api = appsync.GraphqlApi(
            self,
            "Api",
            name=f"{SERVICE_NAME}-{stack.stack_name}",
            definition=appsync.Definition.from_file(str(APPSYNC_DIR / APPSYNC_SCHEMA_FILE)),
            authorization_config=appsync.AuthorizationConfig(
                default_authorization=appsync.AuthorizationMode(
                    authorization_type=appsync.AuthorizationType.USER_POOL,
                    user_pool_config=appsync.UserPoolConfig(
                        user_pool=auth.user_pool,
                        # Tokens of this app client only (ID token aud, access token client_id).
                        app_id_client_regex=f"^{auth.user_pool_client.user_pool_client_id}$",
                        default_action=appsync.UserPoolDefaultAction.ALLOW,
                    ),
                ),
                additional_authorization_modes=[
                    appsync.AuthorizationMode(authorization_type=appsync.AuthorizationType.IAM)
                ],
            ),
            query_depth_limit=QUERY_DEPTH_LIMIT,
            resolver_count_limit=RESOLVER_COUNT_LIMIT,
        )
        # On the L1: the L2's log_config would add CDK's LogRetention custom resource (a Lambda
        # with an AWS managed policy on "*"); the log group below sets the retention instead.
        cfn_api = api.node.default_child
        if not isinstance(cfn_api, appsync.CfnGraphQLApi):
            raise TypeError(f"GraphqlApi's resource is a {type(cfn_api).__name__}")
        cfn_api.log_config = appsync.CfnGraphQLApi.LogConfigProperty(
            cloud_watch_logs_role_arn=log_role.role_arn,
            field_log_level="ERROR",
            exclude_verbose_content=True,
        )
        log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/appsync/apis/{api.api_id}",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        log_group.grant_write(log_role)
        # Should AppSync create the group first, it finds it exists (nothing broader).
        log_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=log_group.log_group_name,
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.log_group = log_group
        # wss://<id>.appsync-realtime-api.<region>.amazonaws.com/graphql (subscriptions).
        self.realtime_url = cfn_api.attr_realtime_url
        acknowledge(
            api,
            "AwsSolutions-ASC3",
            "Request-level logging is on (field log level ERROR, to this stack's log group "
            "with one-month retention); what cdk-nag asks for beyond that is verbose content, "
            "which logs request headers (the caller's ID token) and each resolver's arguments "
            "and results: prompts and generated text. Those must never reach the logs "
            "(docs/security.md: no tokens or prompts), so excludeVerboseContent stays true.",
        )
        return api

    # -- the worker and the resolvers --------------------------------------------------------

    def _worker_event_source(self, worker: cdk.CfnResource) -> None:
        """The worker's SQS event source, set explicitly.

        * Queue: Chalice takes it from app.py's decorator, evaluated when app.py was first
          imported in the process; a cached import (another stack, a test) names another queue.
          (The override also puts a real Fn::GetAtt where the Chalice template has a token
          placeholder.)
        * ReportBatchItemFailures: the worker returns ``batchItemFailures``; without it Lambda
          ignores them and deletes the failed messages with the batch. Chalice cannot set it.
        * MaximumConcurrency: see WORKER_MAX_CONCURRENCY.
        """
        # The typed ``events`` getter cannot deserialize SAM's event union through jsii; the
        # (protected) property bag holds the same values.
        properties = cdk.Stack.of(self).resolve(worker._cfn_properties) or {}  # type: ignore[attr-defined]
        event = (properties.get("events") or {}).get(APPSYNC_WORKER_EVENT_SOURCE) or {}
        if event.get("type") != "SQS":
            raise RuntimeError(
                f"{APPSYNC_WORKER_FUNCTION} has no SQS event {APPSYNC_WORKER_EVENT_SOURCE}: "
                "app.py must declare appsync_worker with @app.on_sqs_message"
            )
        prefix = f"Events.{APPSYNC_WORKER_EVENT_SOURCE}.Properties"
        worker.add_property_override(f"{prefix}.Queue", self.work_queue.queue_arn)
        worker.add_property_override(f"{prefix}.BatchSize", WORKER_BATCH_SIZE)
        worker.add_property_override(f"{prefix}.FunctionResponseTypes", ["ReportBatchItemFailures"])
        worker.add_property_override(
            f"{prefix}.ScalingConfig", {"MaximumConcurrency": WORKER_MAX_CONCURRENCY}
        )

    def _resolvers(self, app: ChaliceApp) -> None:
        """Data sources and APPSYNC_JS unit resolvers for every field of the schema that has
        one (cdk/appsync/*.js, uploaded as assets)."""
        function_arn = app.function_arn(APPSYNC_RESOLVER_FUNCTION)
        # Exactly the function, unqualified: not grant_invoke(), which adds every version and
        # alias (":*"), and which the L2 Lambda data source would call.
        role = iam.Role(
            self,
            "LambdaDataSourceRole",
            assumed_by=iam.ServicePrincipal("appsync.amazonaws.com"),
            description="llm-stream AppSync Lambda data source: invoke appsync_resolver only",
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function_arn])
        )
        api_id = self.api.api_id
        lambda_source = appsync.CfnDataSource(
            self,
            "LambdaDataSource",
            api_id=api_id,
            name="StreamOperations",
            description="startStream, cancelStream, streamFrames: the appsync_resolver function",
            type="AWS_LAMBDA",
            lambda_config=appsync.CfnDataSource.LambdaConfigProperty(
                lambda_function_arn=function_arn
            ),
            service_role_arn=role.role_arn,
        )
        policy = role.node.try_find_child("DefaultPolicy")
        if policy is not None:  # AppSync may invoke as soon as the data source exists
            lambda_source.add_resource_dependency(policy.node.default_child)  # type: ignore[arg-type]
        none_source = appsync.CfnDataSource(
            self,
            "NoneDataSource",
            api_id=api_id,
            name="PassThrough",
            description="publishFrames and onStreamFrame: no data source, resolver code only",
            type="NONE",
        )
        sources = {APPSYNC_LAMBDA: lambda_source, APPSYNC_NONE: none_source}
        self.resolvers: dict[str, appsync.CfnResolver] = {}
        for type_name, field_name, source, code_file in APPSYNC_RESOLVERS:
            scope = Construct(self, f"{type_name}{field_name[:1].upper()}{field_name[1:]}Resolver")
            code = appsync.Code.from_asset(str(APPSYNC_DIR / code_file)).bind(scope)
            resolver = appsync.CfnResolver(
                scope,
                "Resource",
                api_id=api_id,
                type_name=type_name,
                field_name=field_name,
                kind="UNIT",
                data_source_name=sources[source].attr_name,
                runtime=APPSYNC_JS_RUNTIME,
                code_s3_location=code.s3_location,
                code=code.inline_code,
            )
            # A resolver can attach to its field only once the schema defines it.
            self.api.add_schema_dependency(resolver)
            self.resolvers[f"{type_name}.{field_name}"] = resolver
