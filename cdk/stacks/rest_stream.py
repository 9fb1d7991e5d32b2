"""Architecture 4: the REST API's streaming routes, authenticated at the gateway.

Two methods on the Chalice REST API (same API, stage and CloudFront origin as ``/config``
and ``/streams/{stream_id}``), each an AWS_PROXY integration with response transfer mode
STREAM to the Node.js streaming function (the Function URL's; src/frontdoor.mjs reads
the REST proxy event)::

    POST /streams                      start a stream
    GET  /streams/{stream_id}/events   follow / resume (Last-Event-ID or ?afterSeq=)

Chalice owns the API's OpenAPI body (``DefinitionBody`` of the ``RestAPI`` SAM resource), so
the methods are added there, with the same ``security`` as the Chalice routes: the app's
``jwt_auth`` TOKEN authorizer. That one rather than a Cognito user-pool authorizer because
it is the check every other route of this API already runs (ID tokens only, the app
client's audience, the same JWKS cache and log lines), so the four architectures share one
token rule; a user-pool authorizer would also accept access tokens. With it, a missing or
bad token is refused by API Gateway and the function is never invoked (nor billed).

The endpoint stays REGIONAL (the stack's choice for the whole API, since CloudFront fronts
it): a streaming method's idle timeout is then 5 min (30 s on an edge-optimized endpoint).
CloudFront's origin response timeout (30 s by default, between any two packets too) is the
tighter bound on this path; the function's 15 s heartbeats stay under both.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.props import API_STAGE

START_PATH = "/streams"
EVENTS_PATH = "/streams/{stream_id}/events"
# The streaming integration's maximum (REST APIs otherwise stop at 29 s); the function's
# own timeout (900 s) covers it.
STREAM_INTEGRATION_TIMEOUT_MS = 900_000
# Per-method throttles (all callers): a start holds a Lambda for up to 15 min and opens a
# model stream, so it gets less than the stage default; a follow holds a Lambda too.
REST_STREAM_THROTTLES = {
    (START_PATH, "POST"): (10, 20),
    (EVENTS_PATH, "GET"): (20, 40),
}
# The Chalice route whose authorizer the streaming methods reuse.
_AUTHORIZED_CHALICE_ROUTE = ("/streams/{stream_id}", "get")


def streaming_integration(function_arn: str) -> dict[str, Any]:
    """An OpenAPI ``x-amazon-apigateway-integration``: Lambda proxy, response streaming."""
    return {
        "type": "aws_proxy",
        "httpMethod": "POST",
        # InvokeWithResponseStream: API version 2021-11-15, not the buffered invocations.
        "uri": (
            f"arn:{cdk.Aws.PARTITION}:apigateway:{cdk.Aws.REGION}:lambda:path/2021-11-15/"
            f"functions/{function_arn}/response-streaming-invocations"
        ),
        "passthroughBehavior": "when_no_match",
        "responseTransferMode": "STREAM",
        "timeoutInMillis": STREAM_INTEGRATION_TIMEOUT_MS,
    }


ALLOWED_HEADERS = "Authorization,Content-Type,Last-Event-ID"


def streaming_preflight(chalice_preflight: dict[str, Any], method: str) -> dict[str, Any]:
    """Chalice's OPTIONS mock (the same origin and max age) for a streaming method."""
    preflight = json.loads(json.dumps(chalice_preflight))
    params = preflight["x-amazon-apigateway-integration"]["responses"]["default"][
        "responseParameters"
    ]
    params["method.response.header.Access-Control-Allow-Methods"] = f"'{method},OPTIONS'"
    params["method.response.header.Access-Control-Allow-Headers"] = f"'{ALLOWED_HEADERS}'"
    return preflight


class RestStreamRoutes(Construct):
    """Adds the streaming methods to ``api`` (the Chalice ``RestAPI`` SAM resource) and lets
    exactly those methods invoke ``function``; optionally associates a WAF web ACL."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: cdk.CfnResource,
        function: lambda_.IFunction,
        web_acl_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        body = stack.resolve(api.definition_body) or {}  # type: ignore[attr-defined]
        path, method = _AUTHORIZED_CHALICE_ROUTE
        security = body.get("paths", {}).get(path, {}).get(method, {}).get("security")
        if not security:
            # Never add an unauthenticated streaming method.
            raise RuntimeError(f"the Chalice route GET {path} has no authorizer to reuse")
        integration = streaming_integration(function.function_arn)
        common = {
            "consumes": ["application/json"],
            "produces": ["text/event-stream", "application/json"],
            "security": security,
            "x-amazon-apigateway-integration": integration,
        }
        api.add_property_override(
            f"DefinitionBody.paths.{START_PATH}.post",
            {**common, "responses": {"200": {"description": "SSE frames"}}},
        )
        api.add_property_override(
            f"DefinitionBody.paths.{EVENTS_PATH}.get",
            {
                **common,
                "parameters": [
                    {"name": "stream_id", "in": "path", "required": True, "type": "string"}
                ],
                "responses": {"200": {"description": "SSE frames"}},
            },
        )
        preflight = body.get("paths", {}).get(path, {}).get("options")
        if preflight:
            # CORS is on (an extra allowed origin): answer preflights as Chalice's routes do,
            # plus the resume header and each path's own method.
            for route_path, verb in ((START_PATH, "POST"), (EVENTS_PATH, "GET")):
                api.add_property_override(
                    f"DefinitionBody.paths.{route_path}.options",
                    streaming_preflight(preflight, verb),
                )
        # Only these two methods of this API's stage may invoke the function.
        api_arn = stack.format_arn(
            service="execute-api", resource=api.ref, arn_format=cdk.ArnFormat.NO_RESOURCE_NAME
        )
        for name, (route_path, verb) in {
            "InvokeStart": (START_PATH, "POST"),
            "InvokeEvents": ("/streams/*/events", "GET"),
        }.items():
            lambda_.CfnPermission(
                self,
                name,
                action="lambda:InvokeFunction",
                function_name=function.function_arn,
                principal="apigateway.amazonaws.com",
                source_arn=f"{api_arn}/{API_STAGE}/{verb}{route_path}",
            )
        host = f"{api.ref}.execute-api.{cdk.Aws.REGION}.{cdk.Aws.URL_SUFFIX}"
        self.url = f"https://{host}/{API_STAGE}{START_PATH}"
        if web_acl_arn:
            # SAM names the stage resource; its name is referable as <Api>.Stage.
            stage_name = cdk.Fn.ref(f"{stack.resolve(api.logical_id)}.Stage")
            wafv2.CfnWebACLAssociation(
                self,
                "WebAcl",
                resource_arn=(
                    f"arn:{cdk.Aws.PARTITION}:apigateway:{cdk.Aws.REGION}::/restapis/"
                    f"{api.ref}/stages/{stage_name}"
                ),
                web_acl_arn=web_acl_arn,
            )
