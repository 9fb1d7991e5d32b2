"""Architecture 4 in the stack: the REST API's streaming methods (cdk/stacks/rest_stream.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cdk.synth_support import SYNTH_REGION, Synth, flat

pytestmark = pytest.mark.cdk

STREAMING = [("/streams", "post"), ("/streams/{stream_id}/events", "get")]


def _streamer(synth: Synth) -> str:
    (streamer,) = [
        f for f in synth.of_type("AWS::Lambda::Function") if f.startswith("StreamerFunction")
    ]
    return streamer


def _paths(synth: Synth) -> dict[str, Any]:
    return synth.resources["RestAPI"]["Properties"]["DefinitionBody"]["paths"]


@pytest.mark.parametrize(("path", "method"), STREAMING)
def test_streaming_methods_stream_from_the_node_function(
    synth: Synth, path: str, method: str
) -> None:
    operation = _paths(synth)[path][method]
    integration = operation["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    assert integration["httpMethod"] == "POST"  # Lambda's invoke API, whatever the route's
    assert integration["responseTransferMode"] == "STREAM"
    assert integration["timeoutInMillis"] == 900_000  # the streaming maximum
    uri = flat(integration["uri"])
    assert uri == (
        "arn:<AWS::Partition>:apigateway:<AWS::Region>:lambda:path/2021-11-15/functions/"
        f"<{_streamer(synth)}.Arn>/response-streaming-invocations"
    )


@pytest.mark.parametrize(("path", "method"), STREAMING)
def test_streaming_methods_use_the_apis_jwt_authorizer(
    synth: Synth, path: str, method: str
) -> None:
    body = synth.resources["RestAPI"]["Properties"]["DefinitionBody"]
    security = _paths(synth)[path][method]["security"]
    assert security == _paths(synth)["/streams/{stream_id}"]["get"]["security"]
    (scheme,) = security[0]
    authorizer = body["securityDefinitions"][scheme]["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "token"
    assert "JwtAuth" in flat(authorizer["authorizerUri"]["Fn::Sub"])


def test_the_function_covers_the_integration_timeout(synth: Synth) -> None:
    function = synth.resources[_streamer(synth)]["Properties"]
    assert function["Timeout"] * 1000 >= 900_000


def test_only_the_streaming_methods_of_the_stage_may_invoke_the_function(synth: Synth) -> None:
    streamer = _streamer(synth)
    grants = [
        p["Properties"]
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
        and flat(p["Properties"]["FunctionName"]) == f"<{streamer}.Arn>"
    ]
    assert {flat(g["SourceArn"]) for g in grants} == {
        f"arn:<AWS::Partition>:execute-api:{SYNTH_REGION}:<AWS::AccountId>:<RestAPI>"
        f"/api/{verb}{path}"
        for verb, path in [("POST", "/streams"), ("GET", "/streams/*/events")]
    }
    assert {g["Action"] for g in grants} == {"lambda:InvokeFunction"}


def test_streaming_methods_have_their_own_throttles(synth: Synth) -> None:
    props = synth.resources["RestAPI"]["Properties"]
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in props["MethodSettings"]}
    stage = settings[("/*", "*")]
    start = settings[("/~1streams", "POST")]
    follow = settings[("/~1streams~1{stream_id}~1events", "GET")]
    assert start["ThrottlingRateLimit"] < follow["ThrottlingRateLimit"]
    assert follow["ThrottlingRateLimit"] < stage["ThrottlingRateLimit"]
    assert start["DataTraceEnabled"] is False and follow["DataTraceEnabled"] is False


def test_the_rest_api_stays_regional_for_the_5_minute_idle_timeout(synth: Synth) -> None:
    assert synth.resources["RestAPI"]["Properties"]["EndpointConfiguration"] == "REGIONAL"


def test_cloudfront_sends_the_start_path_to_the_rest_api(synth: Synth) -> None:
    (distribution,) = synth.of_type("AWS::CloudFront::Distribution").values()
    behaviours = distribution["Properties"]["DistributionConfig"]["CacheBehaviors"]
    patterns = {b["PathPattern"]: b for b in behaviours}
    assert {"/streams", "/streams/*"} <= set(patterns)
    start = patterns["/streams"]
    assert "POST" in start["AllowedMethods"]
    assert start["TargetOriginId"] == patterns["/streams/*"]["TargetOriginId"]


def test_the_rest_stream_url_is_an_output(synth: Synth) -> None:
    url = flat(synth.outputs["RestStreamUrl"]["Value"])
    assert url == ("https://<RestAPI>.execute-api.<AWS::Region>.<AWS::URLSuffix>/api/streams")
