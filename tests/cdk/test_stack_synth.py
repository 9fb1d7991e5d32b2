"""Offline synth assertions for the CDK stack (docs/architecture.md), the WebSocket transport's
wiring included (authorizer, stage, @connections and generator permissions), the Node.js
Function URL (architecture 1: runtime, streaming URL, CORS, public-invoke permissions, role),
and AppSync + SQS (architecture 3: auth modes, schema, resolvers, queues, event source, IAM).

No AWS account, credentials or network beyond PyPI (Chalice pip-installs requirements.txt into
``.chalice/deployments/`` once; later runs reuse it). The stack is synthesized once per session
(tests/cdk/conftest.py).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chalicelib.stream_store import FRAMES_TABLE_SCHEMA, STREAMS_TABLE_SCHEMA
from tests.cdk.synth_support import CDK_DIR, REPO_ROOT, SYNTH_REGION, Synth, flat

pytestmark = pytest.mark.cdk

NODE_FUNCTION_DIR = REPO_ROOT / "node_function"
PYTHON_RUNTIME = "python3.12"
NODE_RUNTIMES = {"nodejs22.x", "nodejs24.x"}
EXPECTED_ENV = (
    "STREAMS_TABLE",
    "FRAMES_TABLE",
    "MODEL_ID",
    "USER_POOL_ID",
    "USER_POOL_CLIENT_ID",
    "CORS_ALLOW_ORIGIN",
    "POWERTOOLS_SERVICE_NAME",
    "LOG_LEVEL",
)
STAGE = "api"
WS_HOST = "<WebsocketAPI>.execute-api.<AWS::Region>.<AWS::URLSuffix>"
# ARNs the stack builds with format_arn name the synth Region (a deploy's is concrete too).
CONNECTIONS_ARN = (
    f"arn:<AWS::Partition>:execute-api:{SYNTH_REGION}:<AWS::AccountId>:<WebsocketAPI>"
    f"/{STAGE}/POST/@connections/*"
)
WS_ROUTES = {
    "$connect": "WebsocketConnectRoute",
    "$default": "WebsocketMessageRoute",
    "$disconnect": "WebsocketDisconnectRoute",
}
MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
APPSYNC_DIR = CDK_DIR / "appsync"
# (type, field) -> (data source type, resolver code file): the contract of cdk/appsync/.
APPSYNC_RESOLVERS = {
    ("Mutation", "startStream"): ("AWS_LAMBDA", "stream_operation.js"),
    ("Mutation", "cancelStream"): ("AWS_LAMBDA", "stream_operation.js"),
    ("Query", "streamFrames"): ("AWS_LAMBDA", "stream_operation.js"),
    ("Mutation", "publishFrames"): ("NONE", "publish_frames.js"),
    ("Subscription", "onStreamFrame"): ("NONE", "on_stream_frame.js"),
}
WORKER_TIMEOUT_S = 180
WORKER_BATCH_SIZE = 1
WORKER_MAX_RECEIVE_COUNT = 3


def _ref(resource_id: str) -> dict[str, str]:
    return {"Ref": resource_id}


def _statements(synth: Synth) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for resource in synth.resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            statements += props["PolicyDocument"]["Statement"]
        elif resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                statements += policy["PolicyDocument"]["Statement"]
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_of(synth: Synth, function_id: str) -> str:
    return synth.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def _role_statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for resource in synth.of_type("AWS::IAM::Policy").values()
        if _ref(role_id) in resource["Properties"]["Roles"]
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]


def _role_actions(synth: Synth, role_id: str) -> set[str]:
    return {a for s in _role_statements(synth, role_id) for a in _as_list(s["Action"])}


def _references(value: Any) -> set[str]:
    """Logical ids (and pseudo parameters) that a property value refers to."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        if set(value) == {"Ref"}:
            found.add(value["Ref"])
        elif set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            found.add(target[0] if isinstance(target, list) else target.split(".")[0])
        elif set(value) == {"Fn::Sub"}:
            sub = value["Fn::Sub"]
            text, names = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
            found |= {
                m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text) if m not in names
            }
            found |= _references(names)
        else:
            for item in value.values():
                found |= _references(item)
    return found


# -- DynamoDB -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_name", "schema"),
    [("STREAMS_TABLE", STREAMS_TABLE_SCHEMA), ("FRAMES_TABLE", FRAMES_TABLE_SCHEMA)],
)
def test_tables_use_the_stream_store_schemas(
    synth: Synth, env_name: str, schema: dict[str, Any]
) -> None:
    tables = synth.of_type("AWS::DynamoDB::Table")
    assert len(tables) == 2
    api_env = synth.resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    table_id = api_env[env_name]["Ref"]
    props = tables[table_id]["Properties"]
    assert props["KeySchema"] == schema["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(
        schema["AttributeDefinitions"], key=str
    )
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": schema["TimeToLiveAttribute"],
        "Enabled": True,
    }
    assert schema["TimeToLiveAttribute"] == "expiresAt"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


# -- Cognito --------------------------------------------------------------------------------


def test_user_pool_is_admin_only_with_a_strong_password_policy(synth: Synth) -> None:
    (pool,) = synth.of_type("AWS::Cognito::UserPool").values()
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props["AliasAttributes"] == ["email"]
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    assert all(
        policy[k]
        for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols")
    )
    # Essentials (free tier); threat protection (Plus, billed per user) only if asked for.
    assert props["UserPoolTier"] == "ESSENTIALS"
    assert "UserPoolAddOns" not in props
    assert pool["DeletionPolicy"] == "Delete"


def test_app_client_has_password_srp_and_refresh_flows_and_no_secret(synth: Synth) -> None:
    (client,) = synth.of_type("AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert set(props["ExplicitAuthFlows"]) == {
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_USER_SRP_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    }
    assert props.get("GenerateSecret", False) is False
    assert props["PreventUserExistenceErrors"] == "ENABLED"
    units = props["TokenValidityUnits"]
    # Short: ID and access tokens stay valid after sign-out until they expire.
    assert (props["IdTokenValidity"], units["IdToken"]) == (15, "minutes")
    assert (props["AccessTokenValidity"], units["AccessToken"]) == (15, "minutes")
    assert (props["RefreshTokenValidity"], units["RefreshToken"]) == (30 * 24 * 60, "minutes")


# -- Lambda functions -----------------------------------------------------------------------


def test_chalice_functions_exist_with_the_target_runtime(synth: Synth) -> None:
    functions = synth.project_functions()
    assert {"APIHandler", "JwtAuth"} <= set(functions)
    for logical_id, function in functions.items():
        runtime = function["Properties"]["Runtime"]
        assert runtime == PYTHON_RUNTIME or runtime in NODE_RUNTIMES, logical_id


def test_python_functions_get_every_setting_through_the_environment(synth: Synth) -> None:
    (pool_id,) = synth.of_type("AWS::Cognito::UserPool")
    (client_id,) = synth.of_type("AWS::Cognito::UserPoolClient")
    for logical_id, function in synth.of_type("AWS::Serverless::Function").items():
        env = function["Properties"]["Environment"]["Variables"]
        assert set(EXPECTED_ENV) <= set(env), logical_id
        assert env["MODEL_ID"] == "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        assert env["USER_POOL_ID"] == _ref(pool_id)
        assert env["USER_POOL_CLIENT_ID"] == _ref(client_id)
        assert env["POWERTOOLS_SERVICE_NAME"] == "llm-stream"
        assert env["LOG_LEVEL"] == "INFO"
        assert env["CORS_ALLOW_ORIGIN"] not in {"*", ""}
        for table_var in ("STREAMS_TABLE", "FRAMES_TABLE"):
            assert synth.resources[env[table_var]["Ref"]]["Type"] == "AWS::DynamoDB::Table"


