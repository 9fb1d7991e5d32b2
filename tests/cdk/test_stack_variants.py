"""The stack's variants, against a second synth (of a copy of the project) that differs from
the default one in every optional part:

* the WebSocket generator's on-failure destination, wired when the Chalice app has
  ``ws_generate_failed`` (logical id WsGenerateFailed, as app.py does: the default synth), and
  absent when it has not (the copy here drops it): a crashed generator (async invoke, no
  retries) is then ended promptly with an error frame, not only after its lease lapses;
* an extra allowed origin (``-c extraAllowedOrigins=...``), which turns the REST API's CORS on
  for that origin and adds it to the Function URL's;
* an account that already has API Gateway's CloudWatch Logs role
  (``-c apiGatewayLogsRole=existing``);
* a WAF web ACL on the REST API's stage (``-c restWebAclArn=...``).
"""

from __future__ import annotations

import json
import re
import shutil
from types import ModuleType
from typing import Any

import pytest

from tests.cdk.conftest import synthesize
from tests.cdk.synth_support import REPO_ROOT, SYNTH_REGION, Synth, flat

pytestmark = pytest.mark.cdk

FAILED = "WsGenerateFailed"
EXTRA_ORIGIN = "http://localhost:5173"
WEB_ACL_ARN = (
    f"arn:aws:wafv2:{SYNTH_REGION}:123456789012:regional/webacl/llm-stream/"
    "a1b2c3d4-5678-90ab-cdef-0123456789ab"
)
CONNECTIONS_ARN = (
    f"arn:<AWS::Partition>:execute-api:{SYNTH_REGION}:<AWS::AccountId>:<WebsocketAPI>"
    "/api/POST/@connections/*"
)
# app.py's on-failure destination, from its decorator to the next blank-line gap.
FAILURE_HANDLER = re.compile(
    r'\n@app\.lambda_function\(name="ws_generate_failed"\)\n.*?\n\n\n', re.DOTALL
)


def _role_of(synth: Synth, function_id: str) -> str:
    return synth.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def _grants(synth: Synth, role_id: str) -> dict[str, set[str]]:
    """Action -> flattened resources, over the role's policies."""
    found: dict[str, set[str]] = {}
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in actions if isinstance(actions, list) else [actions]:
                found.setdefault(action, set()).update(
                    flat(r) for r in (resources if isinstance(resources, list) else [resources])
                )
    return found


@pytest.fixture(scope="module")
def variant(
    stack_module: ModuleType, stacks: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Synth:
    project = tmp_path_factory.mktemp("project-without-failure-handler")
    for name in ("app.py", "requirements.txt"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(REPO_ROOT / "chalicelib", project / "chalicelib")
    # The packaged dependencies Chalice cached: no second download.
    shutil.copytree(REPO_ROOT / ".chalice", project / ".chalice")
    app_py = (project / "app.py").read_text()
    without, dropped = FAILURE_HANDLER.subn("\n\n", app_py)
    assert dropped == 1, "app.py no longer declares ws_generate_failed as expected"
    (project / "app.py").write_text(without)
    workdir = tmp_path_factory.mktemp("cdk-synth-variant")
    return synthesize(
        stack_module,
        workdir,
        source_dir=project,
        node_function_dir=REPO_ROOT / "node_function",
        props=stacks.props.LlmStreamProps(
            extra_allowed_origins=(EXTRA_ORIGIN,),
            api_gateway_logs_role="existing",
            rest_web_acl_arn=WEB_ACL_ARN,
        ),
    )


def test_without_the_handler_there_is_no_failure_destination(variant: Synth) -> None:
    synth = variant
    assert FAILED not in synth.resources
    (config,) = synth.of_type("AWS::Lambda::EventInvokeConfig").values()
    assert "DestinationConfig" not in config["Properties"]
    assert "lambda:InvokeFunction" not in _grants(synth, _role_of(synth, "WsGenerate"))


def test_the_handler_is_the_generators_on_failure_destination(synth: Synth) -> None:
    assert synth.resources[FAILED]["Properties"]["Handler"] == "app.ws_generate_failed"
    (config,) = synth.of_type("AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": "WsGenerate"}
    assert props["MaximumRetryAttempts"] == 0
    assert props["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": [FAILED, "Arn"]}}
    }
    # Lambda invokes the destination with the generator's role: exactly that function.
    generator_grants = _grants(synth, _role_of(synth, "WsGenerate"))
    assert generator_grants["lambda:InvokeFunction"] == {f"<{FAILED}.Arn>"}
    # The permission exists before the config that needs it.
    policies = [
        k
        for k, p in synth.of_type("AWS::IAM::Policy").items()
        if {"Ref": _role_of(synth, "WsGenerate")} in p["Properties"]["Roles"]
    ]
    assert set(policies) <= set(config["DependsOn"])


