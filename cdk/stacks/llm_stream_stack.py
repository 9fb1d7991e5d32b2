"""The deployable stack (docs/architecture.md): the Chalice app (REST API, WebSocket API and their
Python Lambdas), the Node.js streaming Lambda behind a Function URL (architecture 1), the
AppSync GraphQL API with its SQS work queue and DLQ (architecture 3), the Cognito user pool and
app client, and the two stream-store tables.

Chalice has no WebSocket authorizer; this stack adds the ``$connect`` REQUEST authorizer, makes
the WebSocket stage auto-deploy, and scopes ``@connections`` and generator-invoke permissions.
Chalice has no AppSync and no SQS partial batch responses; this stack wires the GraphQL
resolvers to the ``appsync_resolver`` function and fixes the worker's SQS event source.

Settings reach the Python Lambdas only through ``stage_config["environment_variables"]``:
the Chalice construct names its stage after the stack path, so the stages of
``.chalice/config.json`` are never applied here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_appsync as appsync
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from chalice.cdk import Chalice
from chalice.config import Config as ChaliceConfig
from chalice.deploy.packager import DependencyBuilder, MissingDependencyError, PipRunner
from constructs import Construct

from chalicelib.stream_store import FRAMES_TABLE_SCHEMA, STREAMS_TABLE_SCHEMA

# The directory holding the Chalice app (app.py, chalicelib/, .chalice/, requirements.txt).
REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICE_NAME = "llm-stream"
API_STAGE = "api"
LAMBDA_PYTHON_RUNTIME = "python3.12"
DEFAULT_MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
# Placeholder: the origin of the Vite dev server (`npm run dev` in client/), so a locally run
# client can use a deployed backend. A later issue replaces it with the CloudFront client URL.
DEFAULT_ALLOWED_ORIGIN = "http://localhost:5173"
DEFAULT_LOG_LEVEL = "INFO"

# Logical ids of the Chalice template's WebSocket functions (app.py names them; Chalice fixes
# the WebsocketConnect/Message/Disconnect ids).
WS_AUTHORIZER_FUNCTION = "WsAuthorize"
WS_MESSAGE_FUNCTION = "WebsocketMessage"
WS_GENERATE_FUNCTION = "WsGenerate"
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

# Prefixes of system-defined (cross-Region) inference profile ids, e.g. "us.anthropic.…".
_INFERENCE_PROFILE_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})
# ConverseStream is authorised as InvokeModelWithResponseStream, Converse as InvokeModel.
BEDROCK_ACTIONS = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")

_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_CfnT = TypeVar("_CfnT", bound=cdk.CfnResource)

# Modules of the Chalice project that its packaging imports (see _chalice_packaging).
_APP_MODULES = ("app", "chalicelib")

# The Node.js streaming Lambda (architecture 1): response streaming is native only on the
# Node.js managed runtimes. The newest aws-cdk-lib offers, which cdk-nag's AwsSolutions-L1 wants.
NODE_RUNTIME = lambda_.Runtime.NODEJS_24_X
NODE_HANDLER = "index.handler"
NODE_ENTRY_FILE = "index.mjs"
# Not shipped: the function's tests, local npm settings (may hold registry tokens), coverage.
NODE_ASSET_EXCLUDE = ("test", "test/**", "*.test.mjs", ".npmrc", "coverage")
STREAM_FUNCTION_TIMEOUT_S = 900  # Lambda's maximum: one invocation streams a whole generation
DEFAULT_STREAM_RESERVED_CONCURRENCY = 20
# Request headers a browser may send to the Function URL (one per entry, C6): the ID token,
# the JSON body, and the SSE resume position.
FUNCTION_URL_ALLOWED_HEADERS = ("authorization", "content-type", "last-event-id")
FUNCTION_URL_CORS_MAX_AGE_S = 600
# Architecture 3 (AppSync + SQS). Logical ids of the Chalice template's functions (app.py names
# them appsync_resolver and appsync_worker) and of the worker's SQS event.
APPSYNC_RESOLVER_FUNCTION = "AppsyncResolver"
APPSYNC_WORKER_FUNCTION = "AppsyncWorker"
APPSYNC_WORKER_EVENT_SOURCE = "AppsyncWorkerSqsEventSource"
# The schema and the APPSYNC_JS resolver code, shared with the local AppSync emulator.
APPSYNC_DIR = Path(__file__).resolve().parents[1] / "appsync"
APPSYNC_SCHEMA_FILE = "schema.graphql"
APPSYNC_JS_RUNTIME = appsync.CfnResolver.AppSyncRuntimeProperty(
    name="APPSYNC_JS", runtime_version="1.0.0"
)
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

# Python level names (LOG_LEVEL) as Lambda's application log levels (JSON log format).
_APPLICATION_LOG_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
    "CRITICAL": lambda_.ApplicationLogLevel.FATAL,
}


def _context_optional_int(value: Any, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() in {"none", "off", ""}:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer or 'none', got {value!r}") from None


def _context_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


@dataclass(frozen=True)
class LlmStreamProps:
    """What a deployer may choose. Each field also comes from CDK context (``-c name=value``)."""

    model_id: str = DEFAULT_MODEL_ID  # context: modelId
    allowed_origin: str = DEFAULT_ALLOWED_ORIGIN  # context: allowedOrigin
    log_level: str = DEFAULT_LOG_LEVEL  # context: logLevel
    # Cognito Plus feature plan with threat protection (billed per monthly active user).
    threat_protection: bool = True  # context: threatProtection
    lambda_timeout_s: int = 30  # API Gateway's REST integration timeout is 29 s
    lambda_memory_mb: int = 512  # more memory = more CPU = faster cold start (crypto, powertools)
    stream_memory_mb: int = 512  # the Node.js streaming Lambda
    # Caps the Node.js streaming Lambda's concurrent generations (each up to 15 min of Bedrock
    # tokens), bounding cost. None: no reservation (accounts whose concurrency quota is still
    # the new-account default cannot reserve any). Context: streamReservedConcurrency ("none").
    stream_reserved_concurrency: int | None = DEFAULT_STREAM_RESERVED_CONCURRENCY

    def __post_init__(self) -> None:
        if not _MODEL_ID_RE.match(self.model_id):
            raise ValueError(
                f"modelId must be a Bedrock model or inference profile id, got {self.model_id!r}"
            )
        origin = self.allowed_origin
        if not cdk.Token.is_unresolved(origin) and not _ORIGIN_RE.match(origin):
            # "*" would let any web page call the API with a user's token.
            raise ValueError(
                f"allowedOrigin must be one origin like https://example.com "
                f"(no '*', no path, no trailing slash), got {origin!r}"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(f"logLevel must be one of {sorted(_LOG_LEVELS)}")
        concurrency = self.stream_reserved_concurrency
        if concurrency is not None and not 1 <= concurrency <= 1000:
            # 0 would throttle every request; Lambda's default account quota is 1000.
            raise ValueError(
                f"streamReservedConcurrency must be 1..1000 or none, got {concurrency!r}"
            )

    @classmethod
    def from_context(cls, scope: Construct) -> LlmStreamProps:
        node = scope.node
        return cls(
            model_id=node.try_get_context("modelId") or DEFAULT_MODEL_ID,
            allowed_origin=node.try_get_context("allowedOrigin") or DEFAULT_ALLOWED_ORIGIN,
            log_level=(node.try_get_context("logLevel") or DEFAULT_LOG_LEVEL).upper(),
            threat_protection=_context_bool(node.try_get_context("threatProtection"), True),
            stream_reserved_concurrency=_context_optional_int(
                node.try_get_context("streamReservedConcurrency"),
                DEFAULT_STREAM_RESERVED_CONCURRENCY,
            ),
        )


def split_inference_profile(model_id: str) -> tuple[str | None, str]:
    """``("us", "anthropic.claude…")`` for a system-defined inference profile id,
    ``(None, model_id)`` for a plain foundation model id."""
    prefix, _, rest = model_id.partition(".")
    if prefix in _INFERENCE_PROFILE_PREFIXES and "." in rest:
        return prefix, rest
    return None, model_id


def nag_text(value: Any) -> str:
    """A resolved value as cdk-nag names it in a finding id: ``Ref`` as ``<Id>`` (pseudo
    parameters too), ``Fn::GetAtt`` as ``<Id.Attr>``, ``Fn::Join`` concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(nag_text(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    raise ValueError(f"cannot name {value!r} as cdk-nag does")


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


def _is_app_module(name: str) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in _APP_MODULES)


@contextlib.contextmanager
def _chalice_packaging(source_dir: str, runtime: str) -> Iterator[None]:
    """Run the Chalice construct's in-process ``chalice package`` correctly and without
    side effects. Chalice 1.34.0 needs three corrections, all undone on exit:

    * Target runtime. Chalice packages for the Python that runs synth (3.11 here). Overriding
      only the template's Runtime would ship cp311-only binaries (cffi's
      ``_cffi_backend.cpython-311-…so``, which cryptography imports) to a python3.12 Lambda,
      where ``import cryptography`` fails. So Chalice is told the target runtime, and its pip
      calls for manylinux wheels get the matching ``--python-version`` (Chalice passes only
      ``--abi``, and pip then still asks for the running interpreter's wheels).
    * Missing wheels. Chalice prints "Could not install dependencies" and builds a zip
      without them; here that fails the synth instead of deploying a broken function.
    * Process state. Packaging imports the project's ``app.py`` (cached in ``sys.modules``),
      writes the stage env vars (CDK token strings) into ``os.environ``, and prepends the
      project to ``sys.path`` only if absent. The project is put first (so ``import app``
      cannot find another ``app.py``, such as the CDK entry point), the app is imported
      fresh with this stack's settings (the CORS origin is read at import), and nothing
      leaks into a second stack or a test session.
    """
    python_version = runtime.removeprefix("python")
    original_execute = PipRunner._execute
    original_build = DependencyBuilder.build_site_packages

    def execute(self: PipRunner, command: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        if command == "download" and "--abi" in args and "--python-version" not in args:
            args = [*args, "--python-version", python_version]
        return original_execute(self, command, args, *rest, **kw)

    def build_site_packages(self: DependencyBuilder, abi: str, *args: Any) -> None:
        try:
            original_build(self, abi, *args)
        except MissingDependencyError as exc:
            names = ", ".join(sorted(p.identifier for p in exc.missing))
            raise RuntimeError(f"no {abi} manylinux wheel for: {names}") from None

    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    saved_modules = {n: m for n, m in sys.modules.items() if _is_app_module(n)}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(
                ChaliceConfig, "lambda_python_version", property(lambda _self: runtime)
            )
        )
        stack.enter_context(mock.patch.object(PipRunner, "_execute", execute))
        stack.enter_context(
            mock.patch.object(DependencyBuilder, "build_site_packages", build_site_packages)
        )
        # Chalice warns that the running Python differs from the Lambda one: intended here.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="You are currently running")
        for name in saved_modules:
            del sys.modules[name]
        others = [p for p in sys.path if os.path.abspath(p or ".") != source_dir]
        sys.path[:] = [source_dir, *others]
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            sys.path[:] = saved_path
            for name in [n for n in sys.modules if _is_app_module(n)]:
                del sys.modules[name]
            sys.modules.update(saved_modules)


class LlmStreamStack(cdk.Stack):
    """Chalice REST and WebSocket APIs + Lambdas, the Node.js Function URL, the AppSync API
    with its SQS work queue and DLQ, Cognito, and the DynamoDB stream store.

    ``node_function_dir`` defaults to ``<source_dir>/node_function``; ``require_node_modules``
    (see :func:`check_node_function_dir`) is on except in the unit-test synth.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: LlmStreamProps | None = None,
        source_dir: str | os.PathLike[str] = REPO_ROOT,
        node_function_dir: str | os.PathLike[str] | None = None,
        require_node_modules: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.props = props or LlmStreamProps.from_context(self)
        node_dir = check_node_function_dir(
            Path(source_dir) / "node_function" if node_function_dir is None else node_function_dir,
            require_dependencies=require_node_modules,
        )

        self.streams_table = self._table("StreamsTable", STREAMS_TABLE_SCHEMA)
        self.frames_table = self._table("FramesTable", FRAMES_TABLE_SCHEMA)
        self.user_pool, self.user_pool_client = self._cognito()

        # Roles are ours, not Chalice's (autogen off): least privilege, visible to cdk-nag.
        self.handler_role = self._lambda_role(
            "HandlerRole",
            "llm-stream REST and other Python handlers: stream store tables, logs",
        )
        self.authorizer_role = self._lambda_role(
            "AuthorizerRole",
            "llm-stream API authorizers: verify JWTs, write logs; nothing else",
        )
        # $connect/$disconnect only accept or acknowledge a socket: no data, no model.
        self.connection_role = self._lambda_role(
            "WsConnectionRole",
            "llm-stream $connect/$disconnect handlers: write logs; nothing else",
        )
        # Separate from the generator's role: this one may invoke the generator, and a role
        # granting invoke on the function that uses it would be a CloudFormation cycle.
        self.ws_message_role = self._lambda_role(
            "WsMessageRole",
            (
                "llm-stream WebSocket messages: stream store, post to this API's connections, "
                "start the generator"
            ),
        )
        self.generator_role = self._lambda_role(
            "GeneratorRole",
            (
                "llm-stream generator: stream store, one Bedrock model, post to this API's "
                "connections"
            ),
        )
        # Architecture 3: the resolver starts, cancels and reads streams and enqueues work;
        # the worker produces them and publishes the frames to AppSync.
        self.appsync_resolver_role = self._lambda_role(
            "AppsyncResolverRole",
            "llm-stream AppSync resolver: stream store, send to the work queue",
        )
        self.appsync_worker_role = self._lambda_role(
            "AppsyncWorkerRole",
            (
                "llm-stream AppSync worker: stream store, one Bedrock model, consume the work "
                "queue, publish frames to this API"
            ),
        )
        for role in (
            self.handler_role,
            self.ws_message_role,
            self.generator_role,
            self.appsync_resolver_role,
            self.appsync_worker_role,
        ):
            self.streams_table.grant_read_write_data(role)
            self.frames_table.grant_read_write_data(role)
        # Only the producers call Bedrock.
        self._grant_bedrock(self.generator_role)
        self._grant_bedrock(self.appsync_worker_role)

        # Built before the Chalice app, and from nothing of it (as the Function URL): the
        # Chalice functions name the queue and the API in their environment.
        self.work_dlq, self.work_queue = self._work_queues()
        self.dlq_alarm = self._dlq_alarm()
        self.graphql_api = self._graphql_api()
        self._grant_appsync_sqs()

        # Settings every function reads (Python and Node.js alike).
        shared_environment = {
            "STREAMS_TABLE": self.streams_table.table_name,
            "FRAMES_TABLE": self.frames_table.table_name,
            "MODEL_ID": self.props.model_id,
            "USER_POOL_ID": self.user_pool.user_pool_id,
            "USER_POOL_CLIENT_ID": self.user_pool_client.user_pool_client_id,
        }
        # Built before the Chalice app, and from nothing of it: the Chalice functions name its
        # URL (PUBLIC_FUNCTION_URL), so the reverse would be a CloudFormation cycle.
        self.stream_function, self.function_url = self._stream_function(
            node_dir, shared_environment
        )

        graphql_url = self.graphql_api.graphql_url
        environment = {
            **shared_environment,
            "CORS_ALLOW_ORIGIN": self.props.allowed_origin,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "LOG_LEVEL": self.props.log_level,
            # Architecture 3. WORK_QUEUE_ARN also feeds app.py's @on_sqs_message, but that
            # value is not trusted (see _appsync_worker_event_source).
            "WORK_QUEUE_URL": self.work_queue.queue_url,
            "WORK_QUEUE_ARN": self.work_queue.queue_arn,
            "APPSYNC_GRAPHQL_URL": graphql_url,
            "WORKER_BATCH_SIZE": str(WORKER_BATCH_SIZE),
            "WORKER_TIMEOUT_S": str(WORKER_TIMEOUT_S),
            "WORKER_MAX_RECEIVE_COUNT": str(WORKER_MAX_RECEIVE_COUNT),
            "PUBLIC_APPSYNC_GRAPHQL_URL": graphql_url,
            "PUBLIC_APPSYNC_REALTIME_URL": self.graphql_realtime_url,
        }
        project_dir = os.path.abspath(source_dir)
        with _chalice_packaging(project_dir, LAMBDA_PYTHON_RUNTIME):
            self.chalice = Chalice(
                self,
                "ChaliceApp",
                source_dir=project_dir,
                stage_config={
                    "api_gateway_stage": API_STAGE,
                    "lambda_timeout": self.props.lambda_timeout_s,
                    "lambda_memory_size": self.props.lambda_memory_mb,
                    "autogen_policy": False,
                    "manage_iam_role": False,
                    "iam_role_arn": self.handler_role.role_arn,
                    "environment_variables": environment,
                },
            )
        self.websocket_api_id = self.chalice.get_resource("WebsocketAPI").ref
        # The stage is Chalice's api_gateway_stage, the same as the REST API's.
        ws_host = f"{self.websocket_api_id}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        self.websocket_url = f"wss://{ws_host}/{API_STAGE}"
        self.websocket_management_url = f"https://{ws_host}/{API_STAGE}"

        functions = self.serverless_functions()
        self._grant_websocket(functions)
        self.function_log_groups = self._configure_functions(functions)
        self._websocket_settings(functions)
        for function in functions.values():
            # GET /config publishes it, so clients need no hand-copied URL.
            function.add_property_override(
                "Environment.Variables.PUBLIC_FUNCTION_URL", self.function_url.url
            )
        self.websocket_authorizer = self._websocket_authorizer(functions[WS_AUTHORIZER_FUNCTION])
        self._websocket_stage()
        self._generator_async_config(functions)
        self._appsync_functions(functions)
        self._appsync_resolvers(functions[APPSYNC_RESOLVER_FUNCTION])
        self._outputs()
        self._nag_suppressions()

    # -- resources ---------------------------------------------------------------------------

    def _lambda_role(self, construct_id: str, description: str) -> iam.Role:
        """An empty role for Lambda; each caller grants exactly what its functions need."""
        return iam.Role(
            self,
            construct_id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=description,
        )

    def _table(self, construct_id: str, schema: Mapping[str, Any]) -> dynamodb.Table:
        """A table built from a stream_store schema constant, so AWS and the local cloud
        create the same key schema from one definition."""
        types = {a["AttributeName"]: a["AttributeType"] for a in schema["AttributeDefinitions"]}
        keys = {k["KeyType"]: k["AttributeName"] for k in schema["KeySchema"]}
        if set(types) != set(keys.values()) or set(schema) - {
            "KeySchema",
            "AttributeDefinitions",
            "TimeToLiveAttribute",
        }:
            # Indexes or extra attributes would need mapping here: fail rather than diverge.
            raise ValueError(f"{construct_id}: schema has parts this stack does not map: {schema}")

        def attribute(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[types[name]])

        return dynamodb.Table(
            self,
            construct_id,
            partition_key=attribute(keys["HASH"]),
            sort_key=attribute(keys["RANGE"]) if "RANGE" in keys else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema["TimeToLiveAttribute"],
            # Streams and frames expire after 24 h (TTL): nothing worth keeping on teardown.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

    def _cognito(self) -> tuple[cognito.UserPool, cognito.UserPoolClient]:
        plus = self.props.threat_protection
        pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,  # users are created by an administrator
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=cdk.Duration.days(3),
            ),
            # Users may enrol a TOTP app; see the AwsSolutions-COG2 suppression for why not
            # REQUIRED. SMS is off: it would need an SNS role and a spend limit.
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            feature_plan=cognito.FeaturePlan.PLUS if plus else cognito.FeaturePlan.ESSENTIALS,
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION if plus else None
            ),
            # A demo stack: `cdk destroy` removes the pool and its users with it.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        client = pool.add_client(
            "WebClient",
            generate_secret=False,  # browser and CLI clients cannot keep a secret
            auth_flows=cognito.AuthFlow(user_password=True, user_srp=True),  # + refresh, always
            id_token_validity=cdk.Duration.hours(1),
            access_token_validity=cdk.Duration.hours(1),
            refresh_token_validity=cdk.Duration.days(30),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            disable_o_auth=True,  # no hosted UI: clients sign in through the Cognito API
        )
        return pool, client

    def _bedrock_statements(self) -> list[iam.PolicyStatement]:
        geo, base_model_id = split_inference_profile(self.props.model_id)
        if geo is None:
            model_arn = self.format_arn(
                service="bedrock",
                account="",
                resource="foundation-model",
                resource_name=base_model_id,
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            )
            return [iam.PolicyStatement(actions=list(BEDROCK_ACTIONS), resources=[model_arn])]
        profile_arn = self.format_arn(
            service="bedrock",
            resource="inference-profile",
            resource_name=self.props.model_id,
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )
        # A cross-Region profile runs the model in any of its destination Regions, which AWS
        # may extend: the Region is a wildcard, the model is not, and the condition admits
        # the model only when called through this profile.
        model_arns = [
            self.format_arn(
                service="bedrock",
                region="*",
                account="",
                resource="foundation-model",
                resource_name=base_model_id,
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            )
        ]
        if geo == "global":
            # Global profiles authorise the model with a Region-less ARN (AWS global CRIS docs).
            model_arns.append(f"arn:{cdk.Aws.PARTITION}:bedrock:::foundation-model/{base_model_id}")
        return [
            iam.PolicyStatement(actions=list(BEDROCK_ACTIONS), resources=[profile_arn]),
            iam.PolicyStatement(
                actions=list(BEDROCK_ACTIONS),
                resources=model_arns,
                conditions={"ArnLike": {"bedrock:InferenceProfileArn": profile_arn}},
            ),
        ]

    def _grant_bedrock(self, role: iam.Role) -> None:
        for statement in self._bedrock_statements():
            role.add_to_policy(statement)

    # -- the Node.js Function URL (architecture 1) --------------------------------------------

    def _stream_function(
        self, code_dir: Path, environment: Mapping[str, str]
    ) -> tuple[lambda_.Function, lambda_.FunctionUrl]:
        """The Node.js Lambda that streams one generation as SSE over its Function URL."""
        self.stream_function_role = role = self._lambda_role(
            "StreamFunctionRole",
            "llm-stream Function URL streamer: stream store, one Bedrock model, logs",
        )
        self.streams_table.grant_read_write_data(role)
        self.frames_table.grant_read_write_data(role)
        self._grant_bedrock(role)
        log_group = logs.LogGroup(
            self,
            "StreamFunctionLogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            "StreamFunction",
            description="llm-stream architecture 1: Bedrock ConverseStream as SSE (Function URL)",
            runtime=NODE_RUNTIME,
            handler=NODE_HANDLER,
            # As installed (npm ci): node_modules included, nothing bundled at synth.
            code=lambda_.Code.from_asset(str(code_dir), exclude=list(NODE_ASSET_EXCLUDE)),
            role=role,
            memory_size=self.props.stream_memory_mb,
            timeout=cdk.Duration.seconds(STREAM_FUNCTION_TIMEOUT_S),
            reserved_concurrent_executions=self.props.stream_reserved_concurrency,
            environment=dict(environment),
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_APPLICATION_LOG_LEVELS[self.props.log_level],
        )
        # Auth NONE is deliberate: a Function URL offers only AWS_IAM (SigV4, which a browser
        # with a Cognito ID token cannot sign) or NONE, so the handler verifies the Cognito ID
        # token itself (docs/security.md) before it streams anything. CDK adds the two
        # resource-policy statements a new NONE-auth URL needs (since October 2025):
        # lambda:InvokeFunctionUrl with FunctionUrlAuthType NONE, and lambda:InvokeFunction
        # with InvokedViaFunctionUrl,
        # so principal "*" can invoke through the URL only, never through the Invoke API.
        url = function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM,
            # Lambda answers preflight and adds the CORS headers itself; the handler must not
            # add its own: browsers refuse a response with a duplicated Access-Control-Allow-Origin.
            cors=lambda_.FunctionUrlCorsOptions(
                allowed_origins=[self.props.allowed_origin],  # one origin, never "*"
                allowed_methods=[lambda_.HttpMethod.GET, lambda_.HttpMethod.POST],
                allowed_headers=list(FUNCTION_URL_ALLOWED_HEADERS),
                max_age=cdk.Duration.seconds(FUNCTION_URL_CORS_MAX_AGE_S),
            ),
        )
        return function, url

    # -- the Chalice functions ---------------------------------------------------------------

    def serverless_functions(self) -> dict[str, cdk.CfnResource]:
        """Every ``AWS::Serverless::Function`` of the Chalice template, by logical id."""
        return {
            child.node.id: child
            for child in self.chalice.sam_template.node.children
            if isinstance(child, cdk.CfnResource)
            and child.cfn_resource_type == "AWS::Serverless::Function"
        }

    def _authorizer_function_ids(self) -> set[str]:
        """Logical ids of the functions the Chalice REST API uses as authorizers, read from
        the API's swagger ``securityDefinitions`` (``${JwtAuth.Arn}`` in the authorizer URI)."""
        ids: set[str] = set()
        for child in self.chalice.sam_template.node.children:
            if not (
                isinstance(child, cdk.CfnResource)
                and child.cfn_resource_type == "AWS::Serverless::Api"
            ):
                continue
            body = self.resolve(child.definition_body) or {}  # type: ignore[attr-defined]
            for scheme in body.get("securityDefinitions", {}).values():
                uri = scheme.get("x-amazon-apigateway-authorizer", {}).get("authorizerUri")
                sub = uri.get("Fn::Sub") if isinstance(uri, dict) else None
                if isinstance(sub, str):
                    ids.update(re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", sub))
        return ids

    def _role_for(self, logical_id: str, authorizers: set[str]) -> iam.Role:
        """Each function gets the role of its job; anything not named here (the REST handler,
        functions added later) gets the handler role."""
        if logical_id in authorizers:
            return self.authorizer_role
        special = {
            WS_MESSAGE_FUNCTION: self.ws_message_role,
            WS_GENERATE_FUNCTION: self.generator_role,
            **dict.fromkeys(WS_CONNECTION_FUNCTIONS, self.connection_role),
            APPSYNC_RESOLVER_FUNCTION: self.appsync_resolver_role,
            APPSYNC_WORKER_FUNCTION: self.appsync_worker_role,
        }
        return special.get(logical_id, self.handler_role)

    def _configure_functions(
        self, functions: Mapping[str, cdk.CfnResource]
    ) -> dict[str, logs.LogGroup]:
        if not functions:
            raise RuntimeError("the Chalice template has no AWS::Serverless::Function")
        # The REST authorizers (from the API definition) and the $connect one, which Chalice
        # knows only as a plain function.
        authorizers = self._authorizer_function_ids() | {WS_AUTHORIZER_FUNCTION}
        expected = {
            WS_AUTHORIZER_FUNCTION,
            WS_MESSAGE_FUNCTION,
            WS_GENERATE_FUNCTION,
            *WS_CONNECTION_FUNCTIONS,
            APPSYNC_RESOLVER_FUNCTION,
            APPSYNC_WORKER_FUNCTION,
        }
        missing = expected - set(functions)
        if missing:
            # This stack wires these by logical id: fail rather than deploy half a transport.
            raise RuntimeError(f"the Chalice app lacks the functions {sorted(missing)}")
        log_groups: dict[str, logs.LogGroup] = {}
        roles: dict[str, iam.Role] = {}
        for logical_id, function in functions.items():
            packaged_for = self.resolve(function.runtime)  # type: ignore[attr-defined]
            if packaged_for != LAMBDA_PYTHON_RUNTIME:
                # The deployment zip's binary wheels match packaged_for only.
                raise RuntimeError(
                    f"{logical_id} was packaged for {packaged_for}, not {LAMBDA_PYTHON_RUNTIME}"
                )
            function.add_property_override("Runtime", LAMBDA_PYTHON_RUNTIME)
            role = self._role_for(logical_id, authorizers)
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
            log_groups[logical_id] = log_group
            roles[logical_id] = role
        # Everything else keeps the stage's lambda_timeout (30 s: API Gateway's integration
        # timeout is 29 s, and the message handler hands generation off and returns at once),
        # except the AppSync functions (_appsync_functions).
        functions[WS_GENERATE_FUNCTION].add_property_override("Timeout", GENERATOR_TIMEOUT_S)
        # A function must not be created (and invoked) before its role's permissions exist.
        for logical_id, function in functions.items():
            policy = roles[logical_id].node.try_find_child("DefaultPolicy")
            if policy is not None:
                function.add_resource_dependency(policy.node.default_child)  # type: ignore[arg-type]
        return log_groups

    # -- the WebSocket API -------------------------------------------------------------------

    def _included(self, cfn_type: type[_CfnT], logical_id: str) -> _CfnT:
        """A resource of the Chalice template as its typed L1 class."""
        resource = self.chalice.get_resource(logical_id)
        if not isinstance(resource, cfn_type):
            raise TypeError(f"{logical_id} is a {type(resource).__name__}, not {cfn_type.__name__}")
        return resource

    def _connections_arn(self) -> str:
        """``@connections`` POST (post_to_connection) on this API's stage only. The app never
        reads (GET) or closes (DELETE) a connection, so neither is granted."""
        return self.format_arn(
            service="execute-api",
            resource=self.websocket_api_id,
            resource_name=f"{API_STAGE}/POST/@connections/*",
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )

    def _grant_websocket(self, functions: Mapping[str, cdk.CfnResource]) -> None:
        post = iam.PolicyStatement(
            actions=["execute-api:ManageConnections"], resources=[self._connections_arn()]
        )
        self.ws_message_role.add_to_policy(post)  # error frames and resume replays
        self.generator_role.add_to_policy(post)  # the stream's frames
        # Exactly the generator, unqualified (ws_message invokes it by name, InvocationType
        # Event); not grant_invoke(), which would add every version and alias (":*").
        generator_arn = cdk.Token.as_string(functions[WS_GENERATE_FUNCTION].get_att("Arn"))
        self.ws_message_role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[generator_arn])
        )

    def _websocket_settings(self, functions: Mapping[str, cdk.CfnResource]) -> None:
        """Settings that name the WebSocket API, known only once Chalice created it."""
        for function in functions.values():
            # Every function imports app.py, which builds the @connections client from the
            # settings; GET /config publishes the public URL.
            function.add_property_override(
                "Environment.Variables.WEBSOCKET_MANAGEMENT_URL", self.websocket_management_url
            )
            function.add_property_override(
                "Environment.Variables.PUBLIC_WEBSOCKET_URL", self.websocket_url
            )
        # Only the invoker: the generator naming itself would be a CloudFormation cycle.
        functions[WS_MESSAGE_FUNCTION].add_property_override(
            "Environment.Variables.GENERATE_FUNCTION_NAME", functions[WS_GENERATE_FUNCTION].ref
        )

    def _websocket_authorizer(self, function: cdk.CfnResource) -> apigwv2.CfnAuthorizer:
        """The ``$connect`` Lambda REQUEST authorizer, which Chalice cannot declare
        (docs/security.md).

        The identity source is required to be present: a handshake without the header gets 401
        from API Gateway without invoking the function. WebSocket authorizers have no result
        cache (the TTL setting is HTTP-API only), so every handshake is verified.
        """
        function_arn = cdk.Token.as_string(function.get_att("Arn"))
        authorizer = apigwv2.CfnAuthorizer(
            self,
            "WebsocketConnectAuthorizer",
            api_id=self.websocket_api_id,
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
            "WebsocketConnectAuthorizerInvokePermission",
            action="lambda:InvokeFunction",
            function_name=function_arn,
            principal="apigateway.amazonaws.com",
            source_arn=self.format_arn(
                service="execute-api",
                resource=self.websocket_api_id,
                resource_name=f"authorizers/{authorizer.ref}",
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            ),
        )
        # Set on the typed L1 (CfnInclude builds one), not as a raw override, so that
        # cdk-nag, which reads the L1's properties, sees the authorizer too.
        route = self._included(apigwv2.CfnRoute, "WebsocketConnectRoute")
        route.authorization_type = "CUSTOM"
        route.authorizer_id = authorizer.ref
        return authorizer

    def _websocket_stage(self) -> None:
        """Make the stage auto-deploy, so route and authorizer changes go live.

        Chalice pairs the stage with a Deployment of a static logical id, which CloudFormation
        never replaces: after the first deploy, a changed route (such as adding the authorizer)
        would stay undeployed. AutoDeploy redeploys on every API change instead, and a
        stage's DeploymentId cannot be updated while AutoDeploy is on (API Gateway v2 API
        reference). So the stage loses its DeploymentId and Chalice's Deployment is dropped
        (it would be an unused snapshot); the stage depends on the routes, so its first
        deployment already includes them and the authorizer.
        """
        stage = self._included(apigwv2.CfnStage, "WebsocketAPIStage")
        stage.auto_deploy = True
        stage.deployment_id = None
        stage.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=WS_THROTTLE_RATE_PER_S,
            throttling_burst_limit=WS_THROTTLE_BURST,
        )
        if not self.chalice.sam_template.node.try_remove_child("WebsocketAPIDeployment"):
            raise RuntimeError("the Chalice template has no WebsocketAPIDeployment")
        for route_id in WS_ROUTES:
            stage.add_resource_dependency(self.chalice.get_resource(route_id))

    def _generator_async_config(self, functions: Mapping[str, cdk.CfnResource]) -> None:
        """No automatic retry of the generator's asynchronous invoke.

        A retry could never produce twice (the generator claims the stream with a conditional
        write, ``attribute_not_exists(claimedBy)``), but neither can it resume: after a crash
        mid-stream the stream is claimed, so a retry 1-2 minutes later would only skip it.
        Throttled invocations are still requeued by Lambda (that is not a retry attempt).
        """
        generator = functions[WS_GENERATE_FUNCTION]
        config = lambda_.CfnEventInvokeConfig(
            self,
            "WsGenerateEventInvokeConfig",
            function_name=generator.ref,
            qualifier="$LATEST",
            maximum_retry_attempts=0,
        )
        # The message handler can start a generation only once no-retry is in force.
        functions[WS_MESSAGE_FUNCTION].add_resource_dependency(config)

    # -- architecture 3: AppSync + SQS --------------------------------------------------------

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

    def _graphql_api(self) -> appsync.GraphqlApi:
        """The GraphQL API of architecture 3: clients with Cognito ID tokens of this stack's
        app client (default mode), the worker with IAM (``@aws_iam`` on publishFrames).

        Logs: field errors only, and without verbose content (request and response headers,
        resolver contexts and evaluated code), which would hold prompts and tokens. The log
        group is this stack's, with retention, instead of one AppSync creates never to expire.
        """
        log_role = iam.Role(
            self,
            "GraphqlApiLogRole",
            assumed_by=iam.ServicePrincipal("appsync.amazonaws.com"),
            description="llm-stream AppSync API: write its own log group; nothing else",
        )
        api = appsync.GraphqlApi(
            self,
            "GraphqlApi",
            name=f"{SERVICE_NAME}-{self.stack_name}",
            definition=appsync.Definition.from_file(str(APPSYNC_DIR / APPSYNC_SCHEMA_FILE)),
            authorization_config=appsync.AuthorizationConfig(
                default_authorization=appsync.AuthorizationMode(
                    authorization_type=appsync.AuthorizationType.USER_POOL,
                    user_pool_config=appsync.UserPoolConfig(
                        user_pool=self.user_pool,
                        # Tokens of this app client only (ID token aud, access token client_id).
                        app_id_client_regex=f"^{self.user_pool_client.user_pool_client_id}$",
                        default_action=appsync.UserPoolDefaultAction.ALLOW,
                    ),
                ),
                additional_authorization_modes=[
                    appsync.AuthorizationMode(authorization_type=appsync.AuthorizationType.IAM)
                ],
            ),
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
            "GraphqlApiLogGroup",
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
                    self.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=log_group.log_group_name,
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.graphql_api_log_group = log_group
        # wss://<id>.appsync-realtime-api.<region>.amazonaws.com/graphql (subscriptions).
        self.graphql_realtime_url = cfn_api.attr_realtime_url
        return api

    def _grant_appsync_sqs(self) -> None:
        """The queue and API permissions of architecture 3, each on exactly one resource."""
        queue_arn = self.work_queue.queue_arn
        self.appsync_resolver_role.add_to_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue_arn])
        )
        self.appsync_worker_role.add_to_policy(
            iam.PolicyStatement(actions=list(WORKER_SQS_ACTIONS), resources=[queue_arn])
        )
        # appsync:GraphQL on apis/<id>/types/Mutation/fields/publishFrames only.
        self.graphql_api.grant_mutation(self.appsync_worker_role, PUBLISH_MUTATION)

    def _appsync_functions(self, functions: Mapping[str, cdk.CfnResource]) -> None:
        """Timeouts and the worker's SQS event source. Chalice's per-function settings
        (``lambda_functions``) are read from .chalice/config.json only, never from the
        construct's stage_config, so these are property overrides."""
        functions[APPSYNC_RESOLVER_FUNCTION].add_property_override(
            "Timeout", APPSYNC_RESOLVER_TIMEOUT_S
        )
        worker = functions[APPSYNC_WORKER_FUNCTION]
        worker.add_property_override("Timeout", WORKER_TIMEOUT_S)
        worker.add_property_override("MemorySize", WORKER_MEMORY_MB)
        self._appsync_worker_event_source(worker)

    def _appsync_worker_event_source(self, worker: cdk.CfnResource) -> None:
        """The worker's SQS event source, set explicitly.

        * Queue: Chalice takes it from app.py's decorator, evaluated when app.py was first
          imported in the process; a cached import (another stack, a test) names another queue.
        * ReportBatchItemFailures: the worker returns ``batchItemFailures``; without it Lambda
          ignores them and deletes the failed messages with the batch. Chalice cannot set it.
        * MaximumConcurrency: see WORKER_MAX_CONCURRENCY.
        """
        # The typed ``events`` getter cannot deserialize SAM's event union through jsii; the
        # (protected) property bag holds the same values.
        properties = self.resolve(worker._cfn_properties) or {}  # type: ignore[attr-defined]
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

    def _appsync_resolvers(self, resolver_function: cdk.CfnResource) -> None:
        """Data sources and APPSYNC_JS unit resolvers for every field of the schema that has
        one (cdk/appsync/*.js, uploaded as assets)."""
        function_arn = cdk.Token.as_string(resolver_function.get_att("Arn"))
        # Exactly the function, unqualified: not grant_invoke(), which adds every version and
        # alias (":*"), and which the L2 Lambda data source would call.
        role = iam.Role(
            self,
            "AppsyncLambdaDataSourceRole",
            assumed_by=iam.ServicePrincipal("appsync.amazonaws.com"),
            description="llm-stream AppSync Lambda data source: invoke appsync_resolver only",
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function_arn])
        )
        api_id = self.graphql_api.api_id
        lambda_source = appsync.CfnDataSource(
            self,
            "AppsyncLambdaDataSource",
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
            "AppsyncNoneDataSource",
            api_id=api_id,
            name="PassThrough",
            description="publishFrames and onStreamFrame: no data source, resolver code only",
            type="NONE",
        )
        sources = {APPSYNC_LAMBDA: lambda_source, APPSYNC_NONE: none_source}
        self.appsync_resolvers: dict[str, appsync.CfnResolver] = {}
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
            self.graphql_api.add_schema_dependency(resolver)
            self.appsync_resolvers[f"{type_name}.{field_name}"] = resolver

    # -- outputs and cdk-nag -----------------------------------------------------------------

    def _outputs(self) -> None:
        cdk.CfnOutput(
            self,
            "RestApiUrl",
            value=self.chalice.sam_template.get_output("EndpointURL").value,
            description="REST API base URL (GET /health, GET /config, /streams/...)",
        )
        cdk.CfnOutput(
            self,
            "WebsocketUrl",
            value=self.websocket_url,
            description=(
                "WebSocket URL; offer subprotocols llm-stream.v1 and auth.<ID token> "
                "(Sec-WebSocket-Protocol)"
            ),
        )
        cdk.CfnOutput(
            self,
            "FunctionUrl",
            value=self.function_url.url,
            description=(
                "Function URL (SSE): POST a start request, or GET ?streamId= to resume, with "
                "Authorization: Bearer <ID token>"
            ),
        )
        cdk.CfnOutput(self, "UserPoolId", value=self.user_pool.user_pool_id)
        cdk.CfnOutput(self, "UserPoolClientId", value=self.user_pool_client.user_pool_client_id)
        cdk.CfnOutput(self, "Region", value=self.region)
        cdk.CfnOutput(self, "StreamsTableName", value=self.streams_table.table_name)
        cdk.CfnOutput(self, "FramesTableName", value=self.frames_table.table_name)
        cdk.CfnOutput(
            self,
            "AppsyncGraphqlUrl",
            value=self.graphql_api.graphql_url,
            description="AppSync GraphQL URL (queries, mutations); Authorization: <ID token>",
        )
        cdk.CfnOutput(
            self,
            "AppsyncRealtimeUrl",
            value=self.graphql_realtime_url,
            description="AppSync real-time URL (subscriptions, graphql-ws)",
        )
        cdk.CfnOutput(self, "AppsyncApiId", value=self.graphql_api.api_id)
        cdk.CfnOutput(self, "WorkQueueUrl", value=self.work_queue.queue_url)
        cdk.CfnOutput(self, "WorkDeadLetterQueueUrl", value=self.work_dlq.queue_url)
        cdk.CfnOutput(
            self,
            "WorkDeadLetterQueueAlarmName",
            value=self.dlq_alarm.alarm_name,
            description="In alarm while the work DLQ holds messages; add actions to be told",
        )

    def _nag_suppressions(self) -> None:
        """cdk-nag 3 acknowledgements (CDK ``Validations``), each for one finding."""
        cdk.Validations.of(self.user_pool).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-COG2",
                reason=(
                    "MFA is OPTIONAL (TOTP), not REQUIRED: accounts are created by an "
                    "administrator only, and the headless clients of this project (bench/, "
                    "terminal clients and end-to-end tests) sign in non-interactively with "
                    "USER_PASSWORD_AUTH, which a mandatory TOTP challenge would block."
                ),
            )
        )
        if not self.props.threat_protection:
            cdk.Validations.of(self.user_pool).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-COG8",
                    reason=(
                        "The deployer set threatProtection=false: the Plus feature plan "
                        "(threat protection) is billed per monthly active user with no free "
                        "tier; self sign-up is off and users are admin-created."
                    ),
                )
            )
        geo, base_model_id = split_inference_profile(self.props.model_id)
        if geo is not None:
            finding = f"Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/{base_model_id}"
            # The roles that call Bedrock: the WebSocket generator, the streamer, the worker.
            for role in (
                self.generator_role,
                self.stream_function_role,
                self.appsync_worker_role,
            ):
                cdk.Validations.of(role).acknowledge(
                    cdk.Acknowledgment(
                        id=f"AwsSolutions-IAM5[{finding}]",
                        reason=(
                            "The Region of the foundation-model ARN is a wildcard because the "
                            f"cross-Region inference profile {self.props.model_id} runs the "
                            "model in any of its destination Regions, a set AWS may extend. The "
                            "model itself is fixed, and a bedrock:InferenceProfileArn condition "
                            "admits it only through that one inference profile."
                        ),
                    )
                )
        self._websocket_nag_acknowledgements()
        cdk.Validations.of(self.graphql_api).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-ASC3",
                reason=(
                    "Request-level logging is on (field log level ERROR, to this stack's log "
                    "group with one-month retention); what cdk-nag asks for beyond that is "
                    "verbose content, which logs request headers (the caller's ID token) and "
                    "each resolver's arguments and results: prompts and generated text. Those "
                    "must never reach the logs (docs/security.md: no tokens or prompts), so "
                    "excludeVerboseContent stays true."
                ),
            )
        )

    def _websocket_nag_acknowledgements(self) -> None:
        # Resolved, so the id matches with and without a concrete Region (cdk synth sets one).
        connections = f"Resource::{nag_text(self.resolve(self._connections_arn()))}"
        for role in (self.ws_message_role, self.generator_role):
            cdk.Validations.of(role).acknowledge(
                cdk.Acknowledgment(
                    id=f"AwsSolutions-IAM5[{connections}]",
                    reason=(
                        "The last part of an @connections ARN is the connection id, which API "
                        "Gateway assigns to each client at $connect and the handlers learn only "
                        "at run time, so no narrower resource exists. The ARN is fixed to this "
                        f"WebSocket API's id, its stage ({API_STAGE}) and POST "
                        "(post_to_connection); GET and DELETE are not granted."
                    ),
                )
            )
        for route_id in ("WebsocketMessageRoute", "WebsocketDisconnectRoute"):
            cdk.Validations.of(self.chalice.get_resource(route_id)).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-APIG4",
                    reason=(
                        "API Gateway WebSocket APIs authorize only the $connect route (here the "
                        "Lambda REQUEST authorizer WebsocketConnectAuthorizer); $default and "
                        "$disconnect cannot have an authorizer and run only on a connection "
                        "authorized at $connect. Its context (sub) reaches them in "
                        "requestContext.authorizer, and the message handler refuses any message "
                        "without it."
                    ),
                )
            )
        cdk.Validations.of(self.chalice.get_resource("WebsocketAPIStage")).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-APIG1",
                reason=(
                    "WebSocket access logging requires the Region-wide API Gateway CloudWatch "
                    "Logs role (AWS::ApiGateway::Account), an account singleton this stack must "
                    "not create or take over from other stacks; without it the stage fails to "
                    "deploy. Each authorizer, $connect, $default and $disconnect invocation is "
                    "logged by its Lambda (JSON, one-month retention), the authorizer logs every "
                    "rejected token with the reason, and a handshake the gateway refuses "
                    "itself (no Sec-WebSocket-Protocol header: 401) counts in ClientError."
                ),
            )
        )