def test_rest_api_has_no_cors_since_the_page_shares_its_origin(synth: Synth) -> None:
    """Through CloudFront the client and the REST API share one origin, so without an extra
    origin (context extraAllowedOrigins) the API answers no preflight and no CORS header.
    The setting is read when app.py is imported: an app module cached from an earlier import
    (other tests, whose default is "*") must not leak into the API definition."""
    origin = synth.resources["APIHandler"]["Properties"]["Environment"]["Variables"][
        "CORS_ALLOW_ORIGIN"
    ]
    assert origin == "none"
    body = synth.resources["RestAPI"]["Properties"]["DefinitionBody"]
    assert "Access-Control-Allow-Origin" not in json.dumps(body)
    assert not [m for path in body["paths"].values() for m in path if m.lower() == "options"]


@pytest.mark.security("infra")
def test_every_function_has_log_retention(synth: Synth) -> None:
    log_groups = synth.of_type("AWS::Logs::LogGroup")
    for logical_id, function in synth.functions().items():
        props = function["Properties"]
        group_ref = props.get("LoggingConfig", {}).get("LogGroup")
        if group_ref is not None:
            group = log_groups[group_ref["Ref"]]
        else:  # or the default log group, created explicitly with retention
            named = [
                g
                for g in log_groups.values()
                if flat(g["Properties"].get("LogGroupName")) == f"/aws/lambda/<{logical_id}>"
            ]
            assert named, f"{logical_id} has no log group with retention"
            group = named[0]
        assert group["Properties"]["RetentionInDays"] > 0, logical_id


def test_every_function_logs_as_json(synth: Synth) -> None:
    for logical_id, function in synth.functions().items():
        assert function["Properties"]["LoggingConfig"]["LogFormat"] == "JSON", logical_id


def test_authorizer_role_has_no_data_or_model_access(synth: Synth) -> None:
    authorizer_role = synth.resources["JwtAuth"]["Properties"]["Role"]["Fn::GetAtt"][0]
    handler_role = synth.resources["APIHandler"]["Properties"]["Role"]["Fn::GetAtt"][0]
    assert authorizer_role != handler_role
    # The $connect authorizer only verifies JWTs too.
    assert _role_of(synth, "WsAuthorize") == authorizer_role
    for resource in synth.of_type("AWS::IAM::Policy").values():
        props = resource["Properties"]
        if _ref(authorizer_role) in props["Roles"]:
            actions = {
                a for s in props["PolicyDocument"]["Statement"] for a in _as_list(s["Action"])
            }
            assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_deployment_package_binaries_match_the_lambda_runtime(synth: Synth) -> None:
    """Chalice builds for the synth Python; the stack makes it build for python3.12, so
    cffi's extension (imported by cryptography for RS256) loads on Lambda."""
    assert synth.deployment_zips
    tag = PYTHON_RUNTIME.removeprefix("python").replace(".", "")
    for path in synth.deployment_zips:
        names = zipfile.ZipFile(path).namelist()
        assert "app.py" in names
        assert any(n.startswith("chalicelib/") for n in names)
        extensions = [n for n in names if re.search(r"\.cpython-\d+", n)]
        assert any(n.startswith("_cffi_backend.") for n in extensions)
        wrong = [n for n in extensions if f".cpython-{tag}-" not in n]
        assert wrong == []


# -- IAM ------------------------------------------------------------------------------------


