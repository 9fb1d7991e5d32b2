"""The worker's publisher: SigV4-signed publishFrames calls over a pooled connection."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from botocore.credentials import ReadOnlyCredentials

from chalicelib.appsync_publish import PUBLISH_MUTATION, AppSyncPublisher, PublishError
from chalicelib.settings import SettingsError

URL = "https://abc.appsync-api.us-east-1.amazonaws.com/graphql"
FRAME = {"v": 1, "streamId": "s", "seq": 0, "type": "start", "model": "m"}


class Response:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.data = body if isinstance(body, bytes) else json.dumps(body).encode()


class Http:
    """Stands in for urllib3.PoolManager: records requests, answers from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> Response:
        self.requests.append({"method": method, "url": url, "body": body, "headers": headers})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


OK = Response(200, {"data": {"publishFrames": {"streamId": "s"}}})


def publisher(http: Http, retries: int = 2) -> tuple[AppSyncPublisher, list[float]]:
    sleeps: list[float] = []
    pub = AppSyncPublisher(
        URL,
        "us-east-1",
        lambda: ReadOnlyCredentials("AKIDEXAMPLE", "secret", None),
        retries=retries,
        http=http,
        sleep=sleeps.append,
    )
    return pub, sleeps


def test_a_publish_is_the_signed_publish_frames_mutation():
    http = Http(OK)
    pub, _ = publisher(http)
    pub.publish("s", "alice", [FRAME])
    (req,) = http.requests
    assert (req["method"], req["url"]) == ("POST", URL)
    body = json.loads(req["body"])
    assert body["query"] == PUBLISH_MUTATION
    assert body["variables"]["streamId"] == "s" and body["variables"]["owner"] == "alice"
    assert [json.loads(f) for f in body["variables"]["frames"]] == [FRAME]
    auth = req["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/appsync/aws4_request" in auth
    assert "X-Amz-Date" in req["headers"]


@pytest.mark.parametrize(
    "failure",
    [
        Response(503, b"busy"),
        Response(429, b"slow down"),
        urllib3.exceptions.NewConnectionError(None, "refused"),
        urllib3.exceptions.ConnectTimeoutError(None, "slow"),
    ],
)
def test_transient_failures_are_retried_with_backoff(failure):
    http = Http(failure, failure, OK)
    pub, sleeps = publisher(http, retries=2)
    pub.publish("s", "alice", [FRAME])
    assert len(http.requests) == 3
    assert sleeps == [0.05, 0.1]


@pytest.mark.parametrize(
    "failure",
    [
        urllib3.exceptions.ReadTimeoutError(None, "/graphql", "read timed out"),
        urllib3.exceptions.ProtocolError("connection lost"),
    ],
)
def test_a_publish_that_may_have_been_applied_is_not_repeated(failure):
    http = Http(failure, OK)
    pub, _ = publisher(http)
    with pytest.raises(PublishError, match="no answer") as info:
        pub.publish("s", "alice", [FRAME])
    assert info.value.retryable is False
    assert len(http.requests) == 1  # a retry could deliver the frame twice


def test_persistent_failure_raises_after_the_retries():
    http = Http(*[Response(500, b"")] * 3)
    pub, _ = publisher(http, retries=2)
    with pytest.raises(PublishError) as info:
        pub.publish("s", "alice", [FRAME])
    assert info.value.status == 500 and len(http.requests) == 3


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Response(401, {"errors": [{"errorType": "UnauthorizedException"}]}), "401"),
        (
            Response(200, {"errors": [{"errorType": "Unauthorized", "message": "no"}]}),
            "Unauthorized",
        ),
        (Response(200, b"<html>"), "invalid JSON"),
    ],
)
def test_refusals_are_not_retried(answer, reason):
    http = Http(answer)
    pub, _ = publisher(http)
    with pytest.raises(PublishError, match=reason):
        pub.publish("s", "alice", [FRAME])
    assert len(http.requests) == 1


def test_a_publish_over_appsyncs_payload_limit_is_refused_before_sending():
    http = Http()
    pub, _ = publisher(http)
    frames = [{**FRAME, "seq": n, "type": "delta", "text": "x" * 30_000} for n in range(9)]
    with pytest.raises(PublishError, match="240 KB"):
        pub.publish("s", "alice", frames)
    assert http.requests == []


def test_the_endpoint_is_required():
    with pytest.raises(SettingsError, match="APPSYNC_GRAPHQL_URL"):
        AppSyncPublisher("", "us-east-1", lambda: ReadOnlyCredentials("a", "b", None))
