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
def streamer() -> BedrockStreamer:
    return BedrockStreamer(settings())


@functools.cache
def lambda_client() -> Any:
    import boto3  # deferred: only the WebSocket message handler invokes Lambdas

    return boto3.client("lambda", region_name=settings().region)


def reset() -> None:
    """Forget every built service (the next call rebuilds it from the environment)."""
    for fn in (settings, verifier, store, streamer, lambda_client):
        fn.cache_clear()