@pytest.mark.security("infra")
def test_no_wildcard_bedrock_permissions(synth: Synth) -> None:
    bedrock_statements = 0
    # _statements() covers every role's policies: the generator's and the streamer's.
    for statement in _statements(synth):
        actions = _as_list(statement["Action"])
        resources = [flat(r) for r in _as_list(statement.get("Resource", []))]
        assert "*" not in actions
        assert "*" not in resources, statement
        bedrock = [a for a in actions if a.lower().startswith("bedrock:")]
        if not bedrock:
            continue
        bedrock_statements += 1
        assert set(bedrock) <= {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
        for arn in resources:
            assert arn.endswith(
                (
                    ":inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                    ":foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0",
                )
            ), arn
            if ":bedrock:*:" in arn:
                # Any Region, so only through the configured inference profile.
                condition = statement["Condition"]["ArnLike"]["bedrock:InferenceProfileArn"]
                assert flat(condition).endswith(
                    ":inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
                )
    # Inference profile + its model, for each of three roles (generator, streamer, worker).
    assert bedrock_statements == 6


# -- WebSocket -----------------------------------------------------------------------------


def _authorizer(synth: Synth) -> tuple[str, dict[str, Any]]:
    (authorizer,) = synth.of_type("AWS::ApiGatewayV2::Authorizer").items()
    return authorizer


def test_connect_authorizer_is_a_lambda_request_authorizer_on_the_protocol_header(
    synth: Synth,
) -> None:
    _, authorizer = _authorizer(synth)
    props = authorizer["Properties"]
    assert props["ApiId"] == _ref("WebsocketAPI")
    assert props["AuthorizerType"] == "REQUEST"
    # The token travels as the "auth.<token>" subprotocol, never in the URL (docs/security.md).
    assert props["IdentitySource"] == ["route.request.header.Sec-WebSocket-Protocol"]
    assert flat(props["AuthorizerUri"]) == (
        "arn:<AWS::Partition>:apigateway:<AWS::Region>:lambda:path/2015-03-31/functions/"
        "<WsAuthorize.Arn>/invocations"
    )
    handler = synth.resources["WsAuthorize"]["Properties"]["Handler"]
    assert handler == "app.ws_authorize"


def test_only_the_connect_route_is_authorized_and_by_that_authorizer(synth: Synth) -> None:
    authorizer_id, _ = _authorizer(synth)
    routes = synth.of_type("AWS::ApiGatewayV2::Route")
    assert {r["Properties"]["RouteKey"]: k for k, r in routes.items()} == WS_ROUTES
    connect = routes["WebsocketConnectRoute"]["Properties"]
    assert connect["AuthorizationType"] == "CUSTOM"
    assert connect["AuthorizerId"] == _ref(authorizer_id)
    # WebSocket authorizers apply to $connect only; the others run on that connection.
    for route_id in ("WebsocketMessageRoute", "WebsocketDisconnectRoute"):
        assert routes[route_id]["Properties"].get("AuthorizationType", "NONE") == "NONE"


def test_authorizer_invoke_permission_is_scoped_to_the_authorizer(synth: Synth) -> None:
    authorizer_id, _ = _authorizer(synth)
    permissions = [
        p["Properties"]
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if "WsAuthorize" in _references(p["Properties"]["FunctionName"])
    ]
    assert len(permissions) == 1  # nothing broader (such as <api>/*) may invoke it
    (permission,) = permissions
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert flat(permission["SourceArn"]) == (
        f"arn:<AWS::Partition>:execute-api:{SYNTH_REGION}:<AWS::AccountId>:<WebsocketAPI>"
        f"/authorizers/<{authorizer_id}>"
    )


def test_websocket_stage_auto_deploys_the_complete_api(synth: Synth) -> None:
    (stage,) = synth.of_type("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["ApiId"] == _ref("WebsocketAPI")
    assert props["StageName"] == STAGE
    # Route and authorizer changes go live: no pinned deployment (a stage's DeploymentId
    # cannot be updated while AutoDeploy is on), so Chalice's static one is gone.
    assert props["AutoDeploy"] is True
    assert "DeploymentId" not in props
    assert synth.of_type("AWS::ApiGatewayV2::Deployment") == {}
    assert set(WS_ROUTES.values()) <= set(_as_list(stage.get("DependsOn", [])))
    throttle = props["DefaultRouteSettings"]
    assert 0 < throttle["ThrottlingRateLimit"] <= throttle["ThrottlingBurstLimit"]


@pytest.mark.security("infra")
def test_manage_connections_is_limited_to_posting_on_this_api(synth: Synth) -> None:
    grants: list[str] = []
    for statement in _statements(synth):
        actions = _as_list(statement["Action"])
        assert not any(a in {"execute-api:*", "*"} for a in actions), statement
        if any(a.lower().startswith("execute-api:") for a in actions):
            assert actions == ["execute-api:ManageConnections"], statement
            grants += [flat(r) for r in _as_list(statement["Resource"])]
    # This API, this stage, POST (post_to_connection) only; the wildcard is the connection id.
    assert grants and set(grants) == {CONNECTIONS_ARN}
    posting = {
        fn
        for fn in synth.of_type("AWS::Serverless::Function")
        if "execute-api:ManageConnections" in _role_actions(synth, _role_of(synth, fn))
    }
    # The generator's on-failure destination posts the error frame of a crashed generator.
    assert posting == {"WebsocketMessage", "WsGenerate", "WsGenerateFailed"}


def _invoke_grants(synth: Synth) -> dict[str, set[str]]:
    """Role logical id -> the function ARNs (flattened) its policies may invoke."""
    grants: dict[str, set[str]] = {}
    for resource in synth.of_type("AWS::IAM::Policy").values():
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = _as_list(statement["Action"])
            if any(a.startswith("lambda:Invoke") for a in actions):
                assert statement["Action"] == "lambda:InvokeFunction", statement
                for role in resource["Properties"]["Roles"]:
                    grants.setdefault(role["Ref"], set()).update(
                        flat(r) for r in _as_list(statement["Resource"])
                    )
    return grants


def test_only_the_message_handler_may_invoke_exactly_the_generator(synth: Synth) -> None:
    invoke_roles = {
        role for role, arns in _invoke_grants(synth).items() if "<WsGenerate.Arn>" in arns
    }
    assert invoke_roles == {_role_of(synth, "WebsocketMessage")}
    assert _invoke_grants(synth)[_role_of(synth, "WebsocketMessage")] == {"<WsGenerate.Arn>"}
    assert _role_of(synth, "WsGenerate") not in invoke_roles
    # The generator invokes only its on-failure destination (Lambda does, with its role).
    assert _invoke_grants(synth)[_role_of(synth, "WsGenerate")] == {"<WsGenerateFailed.Arn>"}


def test_roles_follow_least_privilege(synth: Synth) -> None:
    logs_only = {"logs:CreateLogStream", "logs:PutLogEvents"}
    for fn in ("WebsocketConnect", "WebsocketDisconnect", "WsAuthorize"):
        assert _role_actions(synth, _role_of(synth, fn)) == logs_only, fn
    bedrock_roles = {
        fn
        for fn in synth.functions()
        if any(a.startswith("bedrock:") for a in _role_actions(synth, _role_of(synth, fn)))
    }
    # The only functions that call the model: the two generators and the Function URL streamer.
    stream_id, _ = synth.stream_function()
    assert bedrock_roles == {"WsGenerate", "AppsyncWorker", stream_id}


def test_generator_runs_up_to_15_minutes_without_async_retries(synth: Synth) -> None:
    # Everything else is invoked by API Gateway (29 s) or AppSync (30 s) and answers at once.
    special = {"WsGenerate": 900, "AppsyncWorker": WORKER_TIMEOUT_S, "AppsyncResolver": 10}
    for logical_id, function in synth.of_type("AWS::Serverless::Function").items():
        timeout = function["Properties"]["Timeout"]
        assert timeout == special.get(logical_id, 30), logical_id
    (config,) = synth.of_type("AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == _ref("WsGenerate")
    assert props["Qualifier"] == "$LATEST"  # ws_message invokes the unqualified name
    # A retry can neither produce twice nor resume a claimed stream.
    assert props["MaximumRetryAttempts"] == 0


def test_websocket_settings_reach_the_functions(synth: Synth) -> None:
    for logical_id, function in synth.of_type("AWS::Serverless::Function").items():
        env = function["Properties"]["Environment"]["Variables"]
        assert flat(env["WEBSOCKET_MANAGEMENT_URL"]) == f"https://{WS_HOST}/{STAGE}", logical_id
        assert flat(env["PUBLIC_WEBSOCKET_URL"]) == f"wss://{WS_HOST}/{STAGE}", logical_id
        if logical_id == "WebsocketMessage":
            assert env["GENERATE_FUNCTION_NAME"] == _ref("WsGenerate")
        else:
            assert "GENERATE_FUNCTION_NAME" not in env, logical_id


# -- Function URL (Node.js, architecture 1) -------------------------------------------------


def _function_url(synth: Synth) -> tuple[str, dict[str, Any]]:
    (found,) = synth.of_type("AWS::Lambda::Url").items()
    return found


def test_stream_function_is_node_with_the_index_handler(synth: Synth) -> None:
    _, function = synth.stream_function()
    props = function["Properties"]
    assert props["Runtime"] in NODE_RUNTIMES
    assert props["Handler"] == "index.handler"
    assert (NODE_FUNCTION_DIR / "index.mjs").is_file()  # the asset's entry point
    assert props["MemorySize"] == 512
    assert props["Timeout"] == 900  # one invocation streams a whole generation
    # No reservation unless asked for: Lambda refuses one that leaves fewer than 100
    # executions unreserved, which fails in new accounts.
    assert "ReservedConcurrentExecutions" not in props
    assert "VpcConfig" not in props  # Function URL streaming does not work inside a VPC


def test_stream_function_logs_as_json_to_its_own_log_group(synth: Synth) -> None:
    stream_id, function = synth.stream_function()
    logging = function["Properties"]["LoggingConfig"]
    assert logging["LogFormat"] == "JSON"
    assert logging["ApplicationLogLevel"] == "INFO"  # from logLevel
    group = synth.resources[logging["LogGroup"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Delete"
    assert logging["LogGroup"]["Ref"] not in {
        g["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for k, g in synth.functions().items()
        if k != stream_id
    }


def test_stream_function_gets_the_shared_settings(synth: Synth) -> None:
    _, function = synth.stream_function()
    env = function["Properties"]["Environment"]["Variables"]
    (pool_id,) = synth.of_type("AWS::Cognito::UserPool")
    (client_id,) = synth.of_type("AWS::Cognito::UserPoolClient")
    api_env = synth.resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env == {
        "STREAMS_TABLE": api_env["STREAMS_TABLE"],
        "FRAMES_TABLE": api_env["FRAMES_TABLE"],
        "MODEL_ID": MODEL_ID,
        "USER_POOL_ID": _ref(pool_id),
        "USER_POOL_CLIENT_ID": _ref(client_id),
        # For the REST API front door only (a proxy integration adds no CORS headers); the
        # handler never adds them for the Function URL, whose CORS config does.
        "CORS_ALLOW_ORIGIN": "none",
    }


def test_stream_function_asset_is_the_node_function_directory_without_tests(
    synth: Synth,
) -> None:
    _, function = synth.stream_function()
    key = function["Properties"]["Code"]["S3Key"]
    asset = synth.assembly_dir / f"asset.{key.removesuffix('.zip')}"
    assert (asset / "index.mjs").is_file()
    assert (asset / "package.json").is_file()
    assert (asset / "node_modules").is_dir() == (NODE_FUNCTION_DIR / "node_modules").is_dir()
    assert not (asset / "test").exists()
    assert not (asset / ".npmrc").exists()
    assert not list(asset.glob("**/*.test.mjs"))


@pytest.mark.security("infra")
def test_function_url_streams_with_cors_for_the_configured_origin_only(synth: Synth) -> None:
    stream_id, _ = synth.stream_function()
    _, url = _function_url(synth)
    props = url["Properties"]
    assert props["TargetFunctionArn"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    assert "Qualifier" not in props
    # NONE: Function URLs offer only AWS_IAM or NONE; the handler verifies the Cognito JWT.
    assert props["AuthType"] == "NONE"
    assert props["InvokeMode"] == "RESPONSE_STREAM"
    # Until the origins are set after the distribution exists, no origin is allowed.
    cors = props["Cors"]
    assert "AllowOrigins" not in cors
    _, call = _cors_update(synth)
    assert call["action"] == "updateFunctionUrlConfig" and call["service"] == "Lambda"
    assert call["parameters"]["FunctionName"] == f"<{stream_id}>"
    final = call["parameters"]["Cors"]
    # Exactly the distribution's own origin (no extra origins given), never "*".
    assert final["AllowOrigins"] == [_distribution_origin(synth)]
    for settings in (cors, final):
        assert sorted(settings["AllowMethods"]) == ["GET", "POST"]
        assert sorted(settings["AllowHeaders"]) == [
            "authorization",
            "content-type",
            "last-event-id",
        ]
        assert settings["MaxAge"] == 600
        assert settings.get("AllowCredentials", False) is False  # bearer tokens, no cookies


def _distribution_origin(synth: Synth) -> str:
    """The allowed browser origin: the stack's own CloudFront domain (flattened)."""
    (distribution_id,) = synth.of_type("AWS::CloudFront::Distribution")
    return f"https://<{distribution_id}.DomainName>"


def _cors_update(synth: Synth) -> tuple[str, dict[str, Any]]:
    """The custom resource that sets the Function URL's CORS origins, and its SDK call."""
    (found,) = synth.of_type("Custom::AWS").items()
    updater_id, resource = found
    props = resource["Properties"]
    assert props["Create"] == props["Update"]  # re-applied whenever its inputs change
    return updater_id, json.loads(flat(props["Create"]))


def test_function_url_cors_is_set_after_the_url_and_the_distribution_exist(synth: Synth) -> None:
    """The distribution's CSP names the URL, so the URL cannot name the distribution (a
    cycle): a custom resource updates its CORS once both exist, and again when the URL's own
    definition changes (which would reset its CORS): its physical id carries a fingerprint."""
    url_id, _ = _function_url(synth)
    updater_id, call = _cors_update(synth)
    assert url_id in _as_list(synth.resources[updater_id]["DependsOn"])
    assert re.fullmatch(r"function-url-cors-[0-9a-f]{16}", call["physicalResourceId"]["id"])
    # The provider may update exactly this function's URL configuration, nothing else.
    stream_id, _ = synth.stream_function()
    provider_id = synth.resources[updater_id]["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    role_id = _role_of(synth, provider_id)
    statements = _role_statements(synth, role_id)
    lambda_statements = [s for s in statements if str(s["Action"]).startswith("lambda:")]
    assert lambda_statements == [
        {
            "Action": "lambda:UpdateFunctionUrlConfig",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [stream_id, "Arn"]},
        }
    ]
    assert "ManagedPolicyArns" not in synth.resources[role_id]["Properties"]


def test_function_url_public_invoke_is_exactly_what_a_none_auth_url_needs(synth: Synth) -> None:
    """Since October 2025 a new function URL needs both lambda:InvokeFunctionUrl and
    lambda:InvokeFunction; the public InvokeFunction must work through the URL only."""
    stream_id, _ = synth.stream_function()
    permissions = [
        p["Properties"]
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if stream_id in _references(p["Properties"]["FunctionName"])
        # The REST API's streaming methods: tests/cdk/test_rest_stream.py.
        and p["Properties"]["Principal"] != "apigateway.amazonaws.com"
    ]
    function_arn = {"Fn::GetAtt": [stream_id, "Arn"]}
    assert sorted(permissions, key=lambda p: p["Action"]) == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": function_arn,
            "Principal": "*",
            "InvokedViaFunctionUrl": True,  # the lambda:InvokedViaFunctionUrl condition
        },
        {
            "Action": "lambda:InvokeFunctionUrl",
            "FunctionName": function_arn,
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
    ]
    # Nothing else may invoke it: no role of this stack, no other resource policy. (The CORS
    # updater may change its URL's CORS only: see the test above.)
    for statement in _statements(synth):
        for action in _as_list(statement["Action"]):
            if action.lower().startswith("lambda:") and action != "lambda:UpdateFunctionUrlConfig":
                assert stream_id not in _references(statement["Resource"]), statement


def test_stream_function_role_grants_tables_scoped_bedrock_and_its_logs_only(
    synth: Synth,
) -> None:
    stream_id, function = synth.stream_function()
    role_id = _role_of(synth, stream_id)
    assert synth.resources[role_id]["Type"] == "AWS::IAM::Role"
    assert role_id not in {_role_of(synth, fn) for fn in synth.functions() if fn != stream_id}
    role = synth.resources[role_id]["Properties"]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    tables = set(synth.of_type("AWS::DynamoDB::Table"))
    bedrock = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
    granted_tables: set[str] = set()
    for statement in _role_statements(synth, role_id):
        actions = set(_as_list(statement["Action"]))
        resources = _as_list(statement["Resource"])
        assert statement["Effect"] == "Allow"
        if all(a.startswith("dynamodb:") for a in actions):
            assert "dynamodb:*" not in actions
            refs = _references(resources)
            assert refs and refs <= tables, statement
            granted_tables |= refs
        elif all(a.startswith("bedrock:") for a in actions):
            assert actions == bedrock, statement
            for arn in map(flat, resources):
                assert arn.endswith(
                    (
                        f":inference-profile/{MODEL_ID}",
                        ":foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0",
                    )
                ), arn
        else:
            assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}, statement
            assert _references(resources) == {log_group_id}, statement
    assert granted_tables == tables
    assert bedrock <= _role_actions(synth, role_id)


def test_chalice_functions_publish_the_function_url(synth: Synth) -> None:
    url_id, _ = _function_url(synth)
    for logical_id, function in synth.of_type("AWS::Serverless::Function").items():
        env = function["Properties"]["Environment"]["Variables"]
        assert env["PUBLIC_FUNCTION_URL"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}, logical_id


def test_stream_function_depends_on_no_chalice_resource(synth: Synth) -> None:
    """The Chalice functions name the URL, so the streamer must not name them (a cycle)."""
    stream_id, _ = synth.stream_function()
    role_id = _role_of(synth, stream_id)
    chalice = set(synth.of_type("AWS::Serverless::Function")) | {
        k for k, v in synth.resources.items() if v["Type"].startswith("AWS::ApiGateway")
    }
    reachable: set[str] = set()
    todo = [stream_id]
    while todo:
        node = todo.pop()
        resource = synth.resources[node]
        deps = (
            _references(resource.get("Properties", {}))
            | set(_as_list(resource.get("DependsOn", [])))
        ) & set(synth.resources)
        todo += list(deps - reachable)
        reachable |= deps
    assert role_id in reachable
    assert reachable & chalice == set()


# -- AppSync + SQS (architecture 3) ---------------------------------------------------------


def _one(synth: Synth, cfn_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = synth.of_type(cfn_type).items()
    return found


def _api(synth: Synth) -> tuple[str, dict[str, Any]]:
    return _one(synth, "AWS::AppSync::GraphQLApi")


def _queues(synth: Synth) -> tuple[str, str]:
    """(work queue, DLQ) logical ids: the DLQ is the one the other redrives to."""
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == 2
    (work_id,) = [k for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    (dlq_id,) = set(queues) - {work_id}
    return work_id, dlq_id


def _env(synth: Synth, function_id: str) -> dict[str, Any]:
    return synth.resources[function_id]["Properties"]["Environment"]["Variables"]


def _schema_fields(type_name: str) -> set[str]:
    """Field names of a root type in schema.graphql (descriptions and comments skipped)."""
    text = (APPSYNC_DIR / "schema.graphql").read_text()
    (body,) = re.findall(rf"^type {type_name} \{{(.*?)^\}}", text, flags=re.S | re.M)
    return set(re.findall(r"^\s+(\w+)\s*[(:]", body, flags=re.M))


def test_graphql_api_takes_user_pool_tokens_of_the_app_client_and_iam(synth: Synth) -> None:
    (pool_id,) = synth.of_type("AWS::Cognito::UserPool")
    (client_id,) = synth.of_type("AWS::Cognito::UserPoolClient")
    _, api = _api(synth)
    props = api["Properties"]
    assert props["AuthenticationType"] == "AMAZON_COGNITO_USER_POOLS"
    pool_config = props["UserPoolConfig"]
    assert pool_config["UserPoolId"] == _ref(pool_id)
    assert pool_config["AwsRegion"] == SYNTH_REGION
    assert pool_config["DefaultAction"] == "ALLOW"
    # Anchored: tokens of this app client only, not of any client whose id contains it.
    assert flat(pool_config["AppIdClientRegex"]) == f"^<{client_id}>$"
    # IAM is the only other mode (the worker's publishFrames): no API key, no Lambda auth.
    assert props["AdditionalAuthenticationProviders"] == [{"AuthenticationType": "AWS_IAM"}]
    assert synth.of_type("AWS::AppSync::ApiKey") == {}


def test_graphql_schema_is_the_shared_schema_file(synth: Synth) -> None:
    api_id, _ = _api(synth)
    _, schema = _one(synth, "AWS::AppSync::GraphQLSchema")
    assert schema["Properties"]["ApiId"] == {"Fn::GetAtt": [api_id, "ApiId"]}
    assert schema["Properties"]["Definition"] == (APPSYNC_DIR / "schema.graphql").read_text()


@pytest.mark.security("infra")
def test_graphql_api_logs_errors_only_without_verbose_content(synth: Synth) -> None:
    """Verbose content (headers, resolver arguments and results) would put ID tokens, prompts
    and generated text in the logs."""
    api_id, api = _api(synth)
    log_config = api["Properties"]["LogConfig"]
    assert log_config["FieldLogLevel"] == "ERROR"
    assert log_config["ExcludeVerboseContent"] is True
    role_id = log_config["CloudWatchLogsRoleArn"]["Fn::GetAtt"][0]
    trust = synth.resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "appsync.amazonaws.com"}]
    # The log group AppSync writes to is the stack's, with retention like the others.
    (group_id,) = [
        k
        for k, g in synth.of_type("AWS::Logs::LogGroup").items()
        if flat(g["Properties"].get("LogGroupName")) == f"/aws/appsync/apis/<{api_id}.ApiId>"
    ]
    group = synth.resources[group_id]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Delete"
    for statement in _role_statements(synth, role_id):
        assert set(_as_list(statement["Action"])) <= {
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        }, statement
        assert _references(statement["Resource"]) & set(synth.resources) == {group_id}
    # No LogRetention custom resource (a Lambda with a managed policy on "*").
    assert not [r for r in synth.resources.values() if r["Type"] == "Custom::LogRetention"]


def test_every_root_field_has_its_appsync_js_resolver(synth: Synth) -> None:
    api_id, _ = _api(synth)
    resolvers = {
        (r["Properties"]["TypeName"], r["Properties"]["FieldName"]): r["Properties"]
        for r in synth.of_type("AWS::AppSync::Resolver").values()
    }
    assert set(resolvers) == set(APPSYNC_RESOLVERS)
    assert set(resolvers) == {
        (type_name, field)
        for type_name in ("Query", "Mutation", "Subscription")
        for field in _schema_fields(type_name)
    }
    (schema_id,) = synth.of_type("AWS::AppSync::GraphQLSchema")
    for resolver in synth.of_type("AWS::AppSync::Resolver").values():
        assert schema_id in _as_list(resolver["DependsOn"])  # the field must exist first
    for key, props in resolvers.items():
        source_kind, code_file = APPSYNC_RESOLVERS[key]
        assert props["ApiId"] == {"Fn::GetAtt": [api_id, "ApiId"]}
        assert props["Kind"] == "UNIT", key
        assert props["Runtime"] == {"Name": "APPSYNC_JS", "RuntimeVersion": "1.0.0"}, key
        source_id, attribute = props["DataSourceName"]["Fn::GetAtt"]
        assert attribute == "Name"
        source = synth.resources[source_id]["Properties"]
        assert source["Type"] == source_kind, key
        assert source["ApiId"] == {"Fn::GetAtt": [api_id, "ApiId"]}
        # The code is the file itself, as an asset (no inline copy to drift from it).
        assert "Code" not in props
        location = props["CodeS3Location"]["Fn::Sub"]
        asset = synth.assembly_dir / f"asset.{location.rsplit('/', 1)[1]}"
        assert asset.read_text() == (APPSYNC_DIR / code_file).read_text(), key


def test_lambda_data_source_may_invoke_exactly_the_resolver_function(synth: Synth) -> None:
    (source_id,) = [
        k
        for k, s in synth.of_type("AWS::AppSync::DataSource").items()
        if s["Properties"]["Type"] == "AWS_LAMBDA"
    ]
    source = synth.resources[source_id]
    props = source["Properties"]
    resolver_arn = {"Fn::GetAtt": ["AppsyncResolver", "Arn"]}
    assert props["LambdaConfig"] == {"LambdaFunctionArn": resolver_arn}
    assert synth.resources["AppsyncResolver"]["Properties"]["Handler"] == "app.appsync_resolver"
    role_id = props["ServiceRoleArn"]["Fn::GetAtt"][0]
    trust = synth.resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "appsync.amazonaws.com"}]
    statements = _role_statements(synth, role_id)
    # The unqualified function only: no ":*" (versions and aliases), nothing else.
    assert statements == [
        {"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": resolver_arn}
    ]
    assert _invoke_grants(synth)[role_id] == {"<AppsyncResolver.Arn>"}
    # AppSync may invoke as soon as the data source exists.
    (policy_id,) = [
        k
        for k, p in synth.of_type("AWS::IAM::Policy").items()
        if p["Properties"]["Roles"] == [_ref(role_id)]
    ]
    assert policy_id in _as_list(source["DependsOn"])
    # Nothing but this data source role, the message handler (the generator) and the
    # generator (its on-failure destination) invokes.
    assert set(_invoke_grants(synth)) == {
        role_id,
        _role_of(synth, "WebsocketMessage"),
        _role_of(synth, "WsGenerate"),
    }


def test_work_queue_redrives_to_the_dlq_and_outlasts_the_worker(synth: Synth) -> None:
    work_id, dlq_id = _queues(synth)
    work = synth.resources[work_id]["Properties"]
    worker_timeout = synth.resources["AppsyncWorker"]["Properties"]["Timeout"]
    assert worker_timeout == WORKER_TIMEOUT_S
    # Lambda's guidance for SQS event sources: at least 6x the function timeout.
    assert work["VisibilityTimeout"] == 6 * worker_timeout
    assert work["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": WORKER_MAX_RECEIVE_COUNT,
    }
    dlq = synth.resources[dlq_id]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600  # SQS's maximum
    # Standard queues keep the enqueue time on redrive: the DLQ must keep messages longer.
    assert dlq["MessageRetentionPeriod"] > work.get("MessageRetentionPeriod", 4 * 24 * 3600)
    assert "RedrivePolicy" not in dlq
    assert "FifoQueue" not in work and "FifoQueue" not in dlq


@pytest.mark.parametrize("which", ["work", "dlq"])
def test_queues_are_encrypted_and_refuse_plain_http(synth: Synth, which: str) -> None:
    work_id, dlq_id = _queues(synth)
    queue_id = work_id if which == "work" else dlq_id
    assert synth.resources[queue_id]["Properties"]["SqsManagedSseEnabled"] is True
    (policy,) = [
        p["Properties"]
        for p in synth.of_type("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [_ref(queue_id)]
    ]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Action": "sqs:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
        }
    ]


def test_dlq_alarm_fires_on_the_first_message(synth: Synth) -> None:
    _, dlq_id = _queues(synth)
    alarm_id, alarm = _one(synth, "AWS::CloudWatch::Alarm")
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert props["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}
    ]
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["EvaluationPeriods"] == 1
    assert props["Statistic"] == "Maximum"
    assert props["TreatMissingData"] == "notBreaching"  # an idle, empty DLQ has no datapoints
    assert synth.outputs["WorkDeadLetterQueueAlarmName"]["Value"] == _ref(alarm_id)


def test_worker_event_source_is_the_stack_queue_with_partial_batch_failures(synth: Synth) -> None:
    work_id, _ = _queues(synth)
    worker = synth.resources["AppsyncWorker"]["Properties"]
    assert worker["Handler"] == "app.appsync_worker"
    assert worker["MemorySize"] == 512
    event = worker["Events"]["AppsyncWorkerSqsEventSource"]
    assert list(worker["Events"]) == ["AppsyncWorkerSqsEventSource"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    # Explicit, not the decorator's value from a possibly cached app import.
    assert props["Queue"] == {"Fn::GetAtt": [work_id, "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == WORKER_BATCH_SIZE
    assert props.get("MaximumBatchingWindowInSeconds", 0) == 0  # a stream starts at once
    assert 2 <= props["ScalingConfig"]["MaximumConcurrency"] <= 1000  # Lambda's bounds
    # The settings' placeholder queue ARN appears nowhere in the template.
    assert "123456789012" not in json.dumps(synth.resources)
    others = [
        k
        for k, f in synth.of_type("AWS::Serverless::Function").items()
        if k != "AppsyncWorker" and f["Properties"].get("Events")
    ]
    assert others == []


def test_appsync_settings_reach_every_python_function(synth: Synth) -> None:
    from chalicelib.settings import Settings

    api_id, _ = _api(synth)
    work_id, _ = _queues(synth)
    for logical_id in synth.of_type("AWS::Serverless::Function"):
        env = _env(synth, logical_id)
        assert env["WORK_QUEUE_URL"] == _ref(work_id), logical_id
        assert env["WORK_QUEUE_ARN"] == {"Fn::GetAtt": [work_id, "Arn"]}, logical_id
        assert env["APPSYNC_GRAPHQL_URL"] == {"Fn::GetAtt": [api_id, "GraphQLUrl"]}
        assert env["PUBLIC_APPSYNC_GRAPHQL_URL"] == env["APPSYNC_GRAPHQL_URL"]
        # wss://<id>.appsync-realtime-api.<region>.amazonaws.com/graphql
        assert env["PUBLIC_APPSYNC_REALTIME_URL"] == {"Fn::GetAtt": [api_id, "RealtimeUrl"]}
        numbers = {
            k: env[k] for k in ("WORKER_BATCH_SIZE", "WORKER_TIMEOUT_S", "WORKER_MAX_RECEIVE_COUNT")
        }
        # The names and values are the ones chalicelib reads, and match the resources.
        # (The user pool settings are the stack's tokens here; any values do for this check.)
        settings = Settings.from_env({**numbers, "USER_POOL_ID": "p", "USER_POOL_CLIENT_ID": "c"})
        assert settings.worker_batch_size == WORKER_BATCH_SIZE
        assert (
            settings.worker_timeout_s == synth.resources["AppsyncWorker"]["Properties"]["Timeout"]
        )
        redrive = synth.resources[work_id]["Properties"]["RedrivePolicy"]
        assert settings.worker_max_receive_count == redrive["maxReceiveCount"]


def _grants(synth: Synth, prefix: str) -> dict[str, set[str]]:
    """Function logical id -> the (flattened) resources its role may use with actions of
    ``prefix`` (such as "sqs:")."""
    found: dict[str, set[str]] = {}
    for function_id in synth.functions():
        for statement in _role_statements(synth, _role_of(synth, function_id)):
            if any(a.startswith(prefix) for a in _as_list(statement["Action"])):
                found.setdefault(function_id, set()).update(
                    flat(r) for r in _as_list(statement["Resource"])
                )
    return found


def test_only_the_resolver_sends_and_only_the_worker_consumes(synth: Synth) -> None:
    work_id, _ = _queues(synth)
    queue_arn = f"<{work_id}.Arn>"
    assert _grants(synth, "sqs:") == {"AppsyncResolver": {queue_arn}, "AppsyncWorker": {queue_arn}}
    sqs_actions = {
        fn: {a for a in _role_actions(synth, _role_of(synth, fn)) if a.startswith("sqs:")}
        for fn in ("AppsyncResolver", "AppsyncWorker")
    }
    assert sqs_actions == {
        "AppsyncResolver": {"sqs:SendMessage"},
        "AppsyncWorker": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
        },
    }


def test_only_the_worker_may_call_appsync_and_only_publish_frames(synth: Synth) -> None:
    api_id, _ = _api(synth)
    assert _grants(synth, "appsync:") == {
        "AppsyncWorker": {
            f"arn:<AWS::Partition>:appsync:{SYNTH_REGION}:<AWS::AccountId>:apis/"
            f"<{api_id}.ApiId>/types/Mutation/fields/publishFrames"
        }
    }
    assert {
        a
        for a in _role_actions(synth, _role_of(synth, "AppsyncWorker"))
        if a.startswith("appsync:")
    } == {"appsync:GraphQL"}


def test_no_policy_grants_sqs_or_appsync_on_wildcards(synth: Synth) -> None:
    for statement in _statements(synth):
        actions = _as_list(statement["Action"])
        if not any(a.startswith(("sqs:", "appsync:")) for a in actions):
            continue
        assert not any(a.endswith("*") for a in actions), statement
        for resource in map(flat, _as_list(statement["Resource"])):
            assert "*" not in resource, statement


def test_appsync_functions_have_roles_of_their_own(synth: Synth) -> None:
    roles = {fn: _role_of(synth, fn) for fn in synth.functions()}
    for fn in ("AppsyncResolver", "AppsyncWorker"):
        assert [f for f, r in roles.items() if r == roles[fn]] == [fn]
    tables = set(synth.of_type("AWS::DynamoDB::Table"))
    resolver_actions = _role_actions(synth, roles["AppsyncResolver"])
    assert not [a for a in resolver_actions if a.startswith(("bedrock:", "appsync:", "lambda:"))]
    for fn in ("AppsyncResolver", "AppsyncWorker"):
        dynamodb = {
            ref
            for s in _role_statements(synth, roles[fn])
            if all(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
            for ref in _references(s["Resource"])
        }
        assert dynamodb == tables, fn


# -- outputs, cdk-nag, hygiene ---------------------------------------------------------------


def test_outputs(synth: Synth) -> None:
    assert {
        "RestApiUrl",
        "UserPoolId",
        "UserPoolClientId",
        "Region",
        "WebsocketUrl",
        "FunctionUrl",
    } <= set(synth.outputs)
    url = synth.outputs["RestApiUrl"]["Value"]["Fn::Sub"]
    assert "${RestAPI}" in url and url.endswith("/api/")
    assert flat(synth.outputs["WebsocketUrl"]["Value"]) == f"wss://{WS_HOST}/{STAGE}"
    url_id, _ = _function_url(synth)
    assert synth.outputs["FunctionUrl"]["Value"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}
    api_id, _ = _api(synth)
    work_id, dlq_id = _queues(synth)
    (alarm_id,) = synth.of_type("AWS::CloudWatch::Alarm")
    assert {
        k: synth.outputs[k]["Value"] for k in synth.outputs if k.startswith(("Appsync", "Work"))
    } == {
        "AppsyncGraphqlUrl": {"Fn::GetAtt": [api_id, "GraphQLUrl"]},
        "AppsyncRealtimeUrl": {"Fn::GetAtt": [api_id, "RealtimeUrl"]},
        "AppsyncApiId": {"Fn::GetAtt": [api_id, "ApiId"]},
        "WorkQueueUrl": _ref(work_id),
        "WorkDeadLetterQueueUrl": _ref(dlq_id),
        "WorkDeadLetterQueueAlarmName": _ref(alarm_id),
    }


def test_template_has_no_dependency_cycle(synth: Synth) -> None:
    """CloudFormation rejects a cyclic template only at deploy time; synth does not notice.
    (Such as the generator's own name in its environment, or a role that may invoke the
    function it belongs to.)"""
    graph = {
        logical_id: (
            _references(resource.get("Properties", {}))
            | set(_as_list(resource.get("DependsOn", [])))
        )
        & set(synth.resources)
        for logical_id, resource in synth.resources.items()
    }
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps <= done}
        assert ready, f"cycle among {sorted(set(graph) - done)}"
        done |= ready


def test_cdk_nag_aws_solutions_has_no_unacknowledged_errors(synth: Synth) -> None:
    errors = [
        (v.rule_name, [r.construct_path for r in v.violating_resources])
        for v in synth.nag_report.violations
        if v.severity == "error" and v.rule_name.startswith("AwsSolutions-")
    ]
    assert errors == []


def test_cdk_nag_has_no_unacknowledged_findings_at_all(synth: Synth) -> None:
    """cdk-nag 3 runs as a CDK validation plugin: any finding, a warning too, fails
    ``cdk synth``, so warnings must be fixed or acknowledged as well."""
    findings = [(v.severity, v.rule_name) for v in synth.nag_report.violations]
    assert findings == []
    assert synth.nag_report.success is True


# CDK's BucketDeployment grants its upload function s3 actions by prefix (the client upload).
UPLOAD_ROLE_ACTIONS = {
    "s3:GetObject*",
    "s3:GetBucket*",
    "s3:List*",
    "s3:DeleteObject*",
    "s3:Abort*",
}


def _acknowledged_paths(synth: Synth) -> dict[str, set[str]]:
    """Rule -> construct paths that acknowledge it."""
    import aws_cdk as cdk

    found: dict[str, set[str]] = {}
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY and entry.data:
                for rule in entry.data:
                    key = re.sub(r"^annotation::", "", rule, flags=re.I)
                    found.setdefault(key, set()).add(construct.node.path)
    return found


def test_cdk_nag_acknowledgements_are_specific_and_explained(synth: Synth) -> None:
    (bucket_id,) = synth.of_type("AWS::S3::Bucket")
    assert set(synth.acknowledgements) == {
        "AwsSolutions-COG2",
        "AwsSolutions-COG8",  # Cognito Essentials by default: Plus is billed per user
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/"
        "anthropic.claude-sonnet-4-5-20250929-v1:0]",
        f"AwsSolutions-IAM5[Resource::{CONNECTIONS_ARN}]",
        "AwsSolutions-APIG4",  # $default and $disconnect: WebSocket authorizers are $connect-only
        "AwsSolutions-ASC3",  # AppSync verbose content would log tokens and prompts
        # The Region's API Gateway logging role writes log groups API Gateway names.
        f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:{SYNTH_REGION}:"
        "<AWS::AccountId>:log-group:*]",
        # The hosted client: its private bucket and the distribution on CloudFront's domain.
        "AwsSolutions-S1",
        "AwsSolutions-CFR1",
        "AwsSolutions-CFR2",
        "AwsSolutions-CFR3",
        "AwsSolutions-CFR4",
        # aws-cdk-lib's BucketDeployment: its runtime and its s3 grants.
        "AwsSolutions-L1",
        *(f"AwsSolutions-IAM5[Action::{a}]" for a in UPLOAD_ROLE_ACTIONS),
        f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-"
        f"<AWS::AccountId>-{SYNTH_REGION}/*]",
    }
    paths = _acknowledged_paths(synth)
    upload_role = synth.stack.hosting.deployment_role.node.path
    for rule, reason in synth.acknowledgements.items():
        assert rule.startswith("AwsSolutions-"), rule
        if rule.startswith("AwsSolutions-IAM5"):
            assert "[" in rule, "IAM5 must name the one finding it acknowledges"
            assert "Resource::*]" not in rule
            if "Action::" in rule or "s3:::" in rule or bucket_id in rule:
                # Wildcard actions only for CDK's upload function, on its own role.
                assert paths[rule] == {upload_role}, rule
        assert len(reason) >= 80, rule
    # The L1 finding is CDK's upload function only.
    assert [p.rsplit("/", 1)[-1] for p in paths["AwsSolutions-L1"]] == [
        "Custom::CDKBucketDeployment8693BB64968944B69AAFB0CC9EB8756C"
    ]


def test_asc3_is_acknowledged_on_the_graphql_api_only(synth: Synth) -> None:
    import aws_cdk as cdk

    paths = {
        construct.node.path
        for construct in synth.stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        and any(
            re.sub(r"^annotation::", "", r, flags=re.I) == "AwsSolutions-ASC3" for r in entry.data
        )
    }
    assert paths == {synth.stack.graphql.api.node.path}


def test_stream_function_acknowledgements_are_only_the_bedrock_region_wildcard(
    synth: Synth,
) -> None:
    """The streamer's role shares the generator's one Bedrock finding; the Function URL's
    auth NONE needs none (AwsSolutions has no Function URL auth rule; the handler verifies
    the JWT)."""
    import aws_cdk as cdk

    acknowledged: set[str] = set()
    for construct in [
        synth.stack.function_url.role,
        *synth.stack.function_url.role.node.find_all(),
    ]:
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY and entry.data:
                acknowledged |= {re.sub(r"^annotation::", "", r, flags=re.I) for r in entry.data}
    assert acknowledged == {
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/"
        "anthropic.claude-sonnet-4-5-20250929-v1:0]"
    }
    function = synth.stack.function_url.function
    for construct in [function, *function.node.find_all()]:
        assert not [
            e
            for e in construct.node.metadata
            if e.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        ], construct.node.path


def test_synth_leaves_process_state_as_it_found_it(synth: Synth) -> None:
    assert synth.leaked_env == {}
    assert synth.app_module_after is synth.app_module_before


# -- props (no synth) -----------------------------------------------------------------------


@pytest.mark.security("infra")
@pytest.mark.parametrize(
    "origin", ["*", "https://example.com/", "https://example.com/app", "example.com", ""]
)
def test_extra_allowed_origins_must_be_origins(stacks: ModuleType, origin: str) -> None:
    with pytest.raises(ValueError, match="extraAllowedOrigins"):
        stacks.props.LlmStreamProps(extra_allowed_origins=(origin,))


def test_at_most_one_extra_origin_since_rest_cors_answers_one(stacks: ModuleType) -> None:
    props = stacks.props.LlmStreamProps(extra_allowed_origins=("http://localhost:5173",))
    assert props.extra_allowed_origins == ("http://localhost:5173",)
    with pytest.raises(ValueError, match="at most one"):
        stacks.props.LlmStreamProps(
            extra_allowed_origins=("http://localhost:5173", "https://example.com")
        )


@pytest.mark.security("infra")
def test_model_id_rejects_wildcards(stacks: ModuleType) -> None:
    with pytest.raises(ValueError, match="modelId"):
        stacks.props.LlmStreamProps(model_id="anthropic.*")


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ("us", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ),
        (
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ("global", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ),
        (
            "anthropic.claude-3-haiku-20240307-v1:0",
            (None, "anthropic.claude-3-haiku-20240307-v1:0"),
        ),
        ("amazon.nova-pro-v1:0", (None, "amazon.nova-pro-v1:0")),
    ],
)
def test_split_inference_profile(
    stacks: ModuleType, model_id: str, expected: tuple[str | None, str]
) -> None:
    assert stacks.bedrock.split_inference_profile(model_id) == expected


def test_nag_text_names_intrinsics_as_cdk_nag_does(stacks: ModuleType) -> None:
    """With a concrete Region (``cdk synth`` sets one) the Region is literal in the ARN and in
    cdk-nag's finding id; the acknowledgement is built from the resolved ARN to match both."""
    arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":execute-api:us-east-1:",
                {"Ref": "AWS::AccountId"},
                ":",
                {"Ref": "WebsocketAPI"},
                "/api/POST/@connections/*",
            ],
        ]
    }
    assert stacks.nag.nag_text(arn) == (
        "arn:<AWS::Partition>:execute-api:us-east-1:<AWS::AccountId>:<WebsocketAPI>"
        "/api/POST/@connections/*"
    )
    assert stacks.nag.nag_text({"Fn::GetAtt": ["WsGenerate", "Arn"]}) == "<WsGenerate.Arn>"
    with pytest.raises(ValueError):
        stacks.nag.nag_text({"Fn::Sub": "${X}"})


