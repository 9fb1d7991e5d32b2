"""The REST API's logic (docs/protocol.md): what each route answers, without Chalice.

``app.py`` parses the request and calls these; errors are ``StreamError``s that
the HTTP middleware turns into ``{"error": {...}}`` with the matching status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.endings import end_if_abandoned
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import parse_after_seq, parse_stream_id
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamRecord, StreamStore

MAX_FRAMES_PER_READ = 500


def _rest_stream_url(rest_url: str) -> str:
    """On AWS the streaming routes are on the REST API itself, under ``/streams``."""
    return f"{rest_url.rstrip('/')}/streams" if rest_url else ""


def public_config(settings: Settings, rest_url: str) -> dict[str, Any]:
    """Everything a client needs to connect; nothing secret."""
    limits = settings.limits
    return {
        "region": settings.region,
        "cognito": {
            "userPoolId": settings.user_pool_id,
            "userPoolClientId": settings.client_id,
            # Empty on AWS (clients use Cognito's regional endpoint); set locally.
            "endpoint": settings.public_cognito_endpoint,
        },
        "model": {"id": settings.model_id, "label": settings.model_label or settings.model_id},
        "endpoints": {
            "rest": rest_url,
            "functionUrl": settings.public_function_url,
            # POST to start; GET {restStream}/{streamId}/events to follow (docs/protocol.md).
            "restStream": settings.public_rest_stream_url or _rest_stream_url(rest_url),
            "websocket": settings.public_websocket_url,
            "appsync": {
                "graphql": settings.public_appsync_graphql_url,
                "realtime": settings.public_appsync_realtime_url,
            },
        },
        "limits": {
            "maxInputChars": limits.max_input_chars,
            "maxTokens": limits.max_tokens_limit,
            "defaultMaxTokens": limits.default_max_tokens,
            "maxStreamsPerUser": limits.max_streams_per_user,
            "maxFollowersPerStream": limits.max_followers_per_stream,
            "maxFollowersPerUser": limits.max_followers_per_user,
            "maxMessages": limits.max_messages,
        },
        "flushIntervalMs": settings.flush_interval_ms,
        "heartbeatIntervalS": settings.heartbeat_interval_s,
    }


def after_seq_query(query: Mapping[str, str] | None) -> int:
    """``?afterSeq=N`` of a REST read; -1 when absent."""
    raw = (query or {}).get("afterSeq")
    if raw is None or raw == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise StreamError(ErrorCode.BAD_REQUEST, "afterSeq must be an integer") from None
    return parse_after_seq(value)


def snapshot(
    store: StreamStore,
    owner: str,
    stream_id: Any,
    after_seq: Any,
    *,
    follower: tuple[str, float] | None = None,
) -> tuple[StreamRecord, list[dict[str, Any]], bool]:
    """The caller's own stream, its stored frames after ``after_seq`` (at most
    ``MAX_FRAMES_PER_READ``) and whether more are stored. REST and GraphQL reads.

    Frames are read by the record's generation, so frames an earlier stream of the same
    id left behind are never returned. With ``follower`` (id, lease) the read holds a
    follower slot (``TOO_MANY_FOLLOWERS`` when none is free)."""
    stream_id = parse_stream_id(stream_id)
    after = parse_after_seq(after_seq)
    record = end_if_abandoned(store, store.get_owned(stream_id, owner))
    if follower is None:
        frames = store.frames_after(record, after, limit=MAX_FRAMES_PER_READ + 1)
    else:
        with store.following(owner, stream_id, *follower):
            frames = store.frames_after(record, after, limit=MAX_FRAMES_PER_READ + 1)
    return record, frames[:MAX_FRAMES_PER_READ], len(frames) > MAX_FRAMES_PER_READ


def read_stream(
    store: StreamStore, owner: str, stream_id: str, query: Mapping[str, str] | None
) -> dict[str, Any]:
    """Status and stored frames after ``afterSeq`` of the caller's own stream."""
    record, frames, has_more = snapshot(store, owner, stream_id, after_seq_query(query))
    return {**record.public(), "frames": frames, "hasMore": has_more}


def cancel_stream(store: StreamStore, owner: str, stream_id: str) -> dict[str, Any]:
    """Ask the producer of the caller's stream to stop; repeating it is harmless."""
    stream_id = parse_stream_id(stream_id)
    return store.request_cancel(stream_id, owner).public()
