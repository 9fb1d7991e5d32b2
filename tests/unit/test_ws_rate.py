"""The per-connection WebSocket message budget (chalicelib/ws_rate.py) on moto's DynamoDB,
and how the message handler answers a message over it."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from chalicelib import ws_flow
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import validate_frame
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from chalicelib.ws_rate import ConnectionRateLimiter
from local.provision import create_tables


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings() -> Settings:
    return Settings(ws_messages_per_second=5, ws_message_burst=10)


@pytest.fixture
def ddb(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client, settings)
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(settings, ddb, clock) -> ConnectionRateLimiter:
    return ConnectionRateLimiter(settings, lambda: ddb, clock=clock)


def throttled(limiter: ConnectionRateLimiter, conn: str) -> StreamError | None:
    try:
        limiter.check(conn)
    except StreamError as err:
        return err
    return None


def test_a_connection_gets_its_burst_then_throttled_naming_the_limit(limiter):
    assert [throttled(limiter, "c1") for _ in range(10)] == [None] * 10
    err = throttled(limiter, "c1")
    assert err is not None and err.code == ErrorCode.THROTTLED and err.retryable
    assert "10 messages per 2 seconds (5 per second)" in err.message


def test_the_next_window_has_a_fresh_budget(limiter, clock):
    for _ in range(10):
        limiter.check("c1")
    assert throttled(limiter, "c1") is not None
    clock.now += limiter.window_s
    assert throttled(limiter, "c1") is None


def test_connections_have_budgets_of_their_own(limiter):
    for _ in range(10):
        limiter.check("flooder")
    assert throttled(limiter, "flooder") is not None
    assert throttled(limiter, "quiet") is None


def test_state_lives_in_the_streams_table_under_its_own_prefix_with_a_ttl(
    limiter, ddb, settings, clock
):
    limiter.check("c1")
    (item,) = ddb.scan(TableName=settings.streams_table)["Items"]
    assert item["pk"]["S"].startswith("conn#c1#")
    assert item["messages"]["N"] == "1"
    assert clock.now < int(item["expiresAt"]["N"]) <= clock.now + limiter.window_s + 60


def test_a_store_failure_lets_the_message_through(settings, clock):
    class Broken:
        def update_item(self, **kwargs):
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://ddb.invalid")

    assert throttled(ConnectionRateLimiter(settings, Broken, clock=clock), "c1") is None


def test_a_throttled_message_gets_a_seqless_error_frame_and_the_connection_stays_usable(
    settings, ddb, limiter, clock
):
    posts: list[dict] = []
    deps = ws_flow.MessageDeps(
        settings,
        StreamStore(settings, client_factory=lambda: ddb),
        lambda conn, data: posts.append(json.loads(data)),
        lambda payload: None,
        rate_limit=limiter.check,
    )
    event = {
        "requestContext": {
            "connectionId": "c1",
            "authorizer": {"sub": "alice", "exp": int(clock.now) + 3600},
        },
        "body": json.dumps({"action": "cancel", "streamId": "not-a-uuid"}),
    }
    for _ in range(11):
        assert ws_flow.handle_message(event, deps) == {"statusCode": 200}
    codes = [validate_frame(f)["error"]["code"] for f in posts]
    assert codes == ["BAD_REQUEST"] * 10 + ["THROTTLED"]
    assert "seq" not in posts[-1] and posts[-1]["error"]["retryable"] is True
    clock.now += limiter.window_s
    ws_flow.handle_message(event, deps)
    assert posts[-1]["error"]["code"] == "BAD_REQUEST"  # answered again, not throttled


def test_the_store_is_the_authority_across_lambda_instances(settings, ddb, clock):
    one = ConnectionRateLimiter(settings, lambda: ddb, clock=clock)
    other = ConnectionRateLimiter(settings, lambda: ddb, clock=clock)
    for i in range(10):
        (one if i % 2 else other).check("c1")
    assert throttled(one, "c1") is not None
    assert throttled(other, "c1") is not None


def test_only_the_first_message_over_budget_in_a_window_is_answered(limiter, ddb, settings):
    for _ in range(10):
        limiter.check("c1")
    first, second = throttled(limiter, "c1"), throttled(limiter, "c1")
    assert first.first is True and second.first is False
    # Past the budget the process refuses without asking the store again.
    (item,) = ddb.scan(TableName=settings.streams_table)["Items"]
    assert item["messages"]["N"] == "10"