def test_stream_reserved_concurrency_must_be_positive_or_none(stacks: ModuleType) -> None:
    with pytest.raises(ValueError, match="streamReservedConcurrency"):
        stacks.props.LlmStreamProps(stream_reserved_concurrency=0)
    assert stacks.props.LlmStreamProps(stream_reserved_concurrency=None)


def test_node_function_dir_needs_the_handler(stacks: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"index\.mjs"):
        stacks.function_url.check_node_function_dir(tmp_path, require_dependencies=False)


def test_node_function_dir_needs_installed_dependencies_for_deploys(
    stacks: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "index.mjs").write_text("export const handler = () => {};\n")
    (tmp_path / "package.json").write_text(
        json.dumps({"dependencies": {"aws-jwt-verify": "5.2.1", "@aws-sdk/client-dynamodb": "3"}})
    )
    check = stacks.function_url.check_node_function_dir
    assert check(tmp_path, require_dependencies=False) == tmp_path.resolve()
    with pytest.raises(RuntimeError, match=r"@aws-sdk/client-dynamodb, aws-jwt-verify.*npm ci"):
        check(tmp_path, require_dependencies=True)
    for name in ("aws-jwt-verify", "@aws-sdk/client-dynamodb"):
        package = tmp_path / "node_modules" / name
        package.mkdir(parents=True)
        (package / "package.json").write_text("{}")
    assert check(tmp_path, require_dependencies=True) == tmp_path.resolve()


