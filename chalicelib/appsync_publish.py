"""Publishing frames to AppSync: the IAM-only ``publishFrames`` mutation, SigV4-signed,
over one pooled keep-alive HTTPS connection per process.

A new TLS connection per call (what the reference sample does) costs a handshake per
frame; the pool keeps the connection open across frames and streams of a warm Lambda.
Calls are synchronous: the ordered sender makes them one at a time, in order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from chalicelib.frames import APPSYNC_PAYLOAD_LIMIT, encode
from chalicelib.settings import Settings, SettingsError

log = logging.getLogger(__name__)

PUBLISH_MUTATION = (
    "mutation Publish($streamId: ID!, $owner: ID!, $frames: [AWSJSON!]!) "
    "{ publishFrames(streamId: $streamId, owner: $owner, frames: $frames) "
    "{ streamId owner frames } }"
)
# Worth another try: throttling, AppSync's own failures, and connection problems.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class PublishError(Exception):
    """A publish that did not reach AppSync; ``reason`` is safe to log (no payload)."""

    def __init__(
        self, reason: str, *, status: int | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # Unless said otherwise: connection failures, throttling and AppSync's own errors.
        self.retryable = (
            (status is None or status in _RETRY_STATUSES) if retryable is None else retryable
        )


class AppSyncPublisher:
    def __init__(
        self,
        url: str,
        region: str,
        credentials: Callable[[], ReadOnlyCredentials],
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        http: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url:
            raise SettingsError("APPSYNC_GRAPHQL_URL is not set: the worker cannot publish")
        self._url = url
        self._region = region
        self._credentials = credentials
        self._retries = retries
        self._sleep = sleep
        self._http = http or urllib3.PoolManager(
            num_pools=2,
            maxsize=4,
            retries=False,
            timeout=urllib3.Timeout(total=timeout_s),
        )
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> AppSyncPublisher:
        import boto3  # deferred: the credential chain is only needed by the worker

        session = boto3.session.Session()

        def credentials() -> ReadOnlyCredentials:
            creds = session.get_credentials()
            if creds is None:
                raise PublishError("no AWS credentials to sign the publish with")
            return creds.get_frozen_credentials()  # refreshed when they near expiry

        return cls(
            settings.appsync_graphql_url,
            settings.region,
            credentials,
            timeout_s=settings.publish_timeout_s,
            retries=settings.publish_retries,
        )

    def publish(self, stream_id: str, owner: str, frames: Sequence[dict[str, Any]]) -> None:
        """Publish consecutive frames of one stream; raises PublishError when it could not."""
        variables = {
            "streamId": stream_id,
            "owner": owner,
            "frames": [encode(f, APPSYNC_PAYLOAD_LIMIT) for f in frames],
        }
        body = json.dumps({"query": PUBLISH_MUTATION, "variables": variables}).encode()
        if len(body) > APPSYNC_PAYLOAD_LIMIT:
            raise PublishError(f"publish of {len(body)} bytes exceeds AppSync's 240 KB")
        for attempt in range(self._retries + 1):
            try:
                self._send(body)
                return
            except PublishError as exc:
                if not exc.retryable or attempt == self._retries:
                    raise
                log.info(
                    "publish retried",
                    extra={"streamId": stream_id, "status": exc.status, "attempt": attempt + 1},
                )
                self._sleep(0.05 * 2**attempt)

    def _send(self, body: bytes) -> None:
        request = AWSRequest(
            method="POST", url=self._url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(self._credentials(), "appsync", self._region).add_auth(request)
        self.calls += 1
        try:
            resp = self._http.request(
                "POST", self._url, body=body, headers=dict(request.headers.items())
            )
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.NewConnectionError):
            # Nothing was sent: safe to try again.
            raise PublishError("could not connect") from None
        except urllib3.exceptions.HTTPError as exc:
            # Sent, with no answer (read timeout, connection lost): AppSync may have applied
            # it, and a retry would deliver the frame twice. It is stored; clients repair
            # the gap from the store.
            raise PublishError(f"no answer: {type(exc).__name__}", retryable=False) from None
        if resp.status != 200:
            raise PublishError(f"AppSync answered {resp.status}", status=resp.status)
        try:
            answer = json.loads(resp.data)
        except ValueError:
            raise PublishError(
                "AppSync answered with invalid JSON", status=resp.status, retryable=False
            ) from None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            kinds = sorted({str(e.get("errorType", "?"))[:40] for e in errors})
            raise PublishError(
                f"publishFrames refused: {', '.join(kinds)}", status=resp.status, retryable=False
            )
