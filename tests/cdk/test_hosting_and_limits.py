"""The hosted client (S3 + CloudFront), the gateway and AppSync limits, and what makes the stack
deploy in any account (docs/architecture.md, hosting; docs/security.md)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.cdk.synth_support import SYNTH_REGION, Synth, flat

pytestmark = pytest.mark.cdk

# CloudFront's managed policies (ids are fixed by AWS).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
API_PATHS = {"/config", "/health", "/streams", "/streams/*"}


def _one(synth: Synth, cfn_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = synth.of_type(cfn_type).items()
    return found


def _distribution(synth: Synth) -> tuple[str, dict[str, Any]]:
    distribution_id, resource = _one(synth, "AWS::CloudFront::Distribution")
    return distribution_id, resource["Properties"]["DistributionConfig"]


def _functions_by_code(synth: Synth) -> dict[str, str]:
    """CloudFront Function logical id -> its code."""
    return {
        k: v["Properties"]["FunctionCode"]
        for k, v in synth.of_type("AWS::CloudFront::Function").items()
    }


# -- bucket and distribution ----------------------------------------------------------------


@pytest.mark.security("infra")
def test_client_bucket_is_private_encrypted_and_tls_only(synth: Synth) -> None:
    bucket_id, bucket = _one(synth, "AWS::S3::Bucket")
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "WebsiteConfiguration" not in props  # served through CloudFront only
    _, policy = _one(synth, "AWS::S3::BucketPolicy")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert [s["Condition"] for s in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    # Only this distribution, through origin access control, may read.
    (read,) = allow
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert read["Action"] == "s3:GetObject"
    distribution_id, _ = _distribution(synth)
    assert f"<{distribution_id}>" in flat(read["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert flat(read["Resource"]) == f"<{bucket_id}.Arn>/*"


def test_distribution_serves_the_bucket_over_https_through_origin_access_control(
    synth: Synth,
) -> None:
    bucket_id, _ = _one(synth, "AWS::S3::Bucket")
    oac_id, oac = _one(synth, "AWS::CloudFront::OriginAccessControl")
    assert oac["Properties"]["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    _, config = _distribution(synth)
    origins = {o["Id"]: o for o in config["Origins"]}
    default = config["DefaultCacheBehavior"]
    s3_origin = origins[default["TargetOriginId"]]
    assert s3_origin["DomainName"] == {"Fn::GetAtt": [bucket_id, "RegionalDomainName"]}
    assert s3_origin["OriginAccessControlId"] == {"Fn::GetAtt": [oac_id, "Id"]}
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert default["CachePolicyId"] == CACHING_OPTIMIZED
    assert config["DefaultRootObject"] == "index.html"
    # No error-page rewriting: it would also turn the API's 403/404 into index.html.
    assert "CustomErrorResponses" not in config


def test_api_paths_go_uncached_to_the_rest_api_stage_with_token_and_query(synth: Synth) -> None:
    _, config = _distribution(synth)
    origins = {o["Id"]: o for o in config["Origins"]}
    behaviors = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
    assert set(behaviors) == API_PATHS
    for path, behavior in behaviors.items():
        origin = origins[behavior["TargetOriginId"]]
        assert flat(origin["DomainName"]) == (
            "<RestAPI>.execute-api.<AWS::Region>.<AWS::URLSuffix>"
        ), path
        assert origin["OriginPath"] == "/api"  # the Chalice stage
        assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
        assert behavior["ViewerProtocolPolicy"] == "https-only"
        assert behavior["CachePolicyId"] == CACHING_DISABLED, path
        # Authorization and query strings reach the API; Host does not.
        assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST_HEADER, path
        assert "POST" in behavior["AllowedMethods"]  # cancel


def test_the_client_calls_only_paths_the_distribution_routes_to_the_api() -> None:
    """Every REST path of the Chalice app that the client uses has a behaviour."""
    from app import app

    routes = set(app.routes)
    assert routes == {
        "/health",
        "/config",
        "/streams",
        "/streams/{stream_id}",
        "/streams/{stream_id}/cancel",
    }
    for route in routes:
        assert any(
            route == pattern or route.startswith(pattern.rstrip("*")) for pattern in API_PATHS
        ), route


def test_spa_fallback_is_on_the_default_behaviour_only(synth: Synth) -> None:
    _, config = _distribution(synth)
    code = _functions_by_code(synth)
    default = config["DefaultCacheBehavior"]["FunctionAssociations"]
    (spa,) = [a["FunctionARN"]["Fn::GetAtt"][0] for a in default]
    assert "/index.html" in code[spa]
    for behavior in config["CacheBehaviors"]:
        (association,) = behavior["FunctionAssociations"]
        assert association["EventType"] == "viewer-request"
        function_id = association["FunctionARN"]["Fn::GetAtt"][0]
        assert function_id != spa
        assert "x-forwarded-host" in code[function_id]


def _run_cloudfront_function(code: str, request: dict[str, Any]) -> dict[str, Any]:
    """A CloudFront Function's handler run by Node on one viewer-request event."""
    event = json.dumps({"request": request})
    script = f"{code}\nprocess.stdout.write(JSON.stringify(handler({event})));"
    result = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout)


