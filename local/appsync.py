"""A local AWS AppSync GraphQL API: the schema in ``cdk/appsync``, its resolvers, and both
of AppSync's endpoints, faithful to what the app and its clients depend on
(docs/security.md, docs/protocol.md, docs/local-cloud.md).

**GraphQL over HTTP** (``POST /graphql``; queries and mutations only)

- The schema is ``cdk/appsync/schema.graphql`` itself, after a prelude declaring AppSync's
  scalars and directives. ``AWSJSON`` behaves as on AppSync: an input is a JSON *string* that
  resolvers see parsed; an output is serialized to a JSON string (a string value passes as it
  is). The other AWS scalars are declared for the schema's sake and pass values through.
- Authorization: Cognito user pools is the default mode and AWS_IAM an additional one.
  ``Authorization: <raw JWT>`` (ID or access token of the app client, no "Bearer") is
  verified as AppSync's user-pool mode does (``UserPoolAuth``: the pool's signature and
  claims through the product's verifier, then ``token_use`` id with ``aud``, or access
  with ``client_id``, naming the app client); ``Authorization: AWS4-HMAC-SHA256 ...`` is
  checked by recomputing the SigV4 signature (service ``appsync``) over the method, URL,
  signed headers and body with the local credentials. A missing or bad credential answers 401
  ``{"errors": [{"errorType": "UnauthorizedException", "message": ...}]}``.
- Field-level auth as AppSync: ``@aws_iam`` / ``@aws_cognito_user_pools`` on a field (else
  on its type) list the modes allowed; no directive allows the default mode only. A caller
  of another mode gets that field null and ``{"errorType": "Unauthorized", "message": "Not
  Authorized to access <field> on type <Type>"}``.
- Resolvers, implemented natively in Python after the JavaScript resolvers CDK deploys:
  ``stream_operation.js`` (startStream, cancelStream, streamFrames: the Lambda data source,
  the Chalice function ``appsync_resolver``), ``publish_frames.js`` (publishFrames: NONE data
  source, the arguments are the result) and ``on_stream_frame.js`` (onStreamFrame: ID tokens
  only, enhanced filter ``owner == caller sub AND streamId == args.streamId``).
- Errors have AppSync's shape (``path``, ``data``, ``errorType``, ``errorInfo``,
  ``locations`` with ``sourceName``, ``message``); GraphQL errors answer 200, bodies over
  1 MB 413, a body that is not a GraphQL request 400.
- CORS for browsers (Amplify): any origin; preflights allow ``authorization``,
  ``content-type``, ``x-amz-user-agent``, ``x-amz-date``, ``x-amz-security-token`` and any
  other header the browser asks for.

**Real-time WebSocket** (``GET /graphql/realtime``; Amplify derives this path from a custom
GraphQL endpoint, gql takes the URL as given)

- Subprotocol ``graphql-ws`` (else the handshake is refused with 400). Connection auth comes
  from a ``header-<base64url JSON>`` subprotocol entry (Amplify; padding optional) or the
  ``?header=<base64 JSON>&payload=e30=`` query (gql). The header JSON holds
  ``{"host", "Authorization": <JWT>}`` or SigV4 headers signed over ``POST
  https://<host>/graphql/connect`` with body ``{}``.
- ``connection_init`` -> ``connection_ack {"connectionTimeoutMs"}``, then ``ka`` at once and
  every ``ka_interval_s``. Bad connection auth -> ``connection_error`` with
  ``UnauthorizedException`` and ``errorCode`` 401 (Amplify treats 400/401/403 as final and
  stops retrying), then the socket closes.
- ``start {id, payload: {data: "<JSON {query, variables}>", extensions: {authorization}}}``:
  authorized on its own ``extensions.authorization`` (SigV4 signed over ``POST
  https://<host>/graphql`` with the ``data`` string as body), subscription operations only,
  at most 100 per connection, ids unique -> ``start_ack {id}`` or ``error {id, payload:
  {errors}}``. ``stop {id}`` -> ``complete {id}``. Unknown types get AppSync's
  ``UnsupportedOperation`` error.
- Delivery: each accepted publishFrames delivers the mutation's result, as the mutation
  selected it, to every subscription whose filters match (the resolver's enhanced filter and
  AppSync's basic argument filter), executed against the subscriber's own selection set:
  fields the mutation did not select are null (with GraphQL's error for non-null fields, as
  AppSync reports). Payloads over 240 KB are dropped, as AppSync drops them. Each connection
  has an ordered send queue: frames arrive in publish order and the publishing request never
  waits for a slow socket.

**Control routes** (local only, not authenticated, JSON)::

    GET    /_emulator/faults
    POST   /_emulator/faults  publishLatencyMs: ms added before answering each publishFrames
                              publishFailures: N  the next N publishFrames requests fail with
                              publishFailureStatus (default 500) and an AppSync error body
    DELETE /_emulator/faults  clear them
    GET    /_emulator/stats   {"publishes", "publishFailuresInjected", "deliveries",
                               "dropped", "resolverInvocations", "connections",
                               "subscriptions"}

**Execution limits** as the stack sets them: an operation nested more than
``QUERY_DEPTH_LIMIT`` (5) fields deep, or with more than ``RESOLVER_COUNT_LIMIT`` (3)
resolver fields (each alias counts), is refused whole with ``{"data": null, "errors":
[{"errorType": "QueryDepthLimitExceeded" | "ResolverCountLimitExceeded", "message"}]}``
before any resolver runs. JSON bodies, messages and ``payload.data`` nested deeper than
the product's JSON limit (32) answer ``BadRequestException`` naming it (HTTP 400).

Known differences from AppSync: the execution-limit error types and messages are ours
(AppSync documents the limits, not the wording); only the user-pool and IAM modes exist
(the schema uses no others); the ``host`` in real-time headers is not compared with the
API's host; a ``start``'s session token is signed over but not checked; subscription
payloads are not re-authorized field by field; filters support the equality the resolver
uses; the close code after ``connection_error`` (1000) and the ``DuplicatedOperationError``
type for a reused start id are our choices, not observed AppSync behaviour.

Logs never contain tokens, signatures, variables or frames: operation, field names, auth
mode, status and counts only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import WSCloseCode, WSMsgType, web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from graphql import (
    DocumentNode,
    Executor,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    build_schema,
    default_field_resolver,
    execute,
    execute_subscription_event,
    get_operation_ast,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values

from chalicelib.json_input import MAX_JSON_DEPTH, json_depth
from chalicelib.jwt_verify import JwtVerifier, TokenError
from local.http_service import (
    ControlError,
    JsonClient,
    Served,
    apply_control,
    cors_preflight,
)
from local.lambdas import LocalLambdas

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "cdk" / "appsync" / "schema.graphql"

USER_POOLS = "AMAZON_COGNITO_USER_POOLS"
IAM = "AWS_IAM"

# AppSync's limits that the app meets.
REQUEST_BYTES = 1024 * 1024  # an HTTP GraphQL request body
SUBSCRIPTION_PAYLOAD_BYTES = 240 * 1024  # one subscription message; larger ones are dropped
MAX_SUBSCRIPTIONS = 100  # per WebSocket connection
SIGV4_MAX_SKEW = timedelta(minutes=5)
LAMBDA_TIMEOUT_S = 30.0  # AppSync's resolver timeout
# The API's execution limits, as the stack configures them (queryDepthLimit,
# resolverCountLimit): deeper operations, or ones that would run more resolvers (aliases
# count, one each), are refused whole, before any resolver runs.
QUERY_DEPTH_LIMIT = 5
RESOLVER_COUNT_LIMIT = 3
# JSON bodies and messages nested deeper than this are refused before parsing (Python's
# parser recurses per level); the product's own limit, so the answer names the same one.
JSON_DEPTH_LIMIT = MAX_JSON_DEPTH

# AppSync's scalars and directives: AppSync knows them without declarations, graphql-core
# needs them declared before the schema can be built.
APPSYNC_PRELUDE = """
scalar AWSJSON
scalar AWSDateTime
scalar AWSDate
scalar AWSTime
scalar AWSTimestamp
scalar AWSEmail
scalar AWSURL
scalar AWSPhone
scalar AWSIPAddress
directive @aws_subscribe(mutations: [String]) on FIELD_DEFINITION
directive @aws_iam on OBJECT | FIELD_DEFINITION
directive @aws_cognito_user_pools(cognito_groups: [String]) on OBJECT | FIELD_DEFINITION
directive @aws_api_key on OBJECT | FIELD_DEFINITION
directive @aws_oidc on OBJECT | FIELD_DEFINITION
directive @aws_lambda on OBJECT | FIELD_DEFINITION
directive @aws_auth(cognito_groups: [String]) on FIELD_DEFINITION
"""

_AUTH_DIRECTIVES = {
    "aws_cognito_user_pools": USER_POOLS,
    "aws_auth": USER_POOLS,  # the legacy spelling of the same mode
    "aws_iam": IAM,
    "aws_api_key": "API_KEY",
    "aws_oidc": "OPENID_CONNECT",
    "aws_lambda": "AWS_LAMBDA",
}

CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-amz-user-agent",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-api-key",
)
CORS_EXPOSE_HEADERS = "x-amzn-requestid, x-amzn-errortype"

_UNAUTHORIZED = "UnauthorizedException"


# -- schema ---------------------------------------------------------------------------------


def _awsjson_input(value: Any) -> Any:
    if not isinstance(value, str):
        raise GraphQLError("AWSJSON must be a string holding JSON.")
    try:
        return json.loads(value)
    except ValueError:
        raise GraphQLError(f"Unable to parse {value[:40]!r} as valid JSON.") from None


def _awsjson_literal(node: ValueNode, _variables: Any = None) -> Any:
    if not isinstance(node, StringValueNode):
        raise GraphQLError("AWSJSON must be a string holding JSON.")
    return _awsjson_input(node.value)


def _awsjson_output(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def load_schema(path: Path = SCHEMA_PATH) -> GraphQLSchema:
    """The AppSync schema at ``path`` as a graphql-core schema, AWS scalars included."""
    schema = build_schema(APPSYNC_PRELUDE + path.read_text(encoding="utf-8"))
    awsjson: Any = schema.type_map["AWSJSON"]
    # graphql-core 3.3 reads the new coerce_* names and still calls the legacy ones in places.
    awsjson.coerce_input_value = awsjson.parse_value = _awsjson_input
    awsjson.coerce_input_literal = awsjson.parse_literal = _awsjson_literal
    awsjson.coerce_output_value = awsjson.serialize = _awsjson_output
    return schema


class FieldAuthorization:
    """Which auth modes may resolve each field, from the schema's auth directives.

    As AppSync: a field's own directives win; a field without any takes its type's; a
    type without any allows only the API's default mode.
    """

    def __init__(self, schema: GraphQLSchema, default_mode: str = USER_POOLS) -> None:
        self.default_mode = default_mode
        self._modes: dict[tuple[str, str], frozenset[str]] = {}
        for type_name, type_ in schema.type_map.items():
            fields = getattr(type_, "fields", None)
            if type_name.startswith("__") or not fields or not hasattr(type_, "interfaces"):
                continue
            type_modes = self._directive_modes(type_.ast_node)
            for field_name, field_def in fields.items():
                modes = self._directive_modes(field_def.ast_node) or type_modes
                self._modes[(type_name, field_name)] = modes or frozenset({default_mode})

    @staticmethod
    def _directive_modes(node: Any) -> frozenset[str]:
        directives = getattr(node, "directives", None) or ()
        return frozenset(
            _AUTH_DIRECTIVES[d.name.value] for d in directives if d.name.value in _AUTH_DIRECTIVES
        )

    def allows(self, type_name: str, field_name: str, mode: str) -> bool:
        if type_name.startswith("__") or field_name.startswith("__"):
            return True  # introspection
        return mode in self._modes.get((type_name, field_name), frozenset({self.default_mode}))

    def resolve(self, next_: Any, root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        """graphql-core middleware: refuse the field before its resolver runs.

        (graphql-core takes middleware as functions or objects with ``resolve``; a bound
        method would be ignored silently.)
        """
        caller: Caller = info.context.caller
        if not self.allows(info.parent_type.name, info.field_name, caller.mode):
            raise _unauthorized_field(info.parent_type.name, info.field_name)
        return next_(root, info, **args)


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _field_nodes(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[FieldNode]:
    """The fields of a selection set, fragments flattened (``@skip``/``@include`` ignored)."""
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _field_nodes(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _field_nodes(fragment.selection_set, fragments)


def _by_field_name(
    value: Any,
    nodes: Sequence[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
) -> Any:
    """A field's response value keyed by field names instead of the request's aliases.

    This is "the mutation's result as the mutation selected it", which AppSync delivers
    to subscribers whatever aliases the publisher used.
    """
    if isinstance(value, list):
        return [_by_field_name(item, nodes, fragments) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for node in nodes:
        for sub in _field_nodes(node.selection_set, fragments):
            key = sub.alias.value if sub.alias else sub.name.value
            if key in value:
                out[sub.name.value] = _by_field_name(value[key], [sub], fragments)
    return out


def _limits_error(
    operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> dict[str, Any] | None:
    """AppSync's query depth and resolver count limits: the error refusing ``operation``,
    or None. Depth counts nested fields (fragments flattened); resolvers are the root
    fields, which are the ones this schema attaches resolvers to, counted per alias."""
    roots = [
        f for f in _field_nodes(operation.selection_set, fragments) if f.name.value != "__typename"
    ]
    if len(roots) > RESOLVER_COUNT_LIMIT:
        return {
            "errorType": "ResolverCountLimitExceeded",
            "message": f"The operation would run {len(roots)} resolvers; the resolver count "
            f"limit is {RESOLVER_COUNT_LIMIT}.",
        }
    # Iterative, and stopping at the first level past the limit (validation already
    # refused fragment cycles).
    stack: list[tuple[FieldNode, int]] = [(f, 1) for f in roots]
    while stack:
        node, depth = stack.pop()
        if depth > QUERY_DEPTH_LIMIT:
            return _limits_depth_error()
        stack.extend((child, depth + 1) for child in _field_nodes(node.selection_set, fragments))
    return None


def _limits_depth_error() -> dict[str, Any]:
    return {
        "errorType": "QueryDepthLimitExceeded",
        "message": f"The operation is nested more than {QUERY_DEPTH_LIMIT} levels deep; "
        f"the query depth limit is {QUERY_DEPTH_LIMIT}.",
    }


def _nesting_error() -> dict[str, Any]:
    return _error_body(
        "BadRequestException",
        f"The JSON is nested deeper than the limit of {JSON_DEPTH_LIMIT} levels.",
    )


def _loads_limited(text: str | bytes) -> Any:
    """JSON of a request or message, refused (``NestingError``) past the nesting limit."""
    raw = text.decode("utf-8") if isinstance(text, bytes) else text
    if json_depth(raw) > JSON_DEPTH_LIMIT:
        raise NestingError
    return json.loads(raw)


class NestingError(ValueError):
    """JSON nested deeper than ``JSON_DEPTH_LIMIT``."""


# -- errors ---------------------------------------------------------------------------------


class AppSyncError(Exception):
    """A field error with AppSync's extra members (``util.error`` in a JS resolver)."""

    def __init__(
        self,
        message: str,
        error_type: str,
        data: Any = None,
        error_info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.data = data
        self.error_info = dict(error_info) if error_info is not None else None


def _unauthorized_field(type_name: str, field_name: str) -> AppSyncError:
    return AppSyncError(
        f"Not Authorized to access {field_name} on type {type_name}", "Unauthorized"
    )


def format_error(error: GraphQLError) -> dict[str, Any]:
    """A GraphQL error in AppSync's response shape."""
    locations = (
        [{"line": loc.line, "column": loc.column, "sourceName": None} for loc in error.locations]
        if error.locations
        else None
    )
    out: dict[str, Any] = {"path": list(error.path) if error.path else None}
    original = error.original_error
    if isinstance(original, AppSyncError):
        out.update(data=original.data, errorType=original.error_type, errorInfo=original.error_info)
    out.update(locations=locations, message=error.message)
    return out


def _error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"errorType": error_type, "message": message, **extra}]}


