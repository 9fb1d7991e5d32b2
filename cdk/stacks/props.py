"""What a deployer may choose (CDK context, ``-c name=value``), checked at synth."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from chalicelib.protocol import DEFAULT_MODEL_ID

SERVICE_NAME = "llm-stream"
# The Chalice stage, and so the first path segment of the REST and WebSocket URLs.
API_STAGE = "api"
DEFAULT_LOG_LEVEL = "INFO"

# The model, without its inference-profile prefix. Written once, as the MODEL_ID setting's
# default in chalicelib/protocol.json (the runtimes' default, a `us.` profile).
BASE_MODEL_ID = DEFAULT_MODEL_ID.partition(".")[2]
# Cross-Region inference profile prefix by deployment Region. A profile only serves requests
# made from its own geography, so a `us.` id deployed in eu-west-1 fails on the first stream.
_REGION_PROFILE_PREFIXES = (
    (re.compile(r"^us-(east|west)-\d+$"), "us"),
    (re.compile(r"^ca-[a-z]+-\d+$"), "us"),
    (re.compile(r"^eu-[a-z]+-\d+$"), "eu"),
    (re.compile(r"^ap-[a-z]+-\d+$"), "apac"),
)

_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_WEB_ACL_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:[0-9]{12}:regional/webacl/[A-Za-z0-9_-]+/[a-f0-9-]+$"
)
_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# Lambda keeps at least this many of the account's concurrent executions unreserved: a
# reservation that would leave fewer fails (PutFunctionConcurrency), and accounts still at the
# new-account quota have no room for any.
LAMBDA_MIN_UNRESERVED_CONCURRENCY = 100
# Ways the API Gateway account's CloudWatch Logs role (needed for stage access logs) is had.
API_GATEWAY_LOGS_ROLE_MODES = ("create", "existing")


def default_model_id(region: str) -> str:
    """The default model's inference profile for a deployment Region."""
    for pattern, prefix in _REGION_PROFILE_PREFIXES:
        if pattern.match(region):
            return f"{prefix}.{BASE_MODEL_ID}"
    raise ValueError(
        f"no known inference profile of {BASE_MODEL_ID} serves the Region {region!r}: pass "
        "the id of one that does (or of a model available there) with "
        "`-c modelId=<id>`, e.g. `-c modelId=global." + BASE_MODEL_ID + "`"
    )


def concrete_region(scope: Construct) -> str:
    region = cdk.Stack.of(scope).region
    if cdk.Token.is_unresolved(region):
        raise ValueError(
            "the stack needs a concrete Region at synth (the model id and its permissions "
            "depend on it): set CDK_DEFAULT_REGION or AWS_DEFAULT_REGION, or pass "
            "env=cdk.Environment(region=...)"
        )
    return region


