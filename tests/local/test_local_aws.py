"""The local DynamoDB under concurrent stream starts: moto alone loses some of them
(its TransactWriteItems copies the table while other threads write it)."""

from __future__ import annotations

import concurrent.futures
import uuid

import boto3
import pytest

from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore
from local.aws import LocalAws
from local.provision import create_tables

CREDS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


@pytest.fixture
def aws():
    server = LocalAws()
    port = server.start()
    yield f"http://127.0.0.1:{port}/"
    server.stop()


def test_concurrent_stream_starts_all_succeed(aws):
    settings = Settings()
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws, **CREDS)
    create_tables(ddb, settings)

    def start(n: int) -> bool:
        # A client per thread, as each Lambda has its own.
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws, **CREDS)
        store = StreamStore(settings, client_factory=lambda: client)
        for _ in range(15):
            sid = str(uuid.uuid4())
            _, created = store.create(sid, f"user-{n}", "bench")
            # Writes of running streams, racing the next thread's create.
            store.request_cancel(sid, f"user-{n}")
            store.finish(sid, f"user-{n}", "done", last_seq=0)
            if not created:
                return False
        return True

    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(start, range(24)))
    assert all(results)


def test_sqs_long_polls_do_not_hold_up_dynamodb(aws):
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws, **CREDS)
    url = sqs.create_queue(QueueName="idle")["QueueUrl"]
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws, **CREDS)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        poll = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=5)
        assert "TableNames" in ddb.list_tables()  # answered while the poll waits
        assert not poll.done()
        assert poll.result(timeout=10).get("Messages") is None


def test_written_items_are_not_kept_by_moto_beyond_the_table(aws):
    """moto tracks every model object it creates unless told not to: every item written
    and every table copy of TransactWriteItems (the local cloud's growth per stream)."""
    from moto.dynamodb.models.dynamo_type import Item

    settings = Settings()
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=aws, **CREDS)
    create_tables(ddb, settings)
    store = StreamStore(settings, client_factory=lambda: ddb)
    before = len(getattr(Item, "instances_tracked", []))
    for n in range(20):
        store.create(str(uuid.uuid4()), f"user-tracked-{n}", "bench")
    assert len(getattr(Item, "instances_tracked", [])) == before