# -- the fault and security suite's infrastructure checks (tests/security, case 8) ----------
# Tagged with the existing checks above that prove the rest of case 8 (Bedrock scoped to
# the model and its inference profile, ManageConnections on this API only, the Function
# URL's CORS origin, log retention on every function).


def _bedrock_action(action: str) -> bool:
    return action.lower().startswith("bedrock:") or action.strip() == "*"


@pytest.mark.security("infra")
def test_no_policy_in_any_form_grants_bedrock_broadly(synth: Synth) -> None:
    """Beyond the statements' literal actions: no wildcard Bedrock action (``bedrock:*``,
    ``bedrock:Invoke*``), no NotAction/NotResource (which grant everything not listed), no
    Bedrock grant on anything but the model and its inference profile, and no managed
    policies (an AWS managed policy would be outside these checks)."""
    for role_id, role in synth.of_type("AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], role_id
    assert synth.of_type("AWS::IAM::ManagedPolicy") == {}
    bedrock_grants = 0
    for statement in _statements(synth):
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        actions = [a for a in _as_list(statement["Action"]) if _bedrock_action(a)]
        if not actions:
            continue
        bedrock_grants += 1
        assert statement["Effect"] == "Allow"
        assert not any("*" in a for a in actions), statement
        for arn in map(flat, _as_list(statement["Resource"])):
            # Exactly the configured inference profile, or the model it routes to.
            assert arn.endswith(
                (
                    f":inference-profile/{MODEL_ID}",
                    f":foundation-model/{MODEL_ID.split('.', 1)[1]}",
                )
            ), arn
    assert bedrock_grants == 6  # model + profile, for each of the three producers


@pytest.mark.security("infra")
def test_no_cors_setting_anywhere_allows_any_origin(synth: Synth) -> None:
    """Every place a browser origin is allowed: the Function URL (its template and the
    custom resource that sets its origins), the REST API's preflights and every function's
    CORS_ALLOW_ORIGIN (which app.py answers with; "none" turns CORS off)."""
    origins: list[Any] = list(_cors_update(synth)[1]["parameters"]["Cors"]["AllowOrigins"])
    for resource in synth.resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Url":
            origins += props.get("Cors", {}).get("AllowOrigins", [])
        if resource["Type"] == "AWS::ApiGatewayV2::Api":
            origins += props.get("CorsConfiguration", {}).get("AllowOrigins", [])
        variables = props.get("Environment", {}).get("Variables", {})
        if "CORS_ALLOW_ORIGIN" in variables:
            origins.append(variables["CORS_ALLOW_ORIGIN"])
    body = json.dumps(synth.resources["RestAPI"]["Properties"]["DefinitionBody"])
    origins += [o.strip("'") for o in re.findall(r'Access-Control-Allow-Origin": "([^"]*)"', body)]
    assert len(origins) > len(synth.of_type("AWS::Serverless::Function"))
    assert set(origins) == {_distribution_origin(synth), "none"}


@pytest.mark.security("infra")
def test_every_log_group_expires(synth: Synth) -> None:
    """Each function's and the GraphQL API's log group is the stack's own, with retention:
    none is left for Lambda or AppSync to create without one."""
    groups = synth.of_type("AWS::Logs::LogGroup")
    # + the GraphQL API's and the REST and WebSocket stages' access logs.
    assert len(groups) == len(synth.functions()) + 3
    for group_id, group in groups.items():
        assert group["Properties"]["RetentionInDays"] > 0, group_id
    for function_id, function in synth.functions().items():
        ref = function["Properties"]["LoggingConfig"].get("LogGroup")
        assert ref is not None and ref["Ref"] in groups, function_id
