"""The AppSync entry points as Chalice wires them: the resolver function and the SQS
worker with partial batch failures, through the Chalice test client."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import services
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from local.provision import create_tables
from tests.support.fake_model import FakeStreamer, answer


class Publisher:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def publish(self, stream_id: str, owner: str, frames: Any) -> None:
        self.frames.extend(frames)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(flush_interval_ms=1, model_id="test-model")
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(ddb, settings)
        store = StreamStore(settings, client_factory=lambda: ddb)
        queued: list[dict[str, Any]] = []
        publisher = Publisher()
        monkeypatch.setattr(services, "settings", lambda: settings)
        monkeypatch.setattr(services, "store", lambda: store)
        monkeypatch.setattr(services, "enqueue_work", queued.append)
        monkeypatch.setattr(services, "publisher", lambda: publisher)
        monkeypatch.setattr(services, "streamer", lambda: FakeStreamer(answer("Hi", " there")))
        with Client(app_module.app) as client:
            yield client, store, queued, publisher


def start_event(stream_id: str, sub: str = "alice") -> dict[str, Any]:
    return {
        "field": "startStream",
        "arguments": {"input": {"streamId": stream_id, "prompt": "Hello"}},
        "identity": {"sub": sub, "tokenUse": "id"},
    }


def test_the_resolver_function_starts_a_stream(env):
    client, store, queued, _ = env
    sid = str(uuid.uuid4())
    resp = client.lambda_.invoke("appsync_resolver", start_event(sid))
    assert resp.payload == {"data": {"streamId": sid, "status": "running", "created": True}}
    assert queued[0]["streamId"] == sid
    assert store.get(sid).transport == "appsync"


def test_the_resolver_function_answers_errors_as_data(env):
    client, _, queued, _ = env
    resp = client.lambda_.invoke("appsync_resolver", {"field": "startStream", "identity": {}})
    assert resp.payload["error"]["code"] == "UNAUTHORIZED"
    assert queued == []


def test_the_worker_reports_only_the_failed_records_of_a_batch(env):
    client, store, queued, publisher = env
    good = str(uuid.uuid4())
    client.lambda_.invoke("appsync_resolver", start_event(good))
    event = client.events.generate_sqs_event(
        message_bodies=[json.dumps(queued[0]), "not a job", json.dumps(queued[0])],
        queue_name="llm-stream-work",
    )
    # Chalice gives every record the same id; Lambda's are distinct.
    for n, record in enumerate(event["Records"]):
        record["messageId"] = f"msg-{n}"
        record["attributes"]["ApproximateReceiveCount"] = "1"
    resp = client.lambda_.invoke("appsync_worker", event)
    assert resp.payload == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    # The duplicate (msg-2) found the stream finished: one generation, no duplicate frames.
    seqs = [f["seq"] for f in publisher.frames]
    assert seqs == list(range(len(seqs)))
    assert "".join(f.get("text", "") for f in publisher.frames) == "Hi there"
    assert store.get(good).status == "done"


def test_a_batch_whose_every_record_failed_fails_the_invocation(env):
    client, _, _, _ = env
    event = client.events.generate_sqs_event(message_bodies=["x", "y"], queue_name="q")
    for n, record in enumerate(event["Records"]):
        record["messageId"] = f"msg-{n}"
    with pytest.raises(Exception, match="All records failed"):
        client.lambda_.invoke("appsync_worker", event)