def test_spa_fallback_rewrites_routes_and_keeps_files(synth: Synth) -> None:
    _, config = _distribution(synth)
    spa = config["DefaultCacheBehavior"]["FunctionAssociations"][0]["FunctionARN"]
    code = _functions_by_code(synth)[spa["Fn::GetAtt"][0]]
    for uri, expected in [
        ("/", "/index.html"),
        ("/compare", "/index.html"),
        ("/a/b", "/index.html"),
        ("/assets/index-D2A7OnGc.js", "/assets/index-D2A7OnGc.js"),
        ("/favicon.ico", "/favicon.ico"),
    ]:
        out = _run_cloudfront_function(code, {"uri": uri, "headers": {}})
        assert out["uri"] == expected, uri


def test_api_behaviours_tell_the_rest_api_the_pages_host(synth: Synth) -> None:
    _, config = _distribution(synth)
    association = config["CacheBehaviors"][0]["FunctionAssociations"][0]
    code = _functions_by_code(synth)[association["FunctionARN"]["Fn::GetAtt"][0]]
    host = "d111111abcdef8.cloudfront.net"
    out = _run_cloudfront_function(code, {"uri": "/config", "headers": {"host": {"value": host}}})
    assert out["headers"]["x-forwarded-host"] == {"value": host}
    assert out["uri"] == "/config"


