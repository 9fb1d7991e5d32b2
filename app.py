"""Every Python Lambda entry point, as Chalice decorators. Thin: parse, call
chalicelib, return. See docs/architecture.md."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from chalice import AuthResponse, Chalice, CORSConfig, Response
from chalice.app import AuthRequest, SQSEvent, WebsocketEvent

from chalicelib import appsync_flow, rest_api, running_streams, services, ws_flow
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.gateway_auth import Unauthorized, claims_context
from chalicelib.jwt_verify import TokenError, bearer_token

app = Chalice(app_name="llm-stream")
app.experimental_feature_flags.update(["WEBSOCKETS"])
logger = Logger(service="llm-stream")

# Before any websocket handler is declared: Chalice hands this object to each.
app.websocket_api = ws_flow.WebsocketManagementAPI(services.settings().websocket_management_url)
app.websocket_api.session = boto3.session.Session()

# "none": no CORS at all. On AWS the page and the REST API share the CloudFront origin, so
# the stack turns CORS off unless the deployer names another origin.
_cors = (
    CORSConfig(
        allow_origin=services.settings().cors_allow_origin,
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    if services.settings().cors_allow_origin != "none"
    else None
)
# A host name as CloudFront puts the page's host in X-Forwarded-Host (cdk/stacks/hosting.py).
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?$")


@app.authorizer(ttl_seconds=0)
def jwt_auth(auth_request: AuthRequest) -> AuthResponse:
    try:
        claims = services.verifier().verify(bearer_token(auth_request.token))
    except TokenError as exc:
        logger.info("token rejected", extra={"reason": exc.reason, "entry": "rest"})
        raise Unauthorized() from None
    return AuthResponse(routes=["*"], principal_id=claims["sub"], context=claims_context(claims))


def _owner() -> str:
    return app.current_request.context["authorizer"]["sub"]


def _error_response(err: StreamError) -> Response:
    return Response(
        status_code=err.http_status,
        body={"error": {"code": err.code.value, "message": err.message}},
        headers={"Content-Type": "application/json"},
    )


def json_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """StreamErrors become ``{"error": {...}}`` with their status; anything else a
    plain INTERNAL error (details go to the log, not to the caller). Chalice turns
    view exceptions into its own 500 before any middleware sees them, so this
    wraps each view."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except StreamError as err:
            return _error_response(err)
        except Exception:
            logger.exception("unhandled error", extra={"route": view.__name__})
            return _error_response(StreamError(ErrorCode.INTERNAL, "Internal error."))

    return wrapper


def _rest_url() -> str:
    configured = services.settings().public_rest_url
    if configured:
        return configured
    request = app.current_request
    # Through CloudFront: the REST paths are on the page's own origin, at its root.
    forwarded = request.headers.get("x-forwarded-host", "")
    if _HOST_RE.match(forwarded):
        return f"https://{forwarded}/"
    # On API Gateway the API's own URL is known only from the request.
    ctx = request.context or {}
    domain = ctx.get("domainName") or request.headers.get("host", "")
    stage = ctx.get("stage", "")
    return f"https://{domain}/{stage}/" if stage else f"https://{domain}/"


@app.route("/health", methods=["GET"], cors=_cors)
@json_errors
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/config", methods=["GET"], cors=_cors)
@json_errors
def config() -> dict[str, Any]:
    return rest_api.public_config(services.settings(), _rest_url())


@app.route("/streams", methods=["GET"], authorizer=jwt_auth, cors=_cors)
@json_errors
def list_streams() -> dict[str, Any]:
    """The caller's running streams (the client offers to cancel them)."""
    return running_streams.list_running(
        services.store(),
        services.settings().streams_table,
        _owner(),
        app.current_request.query_params,
    )


@app.route("/streams/{stream_id}", methods=["GET"], authorizer=jwt_auth, cors=_cors)
@json_errors
def get_stream(stream_id: str) -> dict[str, Any]:
    return rest_api.read_stream(
        services.store(), _owner(), stream_id, app.current_request.query_params
    )


@app.route("/streams/{stream_id}/cancel", methods=["POST"], authorizer=jwt_auth, cors=_cors)
@json_errors
def cancel_stream(stream_id: str) -> dict[str, Any]:
    return rest_api.cancel_stream(services.store(), _owner(), stream_id)


# -- WebSocket architecture (chalicelib/ws_flow.py) -----------------------------------------


@app.lambda_function(name="ws_authorize")
def ws_authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """REQUEST authorizer of $connect (wired to the route by the CDK stack)."""
    return ws_flow.authorize(event, services.verifier())


@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    return ws_flow.connect(event.to_dict())


def _start_generation(payload: dict[str, Any]) -> None:
    services.lambda_client().invoke(
        FunctionName=services.settings().generate_function_name,
        InvocationType="Event",
        Payload=json.dumps(payload).encode(),
    )


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    deps = ws_flow.MessageDeps(
        settings=services.settings(),
        store=services.store(),
        send=app.websocket_api.send,
        start_generation=_start_generation,
        rate_limit=services.rate_limiter().check,
    )
    return ws_flow.handle_message(event.to_dict(), deps)


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    # Nothing to clean up: a stream outlives its socket and can be resumed.
    return {"statusCode": 200}


@app.lambda_function(name="ws_generate")
def ws_generate(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Invoked asynchronously by ws_message; produces one stream."""
    return {
        "status": ws_flow.generate(event, _generate_deps(context), worker_id=context.aws_request_id)
    }


def _generate_deps(context: Any) -> ws_flow.GenerateDeps:
    return ws_flow.GenerateDeps(
        settings=services.settings(),
        store=services.store(),
        send=app.websocket_api.send,
        streamer=services.streamer(),
        remaining_ms=context.get_remaining_time_in_millis,
    )


@app.lambda_function(name="ws_generate_failed")
def ws_generate_failed(event: dict[str, Any], context: Any) -> dict[str, str]:
    """ws_generate's on-failure destination (the CDK stack wires it): Lambda's record of
    a failed asynchronous invocation. Ends its stream with an error frame at once."""
    return {"status": ws_flow.generate_failed(event, _generate_deps(context))}


# -- AppSync + SQS architecture (chalicelib/appsync_flow.py) ---------------------------------


@app.lambda_function(name="appsync_resolver")
def appsync_resolver(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """startStream, cancelStream and streamFrames (cdk/appsync/stream_operation.js)."""
    deps = appsync_flow.ResolverDeps(
        settings=services.settings(), store=services.store(), enqueue=services.enqueue_work
    )
    return appsync_flow.resolve(event, deps)


@app.on_sqs_message(
    queue_arn=services.settings().work_queue_arn,
    batch_size=services.settings().worker_batch_size,
    name="appsync_worker",
)
def appsync_worker(event: SQSEvent) -> dict[str, Any]:
    """Produces the streams startStream queued; partial batch failures (Powertools)."""
    deps = appsync_flow.WorkerDeps(
        settings=services.settings(),
        store=services.store(),
        publish=services.publisher().publish,
        streamer=services.streamer(),
        remaining_ms=event.context.get_remaining_time_in_millis,
    )
    return appsync_flow.handle_batch(event.to_dict(), deps)