# -- authentication ------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who made a request: a user-pool user (``claims``) or an IAM principal (``access_key``)."""

    mode: str
    sub: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    access_key: str | None = None

    @property
    def token_use(self) -> str | None:
        value = self.claims.get("token_use")
        return str(value) if value is not None else None


class AuthError(Exception):
    """The request's credentials are missing or not acceptable; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserPoolAuth:
    """AppSync's Cognito user-pool authorization: ID *and* access tokens of the app client
    (Amplify's user-pool mode sends the access token). The signature, issuer and time
    checks are the product's own (``JwtVerifier.verified_claims``); which token uses are
    let through is AppSync's rule, so it lives here, not in the product, whose entry
    points accept ID tokens only (the resolvers refuse access tokens themselves)."""

    def __init__(self, verifier: JwtVerifier) -> None:
        self._verifier = verifier

    def verify(self, token: str | None) -> dict[str, Any]:
        claims = self._verifier.verified_claims(token)
        token_use = claims.get("token_use")
        if token_use == "access":
            if claims.get("client_id") != self._verifier.client_id:
                raise TokenError("wrong client")
        elif token_use == "id":
            if claims.get("aud") != self._verifier.client_id:
                raise TokenError("wrong audience")
        else:
            raise TokenError("not an ID or access token")
        return claims


# AppSync's own wording where it is known; the verifier's reason otherwise.
_TOKEN_MESSAGES = {
    "missing token": "Valid authorization header not provided.",
    "malformed token": "Unable to parse JWT token.",
    "token expired": "Token has expired.",
}

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return str(value)
    return None


class _SignedHeadersSigner(SigV4Auth):
    """botocore's SigV4 over exactly the headers the client listed in ``SignedHeaders``.

    botocore's own selection drops some headers (``user-agent`` ...) and adds ``host``;
    a verifier must sign what the client said it signed, nothing more or less.
    """

    def __init__(self, credentials: Credentials, region: str, signed: Sequence[str]) -> None:
        super().__init__(credentials, "appsync", region)
        self._signed = list(signed)

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name in self._signed:
            header_map[name] = request.headers.get(name, "")
        return header_map


def verify_sigv4(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: tuple[str, str],
    region: str,
    now: float | None = None,
) -> str:
    """Check a SigV4 ``Authorization`` for service ``appsync``; returns the access key id.

    The signature is recomputed with botocore over ``method``, ``url`` (path and query),
    the signed headers and ``body``, at the request's own ``X-Amz-Date``, which must be
    within 5 minutes of ``now``. Raises :class:`AuthError` naming the problem, in AWS's
    words. A session token, if sent, is covered by the signature but not checked.
    """
    authorization = _header(headers, "authorization") or ""
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        raise AuthError("Only the AWS4-HMAC-SHA256 signature algorithm is supported.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        params[key] = value
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not params.get(p)]
    if missing:
        raise AuthError(
            "Authorization header requires "
            + ", ".join(f"'{p}'" for p in missing)
            + " parameter(s)."
        )
    scope = params["Credential"].split("/")
    if len(scope) != 5:
        raise AuthError("Credential should be <access key>/<date>/<region>/<service>/aws4_request.")
    key_id, scope_date, scope_region, scope_service, terminator = scope
    if key_id != credentials[0]:
        raise AuthError("The security token included in the request is invalid.")
    if scope_region != region:
        raise AuthError(f"Credential should be scoped to a valid region, not '{scope_region}'.")
    if scope_service != "appsync":
        raise AuthError("Credential should be scoped to correct service: 'appsync'.")
    if terminator != "aws4_request":
        raise AuthError(
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator}'."
        )
    amz_date = _header(headers, "x-amz-date")
    if not amz_date:
        raise AuthError(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise AuthError(
            f"X-Amz-Date {amz_date[:32]!r} is not in the format YYYYMMDDTHHMMSSZ."
        ) from None
    if scope_date != amz_date[:8]:
        raise AuthError(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if signed_at < current - SIGV4_MAX_SKEW:
        raise AuthError(
            f"Signature expired: {amz_date} is now earlier than "
            f"{(current - SIGV4_MAX_SKEW).strftime(_AMZ_DATE)} "
            f"({current.strftime(_AMZ_DATE)} - 5 min.)"
        )
    if signed_at > current + SIGV4_MAX_SKEW:
        raise AuthError(
            f"Signature not yet current: {amz_date} is still later than "
            f"{(current + SIGV4_MAX_SKEW).strftime(_AMZ_DATE)} "
            f"({current.strftime(_AMZ_DATE)} + 5 min.)"
        )
    signed = [h.lower() for h in params["SignedHeaders"].split(";") if h]
    if "host" not in signed:
        raise AuthError("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    content_sha = _header(headers, "x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise AuthError("The provided 'x-amz-content-sha256' header does not match the body.")
    request = AWSRequest(
        method=method,
        url=url,
        headers={name: _header(headers, name) or "" for name in signed},
        data=body,
    )
    request.context["timestamp"] = amz_date
    signer = _SignedHeadersSigner(Credentials(credentials[0], credentials[1]), region, signed)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected, params["Signature"]):
        raise AuthError(_SIGNATURE_MISMATCH)
    return key_id


def decode_header_param(encoded: str) -> dict[str, Any]:
    """The auth header JSON of a real-time connection, from base64 or base64url (padding
    optional). Raises ValueError if it is not a base64-encoded JSON object."""
    # Either alphabet; a space can only be a '+' some client form-decoded.
    text = encoded.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    try:
        decoded = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("not base64-encoded JSON") from None
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


# -- resolvers ----------------------------------------------------------------------------------


@dataclass
class _Publish:
    response_key: str
    nodes: list[FieldNode]


@dataclass
class _OperationContext:
    """What one GraphQL operation's resolvers share (graphql-core's ``context_value``)."""

    caller: Caller
    publishes: list[_Publish] = field(default_factory=list)
    subscription_filter: dict[str, Any] | None = None


class Resolvers:
    """The JavaScript resolvers in ``cdk/appsync``, implemented natively in Python.

    ``stream_operation.js``, ``publish_frames.js`` and ``on_stream_frame.js``; each method
    says which and keeps its behaviour, so the emulator answers as the deployed API does.
    """

    LAMBDA_FIELDS = frozenset(
        {("Mutation", "startStream"), ("Mutation", "cancelStream"), ("Query", "streamFrames")}
    )

    def __init__(self, lambdas: LocalLambdas, function_name: str) -> None:
        self.lambdas = lambdas
        self.function_name = function_name
        self.invocations = 0  # Lambda resolver invocations since start

    def resolve(self, root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        """graphql-core's field resolver: the resolver attached to the field, if any."""
        key = (info.parent_type.name, info.field_name)
        if key in self.LAMBDA_FIELDS:
            return self.stream_operation(info, args)
        if key == ("Mutation", "publishFrames"):
            return self.publish_frames(info, args)
        if key == ("Subscription", "onStreamFrame"):
            return self.on_stream_frame(info, args)
        return default_field_resolver(root, info, **args)

    async def stream_operation(self, info: GraphQLResolveInfo, args: dict[str, Any]) -> Any:
        """``stream_operation.js``: invoke the Lambda with the field, its arguments (AWSJSON
        already parsed) and the caller's identity; ``{"data"}`` is the field's value,
        ``{"error"}`` becomes ``util.error(message, code, null, {retryable})``, and a failed
        invocation ``util.error("Internal error.", "INTERNAL")``."""
        context: _OperationContext = info.context
        event = {
            "field": info.field_name,
            "arguments": args,
            "identity": {"sub": context.caller.sub, "tokenUse": context.caller.token_use},
        }
        self.invocations += 1
        try:
            result = await self.lambdas.run(self.function_name, event, timeout=LAMBDA_TIMEOUT_S)
        except Exception as exc:  # ctx.error: unhandled, timed out, unknown function
            log.warning(
                "resolver invocation failed",
                extra={"field": info.field_name, "errorType": type(exc).__name__},
            )
            raise AppSyncError("Internal error.", "INTERNAL") from None
        if not isinstance(result, Mapping):
            # JS would throw destructuring a non-object: treat as a failed invocation.
            raise AppSyncError("Internal error.", "INTERNAL")
        error = result.get("error")
        if error:
            error = error if isinstance(error, Mapping) else {}
            info_ = {"retryable": error["retryable"]} if "retryable" in error else {}
            raise AppSyncError(
                str(error.get("message", "")), str(error.get("code", "")), None, info_
            )
        return result.get("data")

    def publish_frames(self, info: GraphQLResolveInfo, args: dict[str, Any]) -> dict[str, Any]:
        """``publish_frames.js``: the arguments are the result (and what subscribers get)."""
        context: _OperationContext = info.context
        context.publishes.append(_Publish(str(info.path.key), list(info.field_nodes)))
        return dict(args)

    def on_stream_frame(self, info: GraphQLResolveInfo, args: dict[str, Any]) -> None:
        """``on_stream_frame.js``: ID tokens only (``util.unauthorized()``), then the enhanced
        filter ``owner == caller sub AND streamId == args.streamId``."""
        context: _OperationContext = info.context
        if context.caller.token_use != "id":
            raise _unauthorized_field(info.parent_type.name, info.field_name)
        context.subscription_filter = {"owner": context.caller.sub, "streamId": args["streamId"]}
        return None


