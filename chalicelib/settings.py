"""One typed settings object, read from the environment.

The names, defaults and ranges are the settings schema of chalicelib/protocol.json,
which the Node function reads too. Defaults work for the local cloud except the user
pool and app client: a function started without them fails at once, naming the missing
setting (the local cloud and the CDK stack always pass them). No code path reads
``os.environ`` anywhere else, so a test can build a ``Settings`` with exactly the values
it needs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from chalicelib.protocol import SETTINGS


class SettingsError(ValueError):
    """An environment variable holds a value the application cannot use."""


_SCHEMA: dict[str, dict[str, Any]] = {entry["env"]: entry for entry in SETTINGS}
_BY_FIELD: dict[tuple[str | None, str], dict[str, Any]] = {
    (entry.get("group"), entry["python"]): entry for entry in SETTINGS
}


def _default(name: str, group: str | None = None) -> Any:
    entry = _BY_FIELD[(group, name)]
    return entry.get("default", "")


def _parse(entry: dict[str, Any], raw: str) -> Any:
    """One environment value, checked against its schema entry."""
    name, kind = entry["env"], entry["type"]
    if kind == "str":
        return raw
    if kind == "choice":
        if raw not in entry["choices"]:
            raise SettingsError(f"{name} must be one of {', '.join(entry['choices'])}, got {raw!r}")
        return raw
    try:
        value: float = int(raw) if kind == "int" else float(raw)
    except ValueError:
        noun = "an integer" if kind == "int" else "a number"
        raise SettingsError(f"{name} must be {noun}, got {raw!r}") from None
    if not math.isfinite(value) or not entry["min"] <= value <= entry["max"]:
        raise SettingsError(
            f"{name} must be between {entry['min']} and {entry['max']}, got {value}"
        )
    return value


def _read(env: Mapping[str, str], entry: dict[str, Any]) -> Any:
    raw = env.get(entry["env"])
    if raw is None or raw == "":
        if entry.get("required"):
            raise SettingsError(f"{entry['env']} is required and not set")
        return entry["default"]
    return _parse(entry, raw)


# How frames leave a producer. "coalesce" (the default) is the ordered background sender
# of docs/protocol.md; "per_token" is the baseline that bench/ measures it against: one delta
# frame per model token, delivered synchronously from the loop reading the model.
SENDER_MODES: tuple[str, ...] = tuple(_SCHEMA["SENDER_MODE"]["choices"])


@dataclass(frozen=True)
class Limits:
    """Request limits of docs/protocol.md, enforced on every transport."""

    max_input_chars: int = _default("max_input_chars", "limits")
    max_tokens_limit: int = _default("max_tokens_limit", "limits")
    default_max_tokens: int = _default("default_max_tokens", "limits")
    max_streams_per_user: int = _default("max_streams_per_user", "limits")
    max_messages: int = _default("max_messages", "limits")
    # Readers holding a follower slot (a Function URL follower, a WebSocket resume, a
    # GraphQL streamFrames read): at once per stream, and at once per user over all.
    max_followers_per_stream: int = _default("max_followers_per_stream", "limits")
    max_followers_per_user: int = _default("max_followers_per_user", "limits")


def _d(name: str) -> Any:
    return field(default=_default(name))


@dataclass(frozen=True)
class Settings:
    region: str = _d("region")
    streams_table: str = _d("streams_table")
    frames_table: str = _d("frames_table")
    model_id: str = _d("model_id")
    model_label: str = _d("model_label")

    # Required from the environment (from_env); empty only in a Settings built by a test.
    user_pool_id: str = ""
    client_id: str = ""
    jwt_issuer: str = _d("jwt_issuer")
    jwks_url: str = _d("jwks_url")
    jwt_leeway_s: int = _d("jwt_leeway_s")
    jwks_refetch_interval_s: int = _d("jwks_refetch_interval_s")

    flush_interval_ms: int = _d("flush_interval_ms")
    flush_max_chars: int = _d("flush_max_chars")
    sender_mode: str = _d("sender_mode")
    heartbeat_interval_s: float = _d("heartbeat_interval_s")
    stream_ttl_s: int = _d("stream_ttl_s")

    model_first_event_timeout_s: float = _d("model_first_event_timeout_s")
    model_idle_timeout_s: float = _d("model_idle_timeout_s")
    model_throttle_retries: int = _d("model_throttle_retries")
    model_retry_base_ms: int = _d("model_retry_base_ms")
    model_retry_max_ms: int = _d("model_retry_max_ms")

    cors_allow_origin: str = _d("cors_allow_origin")

    # WebSocket architecture: the @connections endpoint (https://{apiId}.execute-api.
    # {region}.amazonaws.com/{stage} on AWS) and the generator Lambda's name.
    websocket_management_url: str = _d("websocket_management_url")
    generate_function_name: str = _d("generate_function_name")
    # Per-connection message rate (chalicelib/ws_rate.py): a token bucket refilled at
    # this rate, holding at most the burst.
    ws_messages_per_second: float = _d("ws_messages_per_second")
    ws_message_burst: int = _d("ws_message_burst")

    # AppSync + SQS architecture: the work queue (the resolver sends, the worker's event
    # source reads), the GraphQL endpoint the worker publishes to (IAM, SigV4), and how
    # the worker is run. The queue's visibility timeout is >= 6x the worker's timeout and
    # it redrives to the DLQ after worker_max_receive_count receives (CDK sets both).
    work_queue_url: str = _d("work_queue_url")
    work_queue_arn: str = _d("work_queue_arn")
    appsync_graphql_url: str = _d("appsync_graphql_url")
    # Records of a batch run one after another and each is a whole generation: keep 1.
    worker_batch_size: int = _d("worker_batch_size")
    worker_timeout_s: int = _d("worker_timeout_s")
    worker_max_receive_count: int = _d("worker_max_receive_count")
    # A producer renews its claim on a stream every third of this; a claim not renewed
    # for this long belongs to a producer that died. Follower slots use the same lease.
    claim_lease_s: float = _d("claim_lease_s")
    publish_retries: int = _d("publish_retries")
    publish_timeout_s: float = _d("publish_timeout_s")

    # Published by GET /config so no client needs hand-copied settings.
    public_rest_url: str = _d("public_rest_url")
    public_function_url: str = _d("public_function_url")
    public_rest_stream_url: str = _d("public_rest_stream_url")
    public_websocket_url: str = _d("public_websocket_url")
    public_appsync_graphql_url: str = _d("public_appsync_graphql_url")
    public_appsync_realtime_url: str = _d("public_appsync_realtime_url")
    public_cognito_endpoint: str = _d("public_cognito_endpoint")

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
        """Every setting of the schema from ``env``; SettingsError names a bad or missing one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for entry in SETTINGS:
            target = limits if entry.get("group") == "limits" else values
            target[entry["python"]] = _read(env, entry)
        if not env.get("AWS_REGION") and env.get("AWS_DEFAULT_REGION"):
            values["region"] = env["AWS_DEFAULT_REGION"]
        return cls(**values, limits=Limits(**limits))

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the local cloud use this)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **changes)
