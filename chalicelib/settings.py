"""One typed settings object, read from the environment.

Defaults work for the local cloud; CDK sets the deployed values through the
Chalice stage config. No code path reads ``os.environ`` anywhere else, so a
test can build a ``Settings`` with exactly the values it needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value the application cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _str(env, name, default)
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


# How frames leave a producer. "coalesce" (the default) is the ordered background sender
# of docs/protocol.md; "per_token" is the baseline that bench/ measures it against: one delta
# frame per model token, delivered synchronously from the loop reading the model.
SENDER_MODES = ("coalesce", "per_token")


@dataclass(frozen=True)
class Limits:
    """Request limits of docs/protocol.md, enforced on every transport."""

    max_input_chars: int = 32_000
    max_tokens_limit: int = 4096
    default_max_tokens: int = 1024
    max_streams_per_user: int = 3
    max_messages: int = 100


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    streams_table: str = "llm-stream-streams"
    frames_table: str = "llm-stream-frames"
    model_id: str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    model_label: str = ""

    user_pool_id: str = "us-east-1_local"
    client_id: str = "local-client"
    jwt_issuer: str = ""
    jwks_url: str = ""
    jwt_leeway_s: int = 60
    jwks_refetch_interval_s: int = 60

    flush_interval_ms: int = 50
    flush_max_chars: int = 2048
    sender_mode: str = "coalesce"
    heartbeat_interval_s: float = 15.0
    stream_ttl_s: int = 24 * 3600

    model_first_event_timeout_s: float = 60.0
    model_idle_timeout_s: float = 30.0
    model_throttle_retries: int = 3
    model_retry_base_ms: int = 250
    model_retry_max_ms: int = 4000

    cors_allow_origin: str = "*"

    # WebSocket architecture: the @connections endpoint (https://{apiId}.execute-api.
    # {region}.amazonaws.com/{stage} on AWS) and the generator Lambda's name.
    websocket_management_url: str = ""
    generate_function_name: str = "ws_generate"

    # AppSync + SQS architecture: the work queue (the resolver sends, the worker's event
    # source reads), the GraphQL endpoint the worker publishes to (IAM, SigV4), and how
    # the worker is run. The queue's visibility timeout is >= 6x the worker's timeout and
    # it redrives to the DLQ after worker_max_receive_count receives (CDK sets both).
    work_queue_url: str = ""
    work_queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:llm-stream-work"
    appsync_graphql_url: str = ""
    # Records of a batch run one after another and each is a whole generation: keep 1.
    worker_batch_size: int = 1
    worker_timeout_s: int = 180
    worker_max_receive_count: int = 3
    # A worker renews its claim on a stream every third of this; a claim not renewed for
    # this long belongs to a worker that died.
    claim_lease_s: float = 30.0
    publish_retries: int = 2
    publish_timeout_s: float = 5.0

    # Published by GET /config so no client needs hand-copied settings.
    public_rest_url: str = ""
    public_function_url: str = ""
    public_rest_stream_url: str = ""
    public_websocket_url: str = ""
    public_appsync_graphql_url: str = ""
    public_appsync_realtime_url: str = ""
    public_cognito_endpoint: str = ""

    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        # Derived values: Cognito's issuer and JWKS URL follow from the pool id
        # unless the environment names them (the local cloud does).
        if not self.jwt_issuer:
            object.__setattr__(
                self,
                "jwt_issuer",
                f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}",
            )
        if not self.jwks_url:
            object.__setattr__(
                self, "jwks_url", self.jwt_issuer.rstrip("/") + "/.well-known/jwks.json"
            )
        if self.sender_mode not in SENDER_MODES:
            raise SettingsError(
                f"sender_mode must be one of {', '.join(SENDER_MODES)}, got {self.sender_mode!r}"
            )
        if self.limits.default_max_tokens > self.limits.max_tokens_limit:
            raise SettingsError("DEFAULT_MAX_TOKENS must not exceed MAX_TOKENS_LIMIT")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        limits = Limits(
            max_input_chars=_int(env, "MAX_INPUT_CHARS", d.limits.max_input_chars, 1, 1_000_000),
            max_tokens_limit=_int(env, "MAX_TOKENS_LIMIT", d.limits.max_tokens_limit, 1, 200_000),
            default_max_tokens=_int(
                env, "DEFAULT_MAX_TOKENS", d.limits.default_max_tokens, 1, 200_000
            ),
            max_streams_per_user=_int(
                env, "MAX_STREAMS_PER_USER", d.limits.max_streams_per_user, 1, 1000
            ),
            max_messages=_int(env, "MAX_MESSAGES", d.limits.max_messages, 1, 10_000),
        )
        return cls(
            region=_str(env, "AWS_REGION", _str(env, "AWS_DEFAULT_REGION", d.region)),
            streams_table=_str(env, "STREAMS_TABLE", d.streams_table),
            frames_table=_str(env, "FRAMES_TABLE", d.frames_table),
            model_id=_str(env, "MODEL_ID", d.model_id),
            model_label=_str(env, "MODEL_LABEL", d.model_label),
            user_pool_id=_str(env, "USER_POOL_ID", d.user_pool_id),
            client_id=_str(env, "USER_POOL_CLIENT_ID", d.client_id),
            jwt_issuer=_str(env, "JWT_ISSUER", ""),
            jwks_url=_str(env, "JWKS_URL", ""),
            jwt_leeway_s=_int(env, "JWT_LEEWAY_S", d.jwt_leeway_s, 0, 60),
            jwks_refetch_interval_s=_int(
                env, "JWKS_REFETCH_INTERVAL_S", d.jwks_refetch_interval_s, 0, 86_400
            ),
            flush_interval_ms=_int(env, "FLUSH_INTERVAL_MS", d.flush_interval_ms, 1, 10_000),
            flush_max_chars=_int(env, "FLUSH_MAX_CHARS", d.flush_max_chars, 1, 100_000),
            sender_mode=_choice(env, "SENDER_MODE", d.sender_mode, SENDER_MODES),
            heartbeat_interval_s=_float(
                env, "HEARTBEAT_INTERVAL_S", d.heartbeat_interval_s, 0.01, 600
            ),
            stream_ttl_s=_int(env, "STREAM_TTL_S", d.stream_ttl_s, 60, 30 * 86_400),
            model_first_event_timeout_s=_float(
                env, "MODEL_FIRST_EVENT_TIMEOUT_S", d.model_first_event_timeout_s, 0.01, 900
            ),
            model_idle_timeout_s=_float(
                env, "MODEL_IDLE_TIMEOUT_S", d.model_idle_timeout_s, 0.01, 900
            ),
            model_throttle_retries=_int(
                env, "MODEL_THROTTLE_RETRIES", d.model_throttle_retries, 0, 10
            ),
            model_retry_base_ms=_int(env, "MODEL_RETRY_BASE_MS", d.model_retry_base_ms, 0, 60_000),
            model_retry_max_ms=_int(env, "MODEL_RETRY_MAX_MS", d.model_retry_max_ms, 0, 600_000),
            cors_allow_origin=_str(env, "CORS_ALLOW_ORIGIN", d.cors_allow_origin),
            websocket_management_url=_str(env, "WEBSOCKET_MANAGEMENT_URL", ""),
            generate_function_name=_str(env, "GENERATE_FUNCTION_NAME", d.generate_function_name),
            work_queue_url=_str(env, "WORK_QUEUE_URL", ""),
            work_queue_arn=_str(env, "WORK_QUEUE_ARN", d.work_queue_arn),
            appsync_graphql_url=_str(env, "APPSYNC_GRAPHQL_URL", ""),
            worker_batch_size=_int(env, "WORKER_BATCH_SIZE", d.worker_batch_size, 1, 10),
            worker_timeout_s=_int(env, "WORKER_TIMEOUT_S", d.worker_timeout_s, 1, 900),
            worker_max_receive_count=_int(
                env, "WORKER_MAX_RECEIVE_COUNT", d.worker_max_receive_count, 1, 1000
            ),
            claim_lease_s=_float(env, "CLAIM_LEASE_S", d.claim_lease_s, 0.05, 900),
            publish_retries=_int(env, "PUBLISH_RETRIES", d.publish_retries, 0, 10),
            publish_timeout_s=_float(env, "PUBLISH_TIMEOUT_S", d.publish_timeout_s, 0.1, 60),
            public_rest_url=_str(env, "PUBLIC_REST_URL", ""),
            public_function_url=_str(env, "PUBLIC_FUNCTION_URL", ""),
            public_rest_stream_url=_str(env, "PUBLIC_REST_STREAM_URL", ""),
            public_websocket_url=_str(env, "PUBLIC_WEBSOCKET_URL", ""),
            public_appsync_graphql_url=_str(env, "PUBLIC_APPSYNC_GRAPHQL_URL", ""),
            public_appsync_realtime_url=_str(env, "PUBLIC_APPSYNC_REALTIME_URL", ""),
            public_cognito_endpoint=_str(env, "PUBLIC_COGNITO_ENDPOINT", ""),
            limits=limits,
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the local cloud use this)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **changes)