# -- real-time connections --------------------------------------------------------------------


@dataclass
class _Subscription:
    id: str
    field_name: str
    arguments: dict[str, Any]
    filter: dict[str, Any]
    executor: Executor

    def matches(self, published: Mapping[str, Any]) -> bool:
        """The enhanced filter, and AppSync's basic filter: every non-null argument equals
        the same-named field of the published result."""
        basic = {k: v for k, v in self.arguments.items() if v is not None}
        return all(published.get(k) == v for k, v in {**basic, **self.filter}.items())


class _Connection:
    """One real-time socket: its subscriptions and an ordered send queue.

    Everything sent goes through the queue and one sender task, so messages keep their
    order and a publish never waits on this socket.
    """

    def __init__(self, ws: web.WebSocketResponse, on_sent_data: Any) -> None:
        self.id = str(uuid.uuid4())
        self.ws = ws
        self.subscriptions: dict[str, _Subscription] = {}
        self._outbox: asyncio.Queue[tuple[str, bool] | None] = asyncio.Queue()
        self._on_sent_data = on_sent_data
        self._sender = asyncio.create_task(self._send_loop())
        self._keepalive: asyncio.Task[None] | None = None

    def send(self, message: Mapping[str, Any], *, is_data: bool = False) -> None:
        self.send_text(json.dumps(message, separators=(",", ":")), is_data=is_data)

    def send_text(self, text: str, *, is_data: bool = False) -> None:
        self._outbox.put_nowait((text, is_data))

    def start_keepalive(self, interval_s: float) -> None:
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keepalive_loop(interval_s))

    async def _keepalive_loop(self, interval_s: float) -> None:
        while True:
            self.send({"type": "ka"})
            await asyncio.sleep(interval_s)

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            text, is_data = item
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return  # the socket is gone; the receive loop cleans up
            if is_data:
                self._on_sent_data()

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        """Send what is queued, then close the socket."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._sender), timeout=2.0)
        with contextlib.suppress(ConnectionError):
            await self.ws.close(code=code, message=message)

    async def discard(self) -> None:
        """Stop the tasks of a connection whose socket is already closed."""
        for task in (self._keepalive, self._sender):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._keepalive, self._sender) if t), return_exceptions=True
        )


# -- faults and stats ---------------------------------------------------------------------------


_FAILURE_TYPES = {
    400: ("BadRequestException", "The request is not valid."),
    401: (_UNAUTHORIZED, "You are not authorized to make this call."),
    429: ("TooManyRequestsException", "Rate exceeded"),
    500: ("InternalFailure", "An internal failure occurred."),
    502: ("BadGatewayException", "Bad gateway."),
    503: ("ServiceUnavailableException", "The service is unavailable."),
    504: ("GatewayTimeoutException", "The request timed out."),
}


@dataclass
class PublishFaults:
    publish_latency_ms: float = 0.0
    publish_failures: int = 0
    publish_failure_status: int = 500

    def to_json(self) -> dict[str, Any]:
        return {
            "publishLatencyMs": self.publish_latency_ms,
            "publishFailures": self.publish_failures,
            "publishFailureStatus": self.publish_failure_status,
        }


@dataclass
class _Counters:
    publishes: int = 0
    publish_failures_injected: int = 0
    deliveries: int = 0
    dropped: int = 0


# -- the emulator ---------------------------------------------------------------------------


def _offered_protocols(request: web.Request) -> list[str]:
    values = request.headers.getall("Sec-WebSocket-Protocol", [])
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _query_header(raw_query: str) -> str | None:
    # Parsed by hand from the raw query: gql sends standard base64 unescaped, and a form
    # decoder (aiohttp's request.query) would turn its '+' into spaces.
    for part in raw_query.split("&"):
        key, _, value = part.partition("=")
        if key == "header":
            return unquote(value)
    return None


class AppSyncEmulator:
    """One AppSync GraphQL API (HTTP and real-time endpoints) on one local port.

    ``verifier`` checks the user pool's tokens; ID and access tokens of its app client are
    accepted, as AppSync does (``UserPoolAuth``). ``credentials`` are the (access key id,
    secret) IAM callers must sign with.
    """

    def __init__(
        self,
        lambdas: LocalLambdas,
        *,
        verifier: JwtVerifier,
        region: str = "us-east-1",
        credentials: tuple[str, str] = ("local", "local"),
        schema_path: Path = SCHEMA_PATH,
        resolver_function: str = "appsync_resolver",
        ka_interval_s: float = 60.0,
        connection_timeout_ms: int = 300_000,
    ) -> None:
        if ka_interval_s <= 0:
            raise ValueError("ka_interval_s must be positive")
        self.lambdas = lambdas
        self.verifier = UserPoolAuth(verifier)
        self.region = region
        self.credentials = credentials
        self.ka_interval_s = ka_interval_s
        self.connection_timeout_ms = connection_timeout_ms
        self.schema = load_schema(schema_path)
        self.field_auth = FieldAuthorization(self.schema)
        self.resolvers = Resolvers(lambdas, resolver_function)
        # mutation field -> the subscription fields that @aws_subscribe to it
        self._subscribers_of: dict[str, set[str]] = {}
        subscription_type = self.schema.subscription_type
        for name, field_def in (subscription_type.fields if subscription_type else {}).items():
            for mutation in _subscribed_mutations(field_def.ast_node):
                self._subscribers_of.setdefault(mutation, set()).add(name)
        self.faults = PublishFaults()
        self._counters = _Counters()
        self._connections: dict[str, _Connection] = {}
        self._served = Served("AppSync emulator")

    # -- serving -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://host:port/`` while serving (the control routes live here)."""
        return self._served.endpoint

    @property
    def graphql_url(self) -> str:
        return f"{self.endpoint}graphql"

    @property
    def realtime_url(self) -> str:
        return "ws://" + self.endpoint.removeprefix("http://") + "graphql/realtime"

    @property
    def control(self) -> AppSyncControl:
        return AppSyncControl(self.endpoint)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the actual port."""
        actual = await self._served.start(self._create_app(), host, port, shutdown_timeout=1.0)
        log.info("local AppSync listening on %s", self.graphql_url)
        return actual

    async def stop(self) -> None:
        """Close every real-time connection (1001), then stop serving."""
        if not self._served.serving:
            return
        for conn in list(self._connections.values()):
            await conn.close(WSCloseCode.GOING_AWAY, b"Going away")
        await self._served.stop()

    def _create_app(self) -> web.Application:
        # aiohttp refuses bodies of client_max_size bytes or more; AppSync takes 1 MB exactly.
        app = web.Application(
            client_max_size=REQUEST_BYTES + 1, middlewares=[self._cors_middleware]
        )
        app.router.add_post("/graphql", self._handle_graphql)
        app.router.add_get("/graphql/realtime", self._handle_realtime)
        app.router.add_get("/graphql/realtime/", self._handle_realtime)
        app.router.add_route("OPTIONS", "/graphql", self._handle_preflight)
        app.router.add_get("/_emulator/faults", self._handle_get_faults)
        app.router.add_post("/_emulator/faults", self._handle_post_faults)
        app.router.add_delete("/_emulator/faults", self._handle_delete_faults)
        app.router.add_get("/_emulator/stats", self._handle_stats)
        return app

    @web.middleware
    async def _cors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if not isinstance(response, web.WebSocketResponse):
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return response

    async def _handle_preflight(self, request: web.Request) -> web.Response:
        return cors_preflight(request, CORS_ALLOW_HEADERS, "POST, OPTIONS")

    # -- authentication ------------------------------------------------------------------

    async def authenticate(
        self, headers: Mapping[str, str], *, method: str, url: str, body: bytes
    ) -> Caller:
        """The caller of a request with these headers (HTTP, or a real-time header JSON);
        raises :class:`AuthError`."""
        authorization = (_header(headers, "authorization") or "").strip()
        if authorization.startswith("AWS4-HMAC-SHA256"):
            key_id = verify_sigv4(
                method=method,
                url=url,
                headers=headers,
                body=body,
                credentials=self.credentials,
                region=self.region,
            )
            return Caller(mode=IAM, access_key=key_id)
        try:
            # In a thread: a JWKS fetch may need this very loop (the local Cognito).
            claims = await asyncio.to_thread(self.verifier.verify, authorization or None)
        except TokenError as exc:
            raise AuthError(
                _TOKEN_MESSAGES.get(
                    exc.reason, f"You are not authorized to make this call: {exc.reason}."
                )
            ) from None
        return Caller(mode=USER_POOLS, sub=str(claims.get("sub")), claims=claims)

    # -- GraphQL execution ----------------------------------------------------------------

    async def _execute(
        self,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: _OperationContext,
    ) -> tuple[Any, list[GraphQLError]]:
        result: Any = execute(
            self.schema,
            document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            field_resolver=self.resolvers.resolve,
            middleware=[self.field_auth],
        )
        if inspect.isawaitable(result):
            result = await result
        return result.data, list(result.errors or ())

    # -- HTTP ----------------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200, *, error_type: str | None = None) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if error_type:
            headers["x-amzn-ErrorType"] = error_type
        return web.json_response(body, status=status, headers=headers)

    async def _handle_graphql(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._json(
                _error_body(
                    "PayloadTooLargeException",
                    f"The request body is larger than the 1 MB limit ({REQUEST_BYTES} bytes).",
                ),
                413,
                error_type="PayloadTooLargeException",
            )
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        try:
            caller = await self.authenticate(
                request.headers, method=request.method, url=url, body=body
            )
        except AuthError as exc:
            # The reasons name claims, scopes and dates, never token or signature values.
            log.info("graphql request refused", extra={"status": 401, "reason": exc.message})
            return self._json(
                _error_body(_UNAUTHORIZED, exc.message), 401, error_type=_UNAUTHORIZED
            )

        try:
            payload = _loads_limited(body)
            if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
                raise ValueError("no query")
            variables = payload.get("variables") or {}
            operation_name = payload.get("operationName") or None
            if not isinstance(variables, dict):
                raise ValueError("variables is not an object")
        except NestingError:
            return self._json(_nesting_error(), 400, error_type="BadRequestException")
        except (ValueError, UnicodeDecodeError):
            return self._json(
                _error_body(
                    "MalformedHttpRequestException",
                    'The body must be a JSON object {"query": <string>, "variables": '
                    '<object>, "operationName": <string>}.',
                ),
                400,
                error_type="MalformedHttpRequestException",
            )

        try:
            document = parse(payload["query"])
        except GraphQLError as error:
            return self._json({"data": None, "errors": [format_error(error)]})
        except RecursionError:
            return self._json({"data": None, "errors": [_limits_depth_error()]})
        errors = validate(self.schema, document)
        if errors:
            return self._json({"data": None, "errors": [format_error(e) for e in errors]})
        operation = get_operation_ast(document, operation_name)
        kind = operation.operation.value if operation is not None else None
        limited = _limits_error(operation, _fragments(document)) if operation else None
        if limited is not None:
            log.info(
                "graphql request over the execution limits", extra={"reason": limited["errorType"]}
            )
            return self._json({"data": None, "errors": [limited]})
        if kind == "subscription":
            return self._json(
                {
                    "data": None,
                    "errors": [
                        {
                            "errorType": "UnsupportedOperation",
                            "message": "subscription not supported through the HTTP endpoint; "
                            "subscribe on the real-time endpoint",
                        }
                    ],
                }
            )
        fields = (
            [n.name.value for n in _field_nodes(operation.selection_set, _fragments(document))]
            if operation is not None
            else []
        )
        publishing = kind == "mutation" and "publishFrames" in fields

        if publishing:
            failure = await self._publish_fault()
            if failure is not None:
                return failure

        context = _OperationContext(caller)
        data, errors = await self._execute(document, variables, operation_name, context)
        response: dict[str, Any] = {"data": data}
        if errors:
            response["errors"] = [format_error(e) for e in errors]
        published = 0
        if isinstance(data, dict):
            fragments = _fragments(document)
            for publish in context.publishes:
                value = data.get(publish.response_key)
                if value is not None:
                    self._deliver(
                        publish.nodes[0].name.value,
                        _by_field_name(value, publish.nodes, fragments),
                    )
                    published += 1
        if published:
            self._counters.publishes += 1
        log.info(
            "graphql request",
            extra={
                "operation": kind,
                "fields": fields,
                "authMode": caller.mode,
                "status": 200,
                "errors": len(errors),
            },
        )
        return self._json(response)

    async def _publish_fault(self) -> web.Response | None:
        """Apply the injected publish latency and failures to one publishFrames request."""
        if self.faults.publish_latency_ms > 0:
            await asyncio.sleep(self.faults.publish_latency_ms / 1000)
        if self.faults.publish_failures <= 0:
            return None
        self.faults.publish_failures -= 1
        self._counters.publish_failures_injected += 1
        status = self.faults.publish_failure_status
        error_type, message = _FAILURE_TYPES.get(status, ("InternalFailure", "Injected failure."))
        log.info("publish failure injected", extra={"status": status})
        return self._json(_error_body(error_type, message), status, error_type=error_type)

    # -- delivery --------------------------------------------------------------------------

    def _deliver(self, mutation_field: str, published: dict[str, Any]) -> None:
        """Queue one publish for every matching subscription (synchronously: publish order
        is queue order on every connection)."""
        targets = self._subscribers_of.get(mutation_field, set())
        for conn in list(self._connections.values()):
            for sub in list(conn.subscriptions.values()):
                if sub.field_name not in targets or not sub.matches(published):
                    continue
                result: Any = execute_subscription_event(
                    sub.executor.build_per_event_executor({sub.field_name: published})
                )
                payload: dict[str, Any] = {"data": result.data}
                if result.errors:
                    payload["errors"] = [format_error(e) for e in result.errors]
                payload_text = json.dumps(payload, separators=(",", ":"))
                if len(payload_text.encode("utf-8")) > SUBSCRIPTION_PAYLOAD_BYTES:
                    self._counters.dropped += 1
                    log.info(
                        "subscription payload over 240 KB dropped",
                        extra={"connectionId": conn.id},
                    )
                    continue
                conn.send_text(
                    f'{{"type":"data","id":{json.dumps(sub.id)},"payload":{payload_text}}}',
                    is_data=True,
                )

    def _count_delivery(self) -> None:
        self._counters.deliveries += 1

    # -- real-time -------------------------------------------------------------------------

    async def _handle_realtime(self, request: web.Request) -> web.StreamResponse:
        # Checked before aiohttp sees the request: it would log the offered subprotocols
        # (with the header- token) when none of them is graphql-ws.
        offered = _offered_protocols(request)
        if "graphql-ws" not in offered:
            return self._json(
                _error_body("BadRequestException", "The WebSocket subprotocol must be graphql-ws."),
                400,
                error_type="BadRequestException",
            )
        ws = web.WebSocketResponse(protocols=("graphql-ws",), autoping=True)
        if not ws.can_prepare(request).ok:
            return self._json(
                _error_body("BadRequestException", "This endpoint takes WebSocket upgrades only."),
                400,
                error_type="BadRequestException",
            )
        header_entry = next((p for p in offered if p.startswith("header-")), None)
        encoded = header_entry[len("header-") :] if header_entry else None
        if encoded is None:
            encoded = _query_header(request.rel_url.raw_query_string)
        connect_auth: Caller | AuthError
        try:
            if encoded is None:
                raise AuthError("Valid authorization header not provided.")
            try:
                headers = decode_header_param(encoded)
            except ValueError as exc:
                raise AuthError(f"The connection's auth header is {exc}.") from None
            connect_auth = await self._authenticate_realtime(headers, "/graphql/connect", b"{}")
        except AuthError as exc:
            connect_auth = exc

        await ws.prepare(request)
        conn = _Connection(ws, self._count_delivery)
        self._connections[conn.id] = conn
        log.info(
            "realtime connected",
            extra={"connectionId": conn.id, "authorized": isinstance(connect_auth, Caller)},
        )
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    if not await self._on_message(conn, connect_auth, msg.data):
                        break
                elif msg.type is WSMsgType.BINARY:
                    conn.send(
                        _realtime_error(
                            None, "BadRequestException", "Binary messages are not supported."
                        )
                    )
        finally:
            self._connections.pop(conn.id, None)
            await conn.discard()
            log.info(
                "realtime disconnected",
                extra={"connectionId": conn.id, "subscriptions": len(conn.subscriptions)},
            )
        return ws

    async def _authenticate_realtime(
        self, headers: Mapping[str, Any], path: str, body: bytes
    ) -> Caller:
        host = str(_header(headers, "host") or "")
        text_headers = {str(k): str(v) for k, v in headers.items()}
        return await self.authenticate(
            text_headers, method="POST", url=f"https://{host}{path}", body=body
        )

    async def _on_message(
        self, conn: _Connection, connect_auth: Caller | AuthError, text: str
    ) -> bool:
        """Handle one client message; False ends the connection."""
        try:
            message = _loads_limited(text)
        except NestingError:
            conn.send({"type": "error", "payload": _nesting_error()})
            return True
        except ValueError:
            message = None
        if not isinstance(message, dict):
            conn.send(
                _realtime_error(None, "BadRequestException", "Messages must be JSON objects.")
            )
            return True
        kind = message.get("type")
        if isinstance(connect_auth, AuthError):
            # AppSync answers the first message of an unauthorized connection so, and hangs up.
            conn.send(
                {
                    "type": "connection_error",
                    "payload": _error_body(_UNAUTHORIZED, connect_auth.message, errorCode=401),
                }
            )
            log.info("realtime connection refused", extra={"connectionId": conn.id})
            await conn.close()
            return False
        if kind == "connection_init":
            conn.send(
                {
                    "type": "connection_ack",
                    "payload": {"connectionTimeoutMs": self.connection_timeout_ms},
                }
            )
            conn.start_keepalive(self.ka_interval_s)
        elif kind == "start":
            await self._start(conn, message)
        elif kind == "stop":
            sub_id = message.get("id")
            if isinstance(sub_id, str) and conn.subscriptions.pop(sub_id, None) is not None:
                log.info("subscription stopped", extra={"connectionId": conn.id})
            conn.send({"type": "complete", "id": sub_id})
        else:
            conn.send(
                _realtime_error(
                    None,
                    "UnsupportedOperation",
                    "unknown not supported through the realtime channel",
                )
            )
        return True

    async def _start(self, conn: _Connection, message: Mapping[str, Any]) -> None:
        sub_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(sub_id, str) or not sub_id:
            conn.send(_realtime_error(None, "BadRequestException", "A start message needs an id."))
            return
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, str):
            conn.send(
                _realtime_error(
                    sub_id,
                    "BadRequestException",
                    'payload.data must be a string holding JSON {"query", "variables"}.',
                )
            )
            return
        try:
            request = _loads_limited(data)
            if not isinstance(request, dict) or not isinstance(request.get("query"), str):
                raise ValueError("no query")
            variables = request.get("variables") or {}
            if not isinstance(variables, dict):
                raise ValueError("variables is not an object")
        except NestingError:
            conn.send({"type": "error", "id": sub_id, "payload": _nesting_error()})
            return
        except ValueError:
            conn.send(
                _realtime_error(
                    sub_id,
                    "BadRequestException",
                    'payload.data must be JSON {"query": <string>, "variables": <object>}.',
                )
            )
            return
        extensions = payload.get("extensions") if isinstance(payload, dict) else None
        authorization = extensions.get("authorization") if isinstance(extensions, dict) else None
        try:
            if not isinstance(authorization, dict):
                raise AuthError("Valid authorization header not provided.")
            caller = await self._authenticate_realtime(
                authorization, "/graphql", data.encode("utf-8")
            )
        except AuthError as exc:
            conn.send(_realtime_error(sub_id, _UNAUTHORIZED, exc.message))
            return
        if sub_id in conn.subscriptions:
            conn.send(
                _realtime_error(
                    sub_id,
                    "DuplicatedOperationError",
                    f"Duplicated operation with id {sub_id[:64]}",
                )
            )
            return
        if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            conn.send(
                _realtime_error(
                    sub_id,
                    "MaxSubscriptionsReachedError",
                    f"Max number of {MAX_SUBSCRIPTIONS} subscriptions reached",
                )
            )
            return
        subscription = await self._subscribe(
            conn, sub_id, request["query"], variables, request.get("operationName"), caller
        )
        if subscription is None:
            return
        conn.subscriptions[sub_id] = subscription
        conn.send({"type": "start_ack", "id": sub_id})
        log.info(
            "subscription started",
            extra={"connectionId": conn.id, "field": subscription.field_name},
        )

    async def _subscribe(
        self,
        conn: _Connection,
        sub_id: str,
        query: str,
        variables: dict[str, Any],
        operation_name: Any,
        caller: Caller,
    ) -> _Subscription | None:
        """Run the subscription's resolver for ``caller``; the subscription, or None after
        sending the client the error."""
        name = operation_name if isinstance(operation_name, str) else None
        try:
            document = parse(query)
        except GraphQLError as error:
            conn.send({"type": "error", "id": sub_id, "payload": {"errors": [_brief(error)]}})
            return None
        except RecursionError:
            conn.send(
                {"type": "error", "id": sub_id, "payload": {"errors": [_limits_depth_error()]}}
            )
            return None
        errors = validate(self.schema, document)
        if errors:
            conn.send(
                {"type": "error", "id": sub_id, "payload": {"errors": [_brief(e) for e in errors]}}
            )
            return None
        operation = get_operation_ast(document, name)
        limited = _limits_error(operation, _fragments(document)) if operation else None
        if limited is not None:
            conn.send({"type": "error", "id": sub_id, "payload": {"errors": [limited]}})
            return None
        if operation is None or operation.operation.value != "subscription":
            kind = operation.operation.value if operation is not None else "unknown"
            conn.send(
                _realtime_error(
                    sub_id,
                    "UnsupportedOperation",
                    f"{kind} not supported through the realtime channel",
                )
            )
            return None
        # Running the operation once runs the field's resolver (and field-level auth).
        context = _OperationContext(caller)
        _, errors = await self._execute(document, variables, name, context)
        if errors:
            conn.send(
                {"type": "error", "id": sub_id, "payload": {"errors": [_brief(e) for e in errors]}}
            )
            return None
        executor = Executor.build(
            self.schema, document, raw_variable_values=variables, operation_name=name
        )
        assert isinstance(executor, Executor)  # variables coerced fine a moment ago
        root_field = _root_field(operation, document)
        arguments = _root_arguments(self.schema, root_field, executor)
        return _Subscription(
            id=sub_id,
            field_name=root_field.name.value,
            arguments=arguments,
            filter=context.subscription_filter or {},
            executor=executor,
        )

    # -- control ---------------------------------------------------------------------------

    def apply_faults(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a ``POST /_emulator/faults`` body; raises :class:`ControlError`."""
        names = {
            "publishLatencyMs": "publish_latency_ms",
            "publishFailures": "publish_failures",
            "publishFailureStatus": "publish_failure_status",
        }
        unknown = set(body) - set(names)
        if unknown:
            raise ControlError(f"unknown fields: {sorted(unknown)}; known: {sorted(names)}")
        changes: dict[str, Any] = {}
        for wire, attr in names.items():
            if wire not in body:
                continue
            value = body[wire]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ControlError(f"{wire} must be a non-negative number")
            if wire != "publishLatencyMs" and value != int(value):
                raise ControlError(f"{wire} must be an integer")
            changes[attr] = float(value) if wire == "publishLatencyMs" else int(value)
        status = changes.get("publish_failure_status")
        if status is not None and not 400 <= status <= 599:
            raise ControlError("publishFailureStatus must be an HTTP error status (400..599)")
        if "publish_failures" in changes and "publish_failure_status" not in changes:
            changes["publish_failure_status"] = 500
        for attr, value in changes.items():
            setattr(self.faults, attr, value)
        return {"faults": self.faults.to_json()}

    def reset_faults(self) -> dict[str, Any]:
        self.faults = PublishFaults()
        return {"faults": self.faults.to_json()}

    def stats(self) -> dict[str, int]:
        """Counters since start (call on the emulator's loop, or use the control route)."""
        counters = asdict(self._counters)
        return {
            "publishes": counters["publishes"],
            "publishFailuresInjected": counters["publish_failures_injected"],
            "deliveries": counters["deliveries"],
            "dropped": counters["dropped"],
            "resolverInvocations": self.resolvers.invocations,
            "connections": len(self._connections),
            "subscriptions": sum(len(c.subscriptions) for c in self._connections.values()),
        }

    async def _handle_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.to_json()})

    async def _handle_post_faults(self, request: web.Request) -> web.Response:
        return await apply_control(request, self.apply_faults)

    async def _handle_delete_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.reset_faults())

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())