def test_the_handler_may_use_the_store_and_post_like_the_message_handler(synth: Synth) -> None:
    role_id = _role_of(synth, FAILED)
    others = {_role_of(synth, f) for f in synth.of_type("AWS::Serverless::Function") if f != FAILED}
    assert role_id not in others  # a role of its own
    grants = _grants(synth, role_id)
    message = _grants(synth, _role_of(synth, "WebsocketMessage"))
    assert grants["execute-api:ManageConnections"] == {CONNECTIONS_ARN}
    tables = set(synth.of_type("AWS::DynamoDB::Table"))
    dynamodb = {a: r for a, r in grants.items() if a.startswith("dynamodb:")}
    assert dynamodb == {a: r for a, r in message.items() if a.startswith("dynamodb:")}
    assert {t for r in dynamodb.values() for t in tables if any(t in x for x in r)} == tables
    # Nothing a producer or invoker has: no model, no Lambda invoke.
    assert not [a for a in grants if a.startswith(("bedrock:", "lambda:"))]
    log_group = synth.resources[FAILED]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert synth.resources[log_group]["Properties"]["RetentionInDays"] == 30


def test_the_variant_stack_stays_clean_and_acyclic(variant: Synth) -> None:
    synth = variant
    assert [(v.severity, v.rule_name) for v in synth.nag_report.violations] == []
    graph = {
        k: {
            ref
            for ref in synth.resources
            if f'"{ref}"' in json.dumps(v.get("Properties", {}))
            or ref in (v.get("DependsOn") or [])
        }
        for k, v in synth.resources.items()
    }
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps - {n} <= done}
        assert ready, f"cycle among {sorted(set(graph) - done)}"
        done |= ready


def test_an_extra_origin_gets_rest_and_function_url_cors(variant: Synth) -> None:
    synth = variant
    for function_id in synth.of_type("AWS::Serverless::Function"):
        env = synth.resources[function_id]["Properties"]["Environment"]["Variables"]
        assert env["CORS_ALLOW_ORIGIN"] == EXTRA_ORIGIN, function_id
    body = json.dumps(synth.resources["RestAPI"]["Properties"]["DefinitionBody"])
    assert set(re.findall(r'Access-Control-Allow-Origin": "([^"]*)"', body)) == {
        f"'{EXTRA_ORIGIN}'"
    }
    (updater,) = synth.of_type("Custom::AWS").values()
    call = json.loads(flat(updater["Properties"]["Create"]))
    (distribution_id,) = synth.of_type("AWS::CloudFront::Distribution")
    assert call["parameters"]["Cors"]["AllowOrigins"] == [
        f"https://<{distribution_id}.DomainName>",
        EXTRA_ORIGIN,
    ]


def test_an_existing_logging_role_is_left_alone(variant: Synth) -> None:
    synth = variant
    assert synth.of_type("AWS::ApiGateway::Account") == {}
    assert "DependsOn" not in synth.resources["RestAPI"]
    (stage,) = synth.of_type("AWS::ApiGatewayV2::Stage").values()
    assert "AccessLogSettings" in stage["Properties"]  # still logged, with the account's role
    assert "AccessLogSetting" in synth.resources["RestAPI"]["Properties"]


def test_a_web_acl_is_associated_with_the_rest_stage_only_when_asked(
    synth: Synth, variant: Synth
) -> None:
    assert not synth.of_type("AWS::WAFv2::WebACLAssociation")
    (association,) = variant.of_type("AWS::WAFv2::WebACLAssociation").values()
    props = association["Properties"]
    assert props["WebACLArn"] == WEB_ACL_ARN
    assert flat(props["ResourceArn"]) == (
        "arn:<AWS::Partition>:apigateway:<AWS::Region>::/restapis/<RestAPI>/stages/<RestAPI.Stage>"
    )


def test_the_rest_streaming_function_answers_cors_for_the_extra_origin_only(
    synth: Synth, variant: Synth
) -> None:
    def origin(s: Synth) -> str:
        (streamer,) = [
            f for f in s.of_type("AWS::Lambda::Function") if f.startswith("StreamerFunction")
        ]
        return s.resources[streamer]["Properties"]["Environment"]["Variables"]["CORS_ALLOW_ORIGIN"]

    assert origin(synth) == "none"
    assert origin(variant) == EXTRA_ORIGIN


def test_rest_streaming_preflights_exist_only_with_cors_and_allow_last_event_id(
    synth: Synth, variant: Synth
) -> None:
    def paths(s: Synth) -> dict[str, Any]:
        return s.resources["RestAPI"]["Properties"]["DefinitionBody"]["paths"]

    assert "options" not in paths(synth)["/streams"]
    for path, method in [("/streams", "POST"), ("/streams/{stream_id}/events", "GET")]:
        mock = paths(variant)[path]["options"]["x-amazon-apigateway-integration"]
        assert mock["type"] == "mock"
        params = mock["responses"]["default"]["responseParameters"]
        assert params["method.response.header.Access-Control-Allow-Origin"] == f"'{EXTRA_ORIGIN}'"
        assert params["method.response.header.Access-Control-Allow-Methods"] == (
            f"'{method},OPTIONS'"
        )
        assert "Last-Event-ID" in params["method.response.header.Access-Control-Allow-Headers"]