def _context_optional_int(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", ""}):
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


def _context_origins(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True)
class LlmStreamProps:
    """What a deployer may choose. Each field also comes from CDK context (``-c name=value``)."""

    # None: the default model through the inference profile of the deployment Region.
    model_id: str | None = None  # context: modelId
    # Browser origins allowed besides the stack's own CloudFront domain, e.g. a locally run
    # client (http://localhost:5173) using this stack. Context: extraAllowedOrigins (a comma
    # list). The REST API's CORS (Chalice) can answer one origin only, hence at most one.
    extra_allowed_origins: tuple[str, ...] = ()
    log_level: str = DEFAULT_LOG_LEVEL  # context: logLevel
    # Cognito's Plus feature plan (threat protection), billed per monthly active user with no
    # free tier; off by default (Essentials). Context: threatProtection.
    threat_protection: bool = False
    lambda_timeout_s: int = 30  # API Gateway's REST integration timeout is 29 s
    lambda_memory_mb: int = 512  # more memory = more CPU = faster cold start (crypto, powertools)
    stream_memory_mb: int = 512  # the Node.js streaming Lambda
    # Caps the Node.js streaming Lambda's concurrent generations (cost). None: no reservation,
    # the default, since a reservation must leave LAMBDA_MIN_UNRESERVED_CONCURRENCY
    # unreserved in the account. Context: streamReservedConcurrency.
    stream_reserved_concurrency: int | None = None
    # "create": the stack sets the Region's API Gateway CloudWatch Logs role (the account
    # setting stage access logs need), retained on delete; "existing": the account has one.
    # Context: apiGatewayLogsRole.
    api_gateway_logs_role: str = "create"
    # A regional WAFv2 web ACL (its ARN) for the REST API's stage, which carries the
    # streaming routes; None: no web ACL (billed per month and rule). Context: restWebAclArn.
    rest_web_acl_arn: str | None = None

    def __post_init__(self) -> None:
        if self.model_id is not None and not _MODEL_ID_RE.match(self.model_id):
            raise ValueError(
                f"modelId must be a Bedrock model or inference profile id, got {self.model_id!r}"
            )
        for origin in self.extra_allowed_origins:
            if not _ORIGIN_RE.match(origin):
                # "*" would let any web page call the APIs with a user's token.
                raise ValueError(
                    f"extraAllowedOrigins must be origins like https://example.com "
                    f"(no '*', no path, no trailing slash), got {origin!r}"
                )
        if len(self.extra_allowed_origins) > 1:
            raise ValueError(
                "extraAllowedOrigins: at most one origin (the REST API's CORS answers a single "
                f"Access-Control-Allow-Origin), got {list(self.extra_allowed_origins)}"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(f"logLevel must be one of {sorted(_LOG_LEVELS)}")
        concurrency = self.stream_reserved_concurrency
        if concurrency is not None and not 1 <= concurrency <= 1000:
            # 0 would throttle every request.
            raise ValueError(
                f"streamReservedConcurrency must be 1..1000 or none, got {concurrency!r}; "
                f"Lambda refuses a reservation that leaves fewer than "
                f"{LAMBDA_MIN_UNRESERVED_CONCURRENCY} unreserved executions in the account "
                "(see the account's ConcurrentExecutions quota)"
            )
        if self.rest_web_acl_arn is not None and not _WEB_ACL_ARN_RE.match(self.rest_web_acl_arn):
            raise ValueError(
                "restWebAclArn must be a regional WAFv2 web ACL ARN "
                "(arn:aws:wafv2:<region>:<account>:regional/webacl/<name>/<id>), "
                f"got {self.rest_web_acl_arn!r}"
            )
        if self.api_gateway_logs_role not in API_GATEWAY_LOGS_ROLE_MODES:
            raise ValueError(
                f"apiGatewayLogsRole must be one of {list(API_GATEWAY_LOGS_ROLE_MODES)}, "
                f"got {self.api_gateway_logs_role!r}"
            )

    def model_id_for(self, region: str) -> str:
        return self.model_id or default_model_id(region)

    @classmethod
    def from_context(cls, scope: Construct) -> LlmStreamProps:
        node = scope.node
        if node.try_get_context("allowedOrigin") is not None:
            raise ValueError(
                "allowedOrigin is gone: the allowed origin is the stack's own CloudFront "
                "domain; pass other origins with -c extraAllowedOrigins=<origin>"
            )
        return cls(
            model_id=node.try_get_context("modelId") or None,
            extra_allowed_origins=_context_origins(node.try_get_context("extraAllowedOrigins")),
            log_level=(node.try_get_context("logLevel") or DEFAULT_LOG_LEVEL).upper(),
            threat_protection=_context_bool(node.try_get_context("threatProtection"), False),
            stream_reserved_concurrency=_context_optional_int(
                node.try_get_context("streamReservedConcurrency")
            ),
            api_gateway_logs_role=node.try_get_context("apiGatewayLogsRole") or "create",
            rest_web_acl_arn=node.try_get_context("restWebAclArn") or None,
        )