def _subscribed_mutations(node: Any) -> frozenset[str]:
    """The mutations an ``@aws_subscribe(mutations: [...])`` field listens to."""
    for directive in getattr(node, "directives", None) or ():
        if directive.name.value != "aws_subscribe":
            continue
        for argument in directive.arguments:
            if argument.name.value == "mutations":
                values = getattr(argument.value, "values", ())
                return frozenset(getattr(v, "value", "") for v in values)
    return frozenset()


def _root_field(operation: OperationDefinitionNode, document: DocumentNode) -> FieldNode:
    # Validation guarantees a subscription has exactly one root field.
    return next(_field_nodes(operation.selection_set, _fragments(document)))


def _root_arguments(schema: GraphQLSchema, node: FieldNode, executor: Executor) -> dict[str, Any]:
    subscription_type = schema.subscription_type
    assert subscription_type is not None
    field_def = subscription_type.fields[node.name.value]
    return get_argument_values(field_def, node, executor.variable_values)


def _realtime_error(sub_id: str | None, error_type: str, message: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error"}
    if sub_id is not None:
        out["id"] = sub_id
    out["payload"] = _error_body(error_type, message)
    return out


def _brief(error: GraphQLError) -> dict[str, Any]:
    """An error as AppSync sends it on the real-time channel (errorType when it has one)."""
    original = error.original_error
    if isinstance(original, AppSyncError):
        return {"errorType": original.error_type, "message": original.message}
    return {"message": error.message}


class AppSyncControl(JsonClient):
    """A small synchronous client for the control routes (tests, bench, orchestrator)."""

    def faults(self, **fields: Any) -> dict[str, Any]:
        """POST /_emulator/faults with wire names, e.g. ``faults(publishFailures=1)``."""
        return dict(self.call("POST", "/_emulator/faults", fields)["faults"])

    def reset(self) -> dict[str, Any]:
        return dict(self.call("DELETE", "/_emulator/faults")["faults"])

    def stats(self) -> dict[str, int]:
        return dict(self.call("GET", "/_emulator/stats"))
