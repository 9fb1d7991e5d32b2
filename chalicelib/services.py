"""The process-wide services, built lazily from settings.

A Lambda process builds each at most once (warm invocations reuse the JWKS
cache and the boto3 clients); tests call ``reset`` to swap in their own.
"""

from __future__ import annotations

import functools
from typing import Any

from chalicelib.bedrock import BedrockStreamer
from chalicelib.jwt_verify import JwksCache, JwtVerifier
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from chalicelib.ws_rate import ConnectionRateLimiter


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def verifier() -> JwtVerifier:
    s = settings()
    return JwtVerifier(
        issuer=s.jwt_issuer,
        client_id=s.client_id,
        jwks=JwksCache(s.jwks_url, refetch_interval_s=s.jwks_refetch_interval_s),
        leeway_s=s.jwt_leeway_s,
    )


@functools.cache
def store() -> StreamStore:
    return StreamStore(settings())


@functools.cache
def rate_limiter() -> ConnectionRateLimiter:
    return ConnectionRateLimiter(settings(), lambda: store().client)


@functools.cache
def streamer() -> BedrockStreamer:
    return BedrockStreamer(settings())


@functools.cache
def lambda_client() -> Any:
    import boto3  # deferred: only the WebSocket message handler invokes Lambdas

    return boto3.client("lambda", region_name=settings().region)


@functools.cache
def sqs_client() -> Any:
    import boto3  # deferred: only the AppSync resolver sends to SQS

    return boto3.client("sqs", region_name=settings().region)


def enqueue_work(message: dict[str, Any]) -> None:
    """Queue one stream for the AppSync worker."""
    import json

    sqs_client().send_message(QueueUrl=settings().work_queue_url, MessageBody=json.dumps(message))


@functools.cache
def publisher() -> Any:
    from chalicelib.appsync_publish import AppSyncPublisher

    return AppSyncPublisher.from_settings(settings())


def reset() -> None:
    """Forget every built service (the next call rebuilds it from the environment)."""
    for fn in (
        settings,
        verifier,
        store,
        rate_limiter,
        streamer,
        lambda_client,
        sqs_client,
        publisher,
    ):
        fn.cache_clear()
