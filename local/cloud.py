"""The local cloud (docs/local-cloud.md): every service the app needs, on loopback.

One process, one object. ``LocalCloud.start`` brings up, in order:

1. DynamoDB and SQS (moto's server mode) and creates the tables;
2. the Cognito emulator with a pool, an app client and the local user;
3. the Bedrock emulator (simulated model);
4. Lambda's Invoke API, the WebSocket gateway and the AppSync emulator, serving
   before the app exists (their URLs are part of its environment; functions are
   looked up per call), and the work queue with its DLQ;
5. the Function URL host: ``node_function/index.mjs`` under Node with Lambda's
   streaming interface (``local/function_url_host.mjs``), given the app's environment;
6. the Chalice app, imported with its environment pointed at the above: its
   routes on the REST server and its functions attached to the local Lambdas,
   one app object, so routes and functions share one process state;
7. the SQS event source delivering the work queue to the ``appsync_worker`` function;
8. the comparison client's host: ``client/dist`` and ``GET /config`` proxied to the REST
   API (``local/client_host.py``).

The app itself runs unchanged: only endpoints and settings differ from AWS
(``AWS_ENDPOINT_URL_<SERVICE>``, issuer and JWKS URLs), injected through the
environment before ``app.py`` is imported.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from local.environ import EnvironPatch
from local.loop import LoopThread
from local.model import LOCAL_CREDENTIALS, SIMULATED, ModelSetup
from local.model import setup as model_setup
from local.rest_stream import RestStreamLimits
from local.ws_gateway import GatewayLimits

log = logging.getLogger("local.cloud")

ROOT = Path(__file__).resolve().parents[1]
# The local cloud's Region with the simulated model; with real Bedrock, Bedrock's.
REGION = "us-east-1"
# Append only: a service's port is port_base + its index here.
SERVICES = (
    "rest",
    "aws",
    "cognito",
    "bedrock",
    "lambda",
    "websocket",
    "function_url",
    "appsync",
    "client",
    "rest_stream",
)
# The AppSync worker, as app.py names it, and what Lambda allows the other functions.
WORKER_FUNCTION = "appsync_worker"
FUNCTION_TIMEOUTS_S = {"appsync_resolver": 10.0, "ws_generate": 900.0}
# Concurrent invocations (Lambda's concurrency): every running stream holds one.
MAX_CONCURRENT_INVOCATIONS = 256
NODE_FUNCTION_DIR = ROOT / "node_function"


@dataclass
class CloudOptions:
    host: str = "127.0.0.1"
    # 0 = free ports chosen by the OS; otherwise services use port_base, +1, +2, ...
    port_base: int = 0
    username: str = "local-user"
    password: str = field(default_factory=lambda: f"Local-{secrets.token_urlsafe(9)}-1a")
    email: str = "local-user@example.com"
    endpoints_file: Path | None = ROOT / ".local" / "endpoints.json"
    # Extra settings for the app (e.g. FLUSH_INTERVAL_MS), as environment variables.
    app_env: dict[str, str] = field(default_factory=dict)
    # Simulated model timing; None keeps the emulator's defaults.
    model: dict[str, Any] = field(default_factory=dict)
    # "simulated", or "bedrock": real Bedrock with the default credential chain and
    # Region, everything else local (local/model.py).
    model_source: str = SIMULATED
    # API Gateway's WebSocket quotas; tests shorten them.
    gateway_limits: GatewayLimits = field(default_factory=GatewayLimits)
    # The Function URL's CORS allowed origins. Any origin locally: everything is on
    # loopback, and `make run` will serve the client from the same loopback host.
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    # The work queue's visibility timeout; None = 6x the worker's timeout, as the stack
    # sets it. Tests shorten it (with WORKER_TIMEOUT_S) to see redeliveries within seconds.
    queue_visibility_timeout_s: int | None = None
    # AppSync's keep-alive interval on real-time connections.
    appsync_ka_interval_s: float = 60.0
    # Lifetime of the ID and access tokens Cognito issues (Cognito's default is an hour;
    # tests shorten it to see a token expire under an open connection).
    token_validity_s: int = 3600
    # API Gateway's limits on the REST API's streaming routes; tests shorten them.
    rest_stream_limits: RestStreamLimits = field(default_factory=RestStreamLimits)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def _own_settings(extra: Mapping[str, str] | None = None) -> Any:
    """The settings the cloud itself reads (tables, the worker's timeout and batch size, the
    model id) from its environment (and ``extra``). Some are read before its user pool exists,
    and none depends on the pool, so the two settings every function must be given are filled
    in when still unset."""
    from chalicelib.settings import Settings

    env = {**os.environ, **(extra or {})}
    for name in ("USER_POOL_ID", "USER_POOL_CLIENT_ID"):
        env[name] = env.get(name) or "pending"
    return Settings.from_env(env)


def _port(options: CloudOptions, service: str) -> int:
    if options.port_base == 0:
        return 0
    return options.port_base + SERVICES.index(service)


def _check_free(host: str, port: int, service: str) -> None:
    if port == 0:
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise SystemExit(
                f"Port {port} for the local {service} is in use. Stop what uses it or "
                f"choose other ports with LOCAL_PORT_BASE (e.g. LOCAL_PORT_BASE=5600)."
            ) from None


class LocalCloud:
    def __init__(self, options: CloudOptions | None = None) -> None:
        self.options = options or CloudOptions()
        self.endpoints: dict[str, Any] = {}
        self._loop: LoopThread | None = None
        self._moto: Any = None
        self._cognito: Any = None
        self._bedrock: Any = None
        self._rest: Any = None
        self._lambdas: Any = None
        self._lambda_api: Any = None
        self._gateway: Any = None
        self._function_url: Any = None
        self._appsync: Any = None
        self._queues: Any = None
        self._sqs_source: Any = None
        self._client_host: Any = None
        self._rest_stream: Any = None
        self._env = EnvironPatch()
        self.region = REGION
        self._model: ModelSetup | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        o = self.options
        for service in SERVICES:
            _check_free(o.host, _port(o, service), service)
        # Before any service: a model that cannot be used stops start-up at once.
        self._model = self._resolve_model()
        self.region = self._model.region
        try:
            aws_url = self._start_aws()
            self._loop = LoopThread().start()
            identity = self._start_cognito()
            bedrock_url = None
            if self._model.source == SIMULATED:
                bedrock_url = self._start_bedrock()
                self._model = self._model.with_endpoint(bedrock_url)
            lambda_url = self._start_lambdas()
            self._start_gateway()
            self._start_appsync(identity)
            self._queues = self._provision(aws_url)
            app_env = self._set_app_env(aws_url, identity, lambda_url)
            # Before the app is imported: GET /config publishes this URL.
            function_url = self._start_function_url(app_env)
            if function_url is not None:
                self._env.set({"PUBLIC_FUNCTION_URL": function_url})
            rest_stream_url = self._start_rest_stream()
            rest_url = self._start_rest()
            self._start_sqs_source(aws_url)
            client_url = self._start_client_host(rest_url)
        except BaseException:
            self.stop()
            raise
        self.endpoints = {
            "client": client_url,
            "rest": rest_url,
            "functionUrl": function_url,
            "restStream": rest_stream_url,
            # The Node function's InvokeWithResponseStream (and its invocation counts).
            "functionInvoke": self._function_url.invoke_url if self._function_url else None,
            "websocket": self._gateway.url,
            "appsync": {
                "graphql": self._appsync.graphql_url,
                "realtime": self._appsync.realtime_url,
            },
            "queues": {"work": self._queues.url, "dlq": self._queues.dlq_url},
            "cognito": {
                "endpoint": self._cognito.endpoint,
                "userPoolId": identity["userPoolId"],
                "clientId": identity["clientId"],
                "region": self.region,
                "issuer": identity["issuer"],
                "jwksUrl": identity["jwksUrl"],
            },
            "bedrock": bedrock_url,  # None with real Bedrock
            "model": self._model_endpoint(),
            "aws": aws_url,
            "lambda": lambda_url,
            "user": {"username": identity["username"], "password": identity["password"]},
        }
        if o.endpoints_file is not None:
            o.endpoints_file.parent.mkdir(parents=True, exist_ok=True)
            o.endpoints_file.write_text(json.dumps(self.endpoints, indent=2) + "\n")
            o.endpoints_file.chmod(0o600)  # it holds the local user's password
        return self.endpoints

    def stop(self) -> None:
        """Stop every service; safe to call more than once and after a failed start."""
        # No new deliveries from the queue; running worker invocations finish below.
        if self._sqs_source is not None:
            if not self._sqs_source.stop(timeout=10):
                log.warning("the SQS event source did not stop in time")
            self._sqs_source = None
        # The Function URL first: its invocations still use DynamoDB, Cognito and Bedrock.
        if self._function_url is not None:
            self._function_url.stop()
            self._function_url = None
        # The gateway first: its $disconnect handlers still need DynamoDB.
        if self._loop is not None:
            servers = (self._rest_stream, self._client_host, self._gateway, self._appsync)
            for server in (*servers, self._lambda_api):
                if server is not None:
                    try:
                        self._loop.run(server.stop(), timeout=15)
                    except Exception:
                        log.exception("stopping the gateway, AppSync or the Lambda API failed")
        self._client_host = self._gateway = self._appsync = self._lambda_api = None
        self._rest_stream = None
        if self._lambdas is not None:
            # Running streams (Event invocations) get a moment to finish.
            if not self._lambdas.close(timeout=5):
                log.warning("some Lambda invocations were still running at shutdown")
            self._lambdas = None
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._loop is not None:
            for emulator in (self._bedrock, self._cognito):
                if emulator is not None:
                    try:
                        self._loop.run(emulator.stop(), timeout=5)
                    except Exception:
                        log.exception("stopping an emulator failed")
            self._loop.stop()
            self._loop = None
        self._bedrock = self._cognito = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._env.restore()

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- services ---------------------------------------------------------------------

    def _url(self, port: int) -> str:
        return f"http://{self.options.host}:{port}/"

    def _start_aws(self) -> str:
        from local.aws import LocalAws

        self._moto = LocalAws(self.options.host, _port(self.options, "aws"))
        return self._url(self._moto.start())

    def _start_cognito(self) -> dict[str, str]:
        from local.cognito import CognitoEmulator

        assert self._loop is not None
        self._cognito = CognitoEmulator(self.region, token_validity_s=self.options.token_validity_s)
        self._loop.run(self._cognito.start(self.options.host, _port(self.options, "cognito")))
        return self._cognito.ensure_pool_with_user(
            pool_name="llm-stream-local",
            client_name="llm-stream-client",
            username=self.options.username,
            password=self.options.password,
            email=self.options.email,
        )

    def _start_bedrock(self) -> str:
        from local.bedrock import BedrockEmulator

        assert self._loop is not None
        self._bedrock = BedrockEmulator(**self.options.model)
        port = self._loop.run(
            self._bedrock.start(self.options.host, _port(self.options, "bedrock"))
        )
        return self._url(port)

    def _start_lambdas(self) -> str:
        from local.lambdas import LambdaApi, LocalLambdas

        assert self._loop is not None

        # No app yet: it is attached once imported (see _start_rest).
        self._lambdas = LocalLambdas(
            max_workers=MAX_CONCURRENT_INVOCATIONS,
            on_failure={"ws_generate": "ws_generate_failed"},  # the stack's async destination
            timeouts={
                **FUNCTION_TIMEOUTS_S,
                WORKER_FUNCTION: float(_own_settings().worker_timeout_s),
            },
        )
        self._lambda_api = LambdaApi(self._lambdas)
        port = self._loop.run(
            self._lambda_api.start(self.options.host, _port(self.options, "lambda"))
        )
        return self._url(port)

    def _start_gateway(self) -> None:
        from local.ws_gateway import WebSocketGateway

        assert self._loop is not None
        self._gateway = WebSocketGateway(
            self._lambdas, region=self.region, limits=self.options.gateway_limits
        )
        self._loop.run(self._gateway.start(self.options.host, _port(self.options, "websocket")))

    def _start_appsync(self, identity: dict[str, str]) -> None:
        from chalicelib.jwt_verify import JwksCache, JwtVerifier
        from local.appsync import AppSyncEmulator

        assert self._loop is not None
        # The emulator accepts ID and access tokens of the app client, as AppSync's
        # user-pool mode does; the resolvers then refuse access tokens themselves.
        verifier = JwtVerifier(
            issuer=identity["issuer"],
            client_id=identity["clientId"],
            jwks=JwksCache(identity["jwksUrl"]),
        )
        self._appsync = AppSyncEmulator(
            self._lambdas,
            verifier=verifier,
            region=self.region,
            # What the producers sign with: the local credentials, or real Bedrock's.
            credentials=self._model.signing_credentials,
            ka_interval_s=self.options.appsync_ka_interval_s,
        )
        self._loop.run(self._appsync.start(self.options.host, _port(self.options, "appsync")))

    def _start_sqs_source(self, aws_url: str) -> None:
        from local.sqs_source import SqsEventSource

        sqs = boto3.client(
            "sqs", region_name=self.region, endpoint_url=aws_url, **_boto_credentials()
        )
        self._sqs_source = SqsEventSource(
            self._lambdas,
            sqs,
            queue_url=self._queues.url,
            queue_arn=self._queues.arn,
            function_name=WORKER_FUNCTION,
            batch_size=_own_settings().worker_batch_size,
            max_concurrency=MAX_CONCURRENT_INVOCATIONS,
            region=self.region,
        )
        self._sqs_source.start()

    def _resolve_model(self) -> ModelSetup:
        model_id = _own_settings(self.options.app_env).model_id
        return model_setup(self.options.model_source, model_id, REGION)

    def _model_endpoint(self) -> dict[str, str]:
        """What ``endpoints["model"]`` says of the model (no credentials)."""
        assert self._model is not None
        model_id = _own_settings().model_id
        return {
            "source": self._model.source,
            "region": self.region,
            "id": model_id,
            "description": self._model.describe(model_id),
        }

    def _set_app_env(
        self, aws_url: str, identity: dict[str, str], lambda_url: str
    ) -> dict[str, str]:
        assert self._model is not None
        env = {
            # Credentials, Bedrock's endpoint (the simulated model's) and the model's label.
            **self._model.app_env(),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_DYNAMODB": aws_url,
            "AWS_ENDPOINT_URL_SQS": aws_url,
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "WEBSOCKET_MANAGEMENT_URL": self._gateway.management_url,
            "PUBLIC_WEBSOCKET_URL": self._gateway.url,
            "GENERATE_FUNCTION_NAME": "ws_generate",
            "WORK_QUEUE_URL": self._queues.url,
            "WORK_QUEUE_ARN": self._queues.arn,
            "APPSYNC_GRAPHQL_URL": self._appsync.graphql_url,
            "PUBLIC_APPSYNC_GRAPHQL_URL": self._appsync.graphql_url,
            "PUBLIC_APPSYNC_REALTIME_URL": self._appsync.realtime_url,
            "USER_POOL_ID": identity["userPoolId"],
            "USER_POOL_CLIENT_ID": identity["clientId"],
            "JWT_ISSUER": identity["issuer"],
            "JWKS_URL": identity["jwksUrl"],
            "PUBLIC_COGNITO_ENDPOINT": self._cognito.endpoint,
            "POWERTOOLS_SERVICE_NAME": "llm-stream",
            **self.options.app_env,
        }
        self._env.set(env)
        return env

    def _provision(self, aws_url: str) -> Any:
        """The tables and the work queue with its DLQ; returns the queues."""
        from local.provision import create_queues, create_tables

        settings = _own_settings()
        clients = {"region_name": self.region, "endpoint_url": aws_url, **_boto_credentials()}
        create_tables(boto3.client("dynamodb", **clients), settings)
        visibility = self.options.queue_visibility_timeout_s
        return create_queues(
            boto3.client("sqs", **clients),
            visibility_timeout_s=6 * settings.worker_timeout_s
            if visibility is None
            else visibility,
            max_receive_count=settings.worker_max_receive_count,
        )

    def _start_function_url(self, app_env: Mapping[str, str]) -> str | None:
        """Serve ``node_function`` as a Function URL; None (and a warning) if it can't be."""
        from local.function_url import FunctionUrlHost

        assert self._model is not None
        handler = NODE_FUNCTION_DIR / "index.mjs"
        # Written separately from the rest: until it is there the other transports still work.
        problem = None
        if not handler.is_file():
            problem = f"{handler} does not exist"
        elif not (NODE_FUNCTION_DIR / "node_modules").is_dir():
            problem = f"{NODE_FUNCTION_DIR / 'node_modules'} is missing (run `make install`)"
        elif shutil.which("node") is None:
            problem = "Node.js (node) is not on PATH"
        if problem is not None:
            log.warning("The Function URL is not served: %s.", problem)
            return None
        settings = _own_settings()
        env = {
            # What the CDK stack gives every function, resolved as the Python app does, so
            # both runtimes use the same tables and model even where the app uses defaults.
            "STREAMS_TABLE": settings.streams_table,
            "FRAMES_TABLE": settings.frames_table,
            "MODEL_ID": settings.model_id,
            **self._model.node_env(),
            **app_env,
        }
        self._function_url = FunctionUrlHost(
            handler,
            env,
            self.options.cors_origins,
            self.options.host,
            _port(self.options, "function_url"),
            function_name="llm-stream-function-url",
            invoke_port=0,
        )
        return self._function_url.start()

    def _start_rest_stream(self) -> str | None:
        """The REST API's streaming routes (``local/rest_stream.py``), before the app is
        imported (GET /config publishes their URL); None without the Node function."""
        from chalicelib.settings import Settings
        from local.rest_stream import RestStreamApi

        if self._function_url is None:
            return None
        assert self._loop is not None
        self._rest_stream = RestStreamApi(
            self._lambdas,
            self._function_url,
            region=self.region,
            limits=self.options.rest_stream_limits,
            cors_allow_origin=Settings.from_env().cors_allow_origin,
        )
        port = _port(self.options, "rest_stream")
        self._loop.run(self._rest_stream.start(self.options.host, port))
        self._env.set({"PUBLIC_REST_STREAM_URL": self._rest_stream.url})
        return str(self._rest_stream.url)

    def _start_rest(self) -> str:
        from chalicelib import services
        from local.rest import RestServer, load_chalice_app

        services.reset()  # settings are read from the environment set above
        app, config = load_chalice_app(str(ROOT))
        # The same app object serves the routes and the functions.
        self._lambdas.attach(app)
        self._rest = RestServer(app, config, self.options.host, _port(self.options, "rest"))
        url = self._url(self._rest.port)
        self._env.set({"PUBLIC_REST_URL": url})
        services.reset()
        self._rest.start()
        return url

    # -- the comparison client ----------------------------------------------------------

    def _start_client_host(self, rest_url: str) -> str:
        """Serve ``client/dist`` (or a page saying how to build it) and ``GET /config``."""
        from local.client_host import ClientHost

        assert self._loop is not None
        self._client_host = ClientHost(rest_url)
        self._loop.run(self._client_host.start(self.options.host, _port(self.options, "client")))
        return self._client_host.url