def test_config_reports_the_pages_origin_as_the_rest_url() -> None:
    """GET /config through CloudFront: the REST URL is the page's origin, whose /config and
    /streams/* the distribution routes to the API; without the header, the API's own URL."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app) as client:
        through = client.http.get(
            "/config", headers={"x-forwarded-host": "d111111abcdef8.cloudfront.net"}
        )
        assert through.json_body["endpoints"]["rest"] == "https://d111111abcdef8.cloudfront.net/"
        for bad in ("evil.example/path", "a b", "x\r\ninjected: 1", ""):
            answer = client.http.get("/config", headers={"x-forwarded-host": bad})
            assert "cloudfront" not in answer.json_body["endpoints"]["rest"]
            assert "evil" not in answer.json_body["endpoints"]["rest"], bad


# -- CSP ------------------------------------------------------------------------------------


def _csp(synth: Synth) -> dict[str, list[str]]:
    _, policy = _one(synth, "AWS::CloudFront::ResponseHeadersPolicy")
    headers = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    text = flat(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    assert headers["ContentSecurityPolicy"]["Override"] is True
    directives: dict[str, list[str]] = {}
    for part in text.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.mark.security("infra")
def test_csp_lets_the_page_reach_exactly_the_stacks_endpoints(synth: Synth) -> None:
    (url_id,) = synth.of_type("AWS::Lambda::Url")
    (api_id,) = synth.of_type("AWS::AppSync::GraphQLApi")
    directives = _csp(synth)
    assert directives["connect-src"] == [
        "'self'",  # the page's origin: /config and the REST paths
        f"https://host(<{url_id}.FunctionUrl>)",
        "wss://<WebsocketAPI>.execute-api.<AWS::Region>.<AWS::URLSuffix>",
        f"https://host(<{api_id}.GraphQLUrl>)",
        f"wss://host(<{api_id}.RealtimeUrl>)",
        "https://cognito-idp.<AWS::Region>.<AWS::URLSuffix>",  # sign-in
    ]
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert not [s for sources in directives.values() for s in sources if s == "*"]


def test_every_behaviour_sends_the_security_headers(synth: Synth) -> None:
    policy_id, policy = _one(synth, "AWS::CloudFront::ResponseHeadersPolicy")
    headers = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["ContentTypeOptions"]["Override"] is True
    _, config = _distribution(synth)
    for behavior in [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]:
        assert behavior["ResponseHeadersPolicyId"] == {"Ref": policy_id}


# -- deployment of the built client ----------------------------------------------------------


def test_the_built_client_is_uploaded_assets_first_then_index(synth: Synth) -> None:
    bucket_id, _ = _one(synth, "AWS::S3::Bucket")
    uploads = synth.of_type("Custom::CDKBucketDeployment")
    by_kind = {
        "index" if v["Properties"].get("Include") == ["index.html"] else "assets": (k, v)
        for k, v in uploads.items()
    }
    assert set(by_kind) == {"assets", "index"}
    assets_id, assets = by_kind["assets"]
    _, index = by_kind["index"]
    assert assets["Properties"]["Exclude"] == ["index.html"]
    assert index["Properties"]["Exclude"] == ["*"]
    # Hashed assets are immutable; index.html names them and is revalidated.
    assert assets["Properties"]["SystemMetadata"]["cache-control"].endswith("immutable")
    assert index["Properties"]["SystemMetadata"]["cache-control"] == "no-cache"
    assert assets_id in index["DependsOn"]
    for _, upload in by_kind.values():
        props = upload["Properties"]
        assert props["DestinationBucketName"] == {"Ref": bucket_id}
        assert props["RetainOnDelete"] is False  # destroy empties the bucket first
        assert "DistributionId" not in props  # nothing to invalidate, nothing granted
    (key,) = {k for _, u in by_kind.values() for k in u["Properties"]["SourceObjectKeys"]}
    asset = synth.assembly_dir / f"asset.{key.removesuffix('.zip')}"
    assert (asset / "index.html").read_text() == (synth.client_dist / "index.html").read_text()


def test_upload_role_cannot_invalidate_or_reach_other_buckets(synth: Synth) -> None:
    bucket_id, _ = _one(synth, "AWS::S3::Bucket")
    role_id = synth.stack.resolve(synth.stack.hosting.deployment_role.role_arn)["Fn::GetAtt"][0]
    resources: set[str] = set()
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert not [a for a in actions if a.startswith("cloudfront:")]
                for resource in (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                ):
                    resources.add(flat(resource))
    s3 = {r for r in resources if ":s3:" in r or bucket_id in r}
    assert s3 == {
        f"arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{SYNTH_REGION}",
        f"arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{SYNTH_REGION}/*",
        f"<{bucket_id}.Arn>",
        f"<{bucket_id}.Arn>/*",
    }


def test_synth_fails_clearly_without_a_built_client(stacks: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.html not found: build the client"):
        stacks.hosting.check_client_dist(tmp_path)
    (tmp_path / "index.html").write_text("<!doctype html>")
    assert stacks.hosting.check_client_dist(tmp_path) == tmp_path.resolve()


def test_client_url_is_the_first_output(synth: Synth) -> None:
    distribution_id, _ = _distribution(synth)
    first, value = next(iter(synth.outputs.items()))
    assert first == "ClientUrl"
    assert flat(value["Value"]) == f"https://<{distribution_id}.DomainName>/"


# -- gateway limits and logs -----------------------------------------------------------------


def test_rest_stage_logs_access_and_throttles_per_stage_and_method(synth: Synth) -> None:
    api = synth.resources["RestAPI"]
    props = api["Properties"]
    assert props["EndpointConfiguration"] == "REGIONAL"  # CloudFront fronts it
    log = props["AccessLogSetting"]
    group_id = log["DestinationArn"]["Fn::GetAtt"][0]
    assert synth.resources[group_id]["Properties"]["RetentionInDays"] == 30
    fields = json.loads(log["Format"])
    assert {"requestId", "status", "resourcePath", "sub"} <= set(fields)
    assert not [v for v in fields.values() if "header" in v.lower() or "Authorization" in v]
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in props["MethodSettings"]}
    stage = settings[("/*", "*")]
    assert 0 < stage["ThrottlingRateLimit"] <= stage["ThrottlingBurstLimit"]
    assert stage["DataTraceEnabled"] is False  # would log request and response bodies
    # The unauthenticated routes get less than the stage; paths encode '/' as '~1'.
    for key in [("/~1config", "GET"), ("/~1health", "GET")]:
        assert settings[key]["ThrottlingRateLimit"] < stage["ThrottlingRateLimit"], key
    assert ("/~1streams~1{stream_id}~1cancel", "POST") in settings
    paths = synth.resources["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    for path, method in settings:
        if path != "/*":
            assert method.lower() in paths[path[1:].replace("~1", "/")], path
    # Stage logging needs the Region's API Gateway CloudWatch role first.
    assert api["DependsOn"] == ["ApiGatewayAccount"] or "ApiGatewayAccount" in api["DependsOn"]


def test_api_gateway_logging_role_is_retained_and_only_for_api_gateway(synth: Synth) -> None:
    account = synth.resources["ApiGatewayAccount"]
    assert account["DeletionPolicy"] == "Retain"
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = synth.resources[role_id]
    assert role["DeletionPolicy"] == "Retain"  # other APIs of the Region may rely on it
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "apigateway.amazonaws.com"}]
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy,) = role["Properties"]["Policies"]
    actions = {a for s in policy["PolicyDocument"]["Statement"] for a in s["Action"]}
    assert actions and all(a.startswith("logs:") for a in actions)


def test_websocket_stage_logs_access_and_throttles_the_default_route(synth: Synth) -> None:
    stage_id, stage = _one(synth, "AWS::ApiGatewayV2::Stage")
    props = stage["Properties"]
    default = props["DefaultRouteSettings"]
    route = props["RouteSettings"]["$default"]
    assert 0 < route["ThrottlingRateLimit"] < default["ThrottlingRateLimit"]
    assert 0 < route["ThrottlingBurstLimit"] < default["ThrottlingBurstLimit"]
    group_id = props["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert synth.resources[group_id]["Properties"]["RetentionInDays"] == 30
    assert "routeKey" in json.loads(props["AccessLogSettings"]["Format"])
    assert "ApiGatewayAccount" in stage["DependsOn"]
    assert stage_id == "WebsocketAPIStage"


def test_appsync_limits_query_depth_and_resolver_count(synth: Synth, stacks: ModuleType) -> None:
    _, api = _one(synth, "AWS::AppSync::GraphQLApi")
    props = api["Properties"]
    assert props["QueryDepthLimit"] == stacks.graphql.QUERY_DEPTH_LIMIT == 5
    assert props["ResolverCountLimit"] == stacks.graphql.RESOLVER_COUNT_LIMIT == 3


def test_schema_queries_fit_the_depth_limit(stacks: ModuleType) -> None:
    """The deepest selection the schema allows (no recursive types) is within the limit, so
    the limit refuses only what a client never needs."""
    from graphql import build_schema
    from graphql.type import GraphQLList, GraphQLNonNull, GraphQLObjectType

    text = (stacks.graphql.APPSYNC_DIR / "schema.graphql").read_text()
    prelude = (
        "scalar AWSJSON\ndirective @aws_iam on FIELD_DEFINITION | OBJECT\n"
        "directive @aws_cognito_user_pools on FIELD_DEFINITION | OBJECT\n"
        "directive @aws_subscribe(mutations: [String]) on FIELD_DEFINITION\n"
    )
    schema = build_schema(prelude + text)

    def depth(type_: Any, seen: frozenset[str]) -> int:
        while isinstance(type_, GraphQLNonNull | GraphQLList):
            type_ = type_.of_type
        if not isinstance(type_, GraphQLObjectType) or type_.name in seen:
            return 0
        return 1 + max(depth(f.type, seen | {type_.name}) for f in type_.fields.values())

    roots = [schema.query_type, schema.mutation_type, schema.subscription_type]
    deepest = max(
        depth(field.type, frozenset()) for root in roots for field in root.fields.values()
    )
    assert 1 <= deepest + 1 <= stacks.graphql.QUERY_DEPTH_LIMIT


# -- any account ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "prefix"),
    [
        ("us-east-1", "us"),
        ("us-west-2", "us"),
        ("ca-central-1", "us"),
        ("eu-west-1", "eu"),
        ("eu-central-2", "eu"),
        ("ap-northeast-1", "apac"),
        ("ap-southeast-2", "apac"),
    ],
)
def test_default_model_follows_the_region(stacks: ModuleType, region: str, prefix: str) -> None:
    props = stacks.props
    assert props.default_model_id(region) == f"{prefix}.{props.BASE_MODEL_ID}"
    assert props.LlmStreamProps().model_id_for(region) == f"{prefix}.{props.BASE_MODEL_ID}"


@pytest.mark.parametrize("region", ["sa-east-1", "me-central-1", "us-gov-west-1", "af-south-1"])
def test_a_region_without_a_known_profile_fails_saying_what_to_pass(
    stacks: ModuleType, region: str
) -> None:
    with pytest.raises(ValueError, match=rf"{region}.*-c modelId="):
        stacks.props.default_model_id(region)
    chosen = stacks.props.LlmStreamProps(model_id="amazon.nova-pro-v1:0")
    assert chosen.model_id_for(region) == "amazon.nova-pro-v1:0"


def test_the_default_model_id_is_written_once(stacks: ModuleType) -> None:
    """Only in the protocol data file (chalicelib/protocol.json, whose byte-identical copies
    the Node function and the client read): the stack derives its base id from it."""
    from chalicelib.protocol import DEFAULT_MODEL_ID

    base = stacks.props.BASE_MODEL_ID
    assert DEFAULT_MODEL_ID.endswith(f".{base}")
    root = Path(stacks.__file__).resolve().parents[2]
    sources = [
        *(root / "cdk" / "stacks").glob("*.py"),
        *(root / "chalicelib").rglob("*.py"),
        *(root / "node_function" / "src").glob("*.mjs"),
        *(root / "local").glob("*.py"),
        *(root / "client" / "src").rglob("*.ts*"),
        root / "app.py",
    ]
    assert [str(p.relative_to(root)) for p in sources if base in p.read_text()] == []


def test_synth_model_is_the_regions_profile(synth: Synth, stacks: ModuleType) -> None:
    env = synth.resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["MODEL_ID"] == f"us.{stacks.props.BASE_MODEL_ID}"
    assert synth.outputs["ModelId"]["Value"] == env["MODEL_ID"]


def test_the_region_must_be_concrete(stacks: ModuleType) -> None:
    import aws_cdk as cdk

    stack = cdk.Stack(cdk.App(), "NoRegion")
    with pytest.raises(ValueError, match="AWS_DEFAULT_REGION"):
        stacks.props.concrete_region(stack)


def test_defaults_fit_a_new_account(stacks: ModuleType) -> None:
    props = stacks.props.LlmStreamProps()
    assert props.stream_reserved_concurrency is None
    assert props.threat_protection is False
    assert props.extra_allowed_origins == ()


def test_context_values_are_read_and_checked(stacks: ModuleType) -> None:
    import aws_cdk as cdk

    def props_of(context: dict[str, Any]) -> Any:
        return stacks.props.LlmStreamProps.from_context(cdk.App(context=context))

    chosen = props_of(
        {
            "streamReservedConcurrency": "10",
            "threatProtection": "true",
            "extraAllowedOrigins": "http://localhost:5173",
            "modelId": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "apiGatewayLogsRole": "existing",
        }
    )
    assert chosen.stream_reserved_concurrency == 10
    assert chosen.threat_protection is True
    assert chosen.extra_allowed_origins == ("http://localhost:5173",)
    assert chosen.model_id_for("us-east-1").startswith("eu.")
    assert chosen.api_gateway_logs_role == "existing"
    with pytest.raises(ValueError, match="extraAllowedOrigins"):
        props_of({"allowedOrigin": "http://localhost:5173"})
    with pytest.raises(ValueError, match="100 unreserved"):
        props_of({"streamReservedConcurrency": "0"})
    with pytest.raises(ValueError, match="apiGatewayLogsRole"):
        props_of({"apiGatewayLogsRole": "maybe"})
    assert re.search("create", str(stacks.props.API_GATEWAY_LOGS_ROLE_MODES))
