"""The local SQS event source against a real moto server and a tiny Chalice app.

Every queue has a 1 s visibility timeout, so a message a batch failed comes back
after about a second, as SQS would return it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice import Chalice
from chalice.app import SQSEvent
from moto.server import ThreadedMotoServer

from local.lambdas import LocalLambdas, ResourceNotFoundException
from local.provision import DLQ_RETENTION_S, WorkQueues, create_queues
from local.sqs_source import BatchOutcome, SqsEventSource, batch_outcome, lambda_record

REGION = "us-east-1"
CREDS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}

app = Chalice(app_name="sqs-toy")
behaviour: dict[str, Callable[[dict[str, Any]], Any]] = {}


@app.on_sqs_message(queue="toy-work", batch_size=10, name="worker")
def worker(event: SQSEvent) -> Any:
    return behaviour["worker"](event.to_dict())


class Deliveries:
    """Every event the function got, in order, with when it got it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []

    def add(self, event: dict[str, Any]) -> None:
        """Record the event (usable as the handler: returns None, a complete success)."""
        with self._lock:
            self.events.append((time.monotonic(), event))

    def receive_counts(self) -> dict[str, list[str]]:
        """Body -> the ApproximateReceiveCount of each delivery of it."""
        counts: dict[str, list[str]] = {}
        with self._lock:
            for _, event in self.events:
                for record in event["Records"]:
                    counts.setdefault(record["body"], []).append(
                        record["attributes"]["ApproximateReceiveCount"]
                    )
        return counts

    def times_of(self, body: str) -> list[float]:
        with self._lock:
            return [t for t, e in self.events for r in e["Records"] if r["body"] == body]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def send(sqs: Any, queues: WorkQueues, *bodies: str) -> list[str]:
    """Send the bodies (before the source starts, so they arrive as one batch)."""
    response = sqs.send_message_batch(
        QueueUrl=queues.url,
        Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)],
    )
    assert not response.get("Failed")
    return [entry["MessageId"] for entry in response["Successful"]]


def queue_is_empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield boto3.client("sqs", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}", **CREDS)
    server.stop()


@pytest.fixture
def lambdas() -> Iterator[LocalLambdas]:
    local = LocalLambdas(app, timeouts={"worker": 1})
    yield local
    local.close(timeout=5)


@pytest.fixture
def queues(sqs: Any) -> WorkQueues:
    return create_queues(sqs, name=f"work-{uuid.uuid4().hex[:12]}", visibility_timeout_s=1)


@pytest.fixture
def start_source(
    lambdas: LocalLambdas, sqs: Any, queues: WorkQueues
) -> Iterator[Callable[..., SqsEventSource]]:
    started: list[SqsEventSource] = []

    def start(handler: Callable[[dict[str, Any]], Any], **options: Any) -> SqsEventSource:
        behaviour["worker"] = handler
        source = SqsEventSource(
            lambdas,
            sqs,
            queue_url=options.pop("queue_url", queues.url),
            queue_arn=options.pop("queue_arn", queues.arn),
            function_name="worker",
            **options,
        )
        source.start()
        started.append(source)
        return source

    yield start
    for source in started:
        assert source.stop(timeout=5)
    behaviour.clear()


# -- provisioning ---------------------------------------------------------------------------


def test_create_queues_makes_a_work_queue_that_redrives_to_its_dlq(sqs):
    queues = create_queues(sqs, name="prov-a", visibility_timeout_s=180, max_receive_count=4)
    assert queues.url.endswith("/prov-a")
    assert queues.dlq_url.endswith("/prov-a-dlq")
    assert queues.arn == "arn:aws:sqs:us-east-1:123456789012:prov-a"
    work = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["All"])["Attributes"]
    assert work["VisibilityTimeout"] == "180"
    assert json.loads(work["RedrivePolicy"]) == {
        "deadLetterTargetArn": queues.dlq_arn,
        "maxReceiveCount": 4,
    }
    dlq = sqs.get_queue_attributes(QueueUrl=queues.dlq_url, AttributeNames=["All"])["Attributes"]
    assert dlq["MessageRetentionPeriod"] == str(DLQ_RETENTION_S) == "1209600"


def test_create_queues_twice_is_idempotent_and_converges_on_new_settings(sqs):
    first = create_queues(sqs, name="prov-b", visibility_timeout_s=30)
    assert create_queues(sqs, name="prov-b", visibility_timeout_s=30) == first
    assert create_queues(sqs, name="prov-b", visibility_timeout_s=90, max_receive_count=5) == first
    work = sqs.get_queue_attributes(QueueUrl=first.url, AttributeNames=["All"])["Attributes"]
    assert work["VisibilityTimeout"] == "90"
    assert json.loads(work["RedrivePolicy"])["maxReceiveCount"] == 5


# -- the event and the batch response, without a queue ------------------------------------


def test_a_record_carries_list_and_binary_attributes_base64_encoded():
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh",
        "MD5OfBody": "md5",
        "Body": "b",
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MessageAttributes": {
            "lists": {
                "DataType": "Binary",
                "BinaryValue": b"1100",
                "StringListValues": ["abc"],
                "BinaryListValues": [b"0", b"1"],
            }
        },
    }
    record = lambda_record(message, queue_arn="arn:aws:sqs:eu-west-1:1:q", region="eu-west-1")
    assert record["messageAttributes"] == {
        "lists": {
            "binaryValue": "MTEwMA==",
            "stringListValues": ["abc"],
            "binaryListValues": ["MA==", "MQ=="],
            "dataType": "Binary",
        }
    }
    assert "md5OfMessageAttributes" not in record  # SQS sent none
    assert (record["eventSourceARN"], record["awsRegion"]) == (
        "arn:aws:sqs:eu-west-1:1:q",
        "eu-west-1",
    )


@pytest.mark.parametrize(
    "result",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, {"statusCode": 200}],
)
def test_a_response_without_failures_is_a_complete_success(result):
    assert batch_outcome(result, ["a", "b"], report_batch_item_failures=True) == BatchOutcome(
        frozenset()
    )


def test_listed_failures_are_the_only_messages_kept():
    result = {"batchItemFailures": [{"itemIdentifier": "b"}]}
    outcome = batch_outcome(result, ["a", "b", "c"], report_batch_item_failures=True)
    assert outcome == BatchOutcome(frozenset({"b"}))


@pytest.mark.parametrize(
    "result",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemId": "a"}]},
        {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "not-in-batch"}]},
        {"batchItemFailures": ["a"]},
        {"batchItemFailures": "a"},
        "ok",
    ],
)
def test_a_malformed_or_foreign_item_identifier_fails_the_whole_batch(result):
    outcome = batch_outcome(result, ["a", "b"], report_batch_item_failures=True)
    assert outcome.retry == {"a", "b"}
    assert outcome.problem


def test_without_report_batch_item_failures_the_response_is_ignored():
    result = {"batchItemFailures": [{"itemIdentifier": "a"}]}
    assert batch_outcome(result, ["a"], report_batch_item_failures=False).retry == frozenset()


# -- delivery ------------------------------------------------------------------------------


def test_a_batch_arrives_as_lambdas_sqs_event_and_is_deleted_on_success(sqs, queues, start_source):
    sent = sqs.send_message(
        QueueUrl=queues.url,
        MessageBody='{"v": 1}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "work"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
            "n": {"DataType": "Number.int", "StringValue": "7"},
        },
    )
    deliveries = Deliveries()
    source = start_source(deliveries.add)
    wait_for(lambda: source.stats()["deleted"] == 1, "the message to be deleted")

    [(_, event)] = deliveries.events
    assert list(event) == ["Records"]
    [record] = event["Records"]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["messageId"] == sent["MessageId"]
    assert record["receiptHandle"]
    assert record["body"] == '{"v": 1}'
    assert record["md5OfBody"] == hashlib.md5(b'{"v": 1}').hexdigest() == sent["MD5OfMessageBody"]
    assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queues.arn
    assert record["awsRegion"] == REGION
    attributes = record["attributes"]
    assert attributes["ApproximateReceiveCount"] == "1"
    assert attributes["SenderId"]
    assert attributes["SentTimestamp"].isdigit()
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "work",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "binaryValue": "AP8=",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
        "n": {
            "stringValue": "7",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number.int",
        },
    }
    assert queue_is_empty(sqs, queues.url)
    assert source.stats() == {
        "received": 1,
        "invocations": 1,
        "deleted": 1,
        "failedItems": 0,
        "functionErrors": 0,
    }


def test_batches_hold_at_most_batch_size_messages(sqs, queues, start_source):
    send(sqs, queues, *(f"m{i}" for i in range(7)))
    deliveries = Deliveries()
    source = start_source(deliveries.add, batch_size=3)
    wait_for(lambda: source.stats()["deleted"] == 7, "all 7 messages to be deleted")
    sizes = [len(event["Records"]) for _, event in deliveries.events]
    assert max(sizes) == 3
    assert sum(sizes) == 7
    assert source.stats()["invocations"] == len(sizes) >= 3


def test_a_partial_batch_failure_deletes_the_successes_and_redelivers_the_failures(
    sqs, queues, start_source
):
    send(sqs, queues, "ok-1", "fail", "ok-2")
    deliveries = Deliveries()

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        deliveries.add(event)
        records = event["Records"]
        failed = [
            {"itemIdentifier": r["messageId"]}
            for r in records
            if r["body"] == "fail" and r["attributes"]["ApproximateReceiveCount"] == "1"
        ]
        return {"batchItemFailures": failed}

    source = start_source(handler)
    wait_for(lambda: source.stats()["deleted"] == 3, "all 3 messages to be deleted")
    assert deliveries.receive_counts() == {"ok-1": ["1"], "ok-2": ["1"], "fail": ["1", "2"]}
    first, second = deliveries.times_of("fail")
    assert second - first >= 0.9  # back only once its visibility timeout (1 s) ran out
    assert source.stats()["failedItems"] == 1
    assert source.stats()["functionErrors"] == 0
    assert queue_is_empty(sqs, queues.url)


def test_a_function_error_returns_the_whole_batch(sqs, queues, start_source):
    send(sqs, queues, "a", "b")
    deliveries = Deliveries()

    def handler(event: dict[str, Any]) -> None:
        deliveries.add(event)
        records = event["Records"]
        if records[0]["attributes"]["ApproximateReceiveCount"] == "1":
            raise RuntimeError("first attempt fails")

    source = start_source(handler)
    wait_for(lambda: source.stats()["deleted"] == 2, "both messages to be deleted")
    assert deliveries.receive_counts() == {"a": ["1", "2"], "b": ["1", "2"]}
    assert len(deliveries.events[0][1]["Records"]) == 2
    assert source.stats()["functionErrors"] == 1
    assert source.stats()["failedItems"] == 2


def test_an_item_identifier_outside_the_batch_returns_the_whole_batch(sqs, queues, start_source):
    send(sqs, queues, "a", "b")
    deliveries = Deliveries()

    def handler(event: dict[str, Any]) -> dict[str, Any] | None:
        deliveries.add(event)
        records = event["Records"]
        if records[0]["attributes"]["ApproximateReceiveCount"] == "1":
            return {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]}
        return None

    source = start_source(handler)
    wait_for(lambda: source.stats()["deleted"] == 2, "both messages to be deleted")
    assert deliveries.receive_counts() == {"a": ["1", "2"], "b": ["1", "2"]}
    assert source.stats()["functionErrors"] == 0


def test_without_report_batch_item_failures_reported_failures_are_deleted(
    sqs, queues, start_source
):
    send(sqs, queues, "a")
    deliveries = Deliveries()

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        deliveries.add(event)
        records = event["Records"]
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}

    source = start_source(handler, report_batch_item_failures=False)
    wait_for(lambda: source.stats()["deleted"] == 1, "the message to be deleted")
    assert deliveries.receive_counts() == {"a": ["1"]}
    assert queue_is_empty(sqs, queues.url)


def test_after_max_receive_count_failures_the_message_is_in_the_dlq(sqs, lambdas, start_source):
    queues = create_queues(
        sqs, name=f"poison-{uuid.uuid4().hex[:12]}", visibility_timeout_s=1, max_receive_count=2
    )
    send(sqs, queues, "poison")
    deliveries = Deliveries()

    def handler(event: dict[str, Any]) -> None:
        deliveries.add(event)
        raise ValueError("always fails")

    start_source(handler, queue_url=queues.url, queue_arn=queues.arn)
    dead: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while not dead and time.monotonic() < deadline:
        dead = sqs.receive_message(QueueUrl=queues.dlq_url, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in dead] == ["poison"]
    assert deliveries.receive_counts() == {"poison": ["1", "2"]}
    assert queue_is_empty(sqs, queues.url)


# -- concurrency and lifecycle ---------------------------------------------------------------


def test_two_slow_batches_run_at_the_same_time(sqs, queues, start_source):
    send(sqs, queues, "a", "b")
    both_running = threading.Barrier(2, timeout=5)  # breaks unless both batches overlap

    def handler(event: dict[str, Any]) -> None:
        both_running.wait()

    source = start_source(handler, batch_size=1)
    wait_for(lambda: source.stats()["deleted"] == 2, "both batches to finish")
    assert source.stats()["functionErrors"] == 0
    assert source.stats()["invocations"] == 2


def test_at_max_concurrency_the_poller_stops_receiving(sqs, queues, start_source):
    send(sqs, queues, "a", "b", "c")
    lock = threading.Lock()
    running = {"now": 0, "max": 0}

    def handler(event: dict[str, Any]) -> None:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.2)  # the batch's work: a poller ignoring the limit would overlap it
        with lock:
            running["now"] -= 1

    source = start_source(handler, batch_size=1, max_concurrency=1)
    wait_for(lambda: source.stats()["deleted"] == 3, "all 3 batches to finish")
    assert running["max"] == 1
    assert source.stats()["received"] == 3  # nothing was received only to wait


def test_a_function_timeout_above_the_visibility_timeout_is_refused(sqs, queues):
    slow = LocalLambdas(app, timeouts={"worker": 5})
    try:
        source = SqsEventSource(
            slow, sqs, queue_url=queues.url, queue_arn=queues.arn, function_name="worker"
        )
        with pytest.raises(
            ValueError,
            match=r"Queue visibility timeout: 1 seconds is less than Function timeout: 5 seconds",
        ):
            source.start()
        assert source.stop(timeout=1)
    finally:
        slow.close()


def test_an_unknown_function_is_refused(sqs, queues, lambdas):
    source = SqsEventSource(
        lambdas, sqs, queue_url=queues.url, queue_arn=queues.arn, function_name="nope"
    )
    with pytest.raises(ResourceNotFoundException):
        source.start()


@pytest.mark.parametrize(
    ("option", "value"), [("batch_size", 11), ("wait_time_s", 0), ("max_concurrency", 0)]
)
def test_out_of_range_options_are_refused(sqs, queues, lambdas, option, value):
    with pytest.raises(ValueError, match=f"{option} must be"):
        SqsEventSource(
            lambdas,
            sqs,
            queue_url=queues.url,
            queue_arn=queues.arn,
            function_name="worker",
            **{option: value},
        )


def test_stop_is_prompt_while_the_poller_waits_on_an_empty_queue(start_source):
    source = start_source(lambda event: None, wait_time_s=1)
    began = time.monotonic()
    assert source.stop(timeout=5)
    assert time.monotonic() - began < 1.5  # at most the current long poll (1 s)
    assert not [t for t in threading.enumerate() if t.name == "sqs-poller-worker"]


def test_stop_waits_for_running_batches_up_to_its_timeout(sqs, queues, start_source):
    send(sqs, queues, "a")
    entered, release = threading.Event(), threading.Event()

    def handler(event: dict[str, Any]) -> None:
        entered.set()
        release.wait(5)

    source = start_source(handler)
    assert entered.wait(5)
    assert source.stop(timeout=0.1) is False
    release.set()
    assert source.stop(timeout=5) is True
    assert source.stats()["deleted"] == 1


def test_a_crashed_invocation_leaves_its_batch_for_redelivery(sqs, queues, lambdas, start_source):
    send(sqs, queues, "a")
    deliveries = Deliveries()
    spinning = threading.Event()

    def handler(event: dict[str, Any]) -> None:
        deliveries.add(event)
        records = event["Records"]
        if records[0]["attributes"]["ApproximateReceiveCount"] != "1":
            return
        spinning.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # returns (success) unless crashed
            threading.Event().wait(0.01)

    source = start_source(handler)
    assert spinning.wait(5)
    assert lambdas.crash("worker") == 1
    wait_for(lambda: source.stats()["deleted"] == 1, "the redelivered message to be deleted")
    assert deliveries.receive_counts() == {"a": ["1", "2"]}
    assert source.stats()["functionErrors"] == 1


def test_logs_name_messages_but_never_their_bodies(sqs, queues, start_source, caplog):
    caplog.set_level(logging.DEBUG, logger="local.sqs_source")
    [message_id] = send(sqs, queues, "secret prompt text")

    def handler(event: dict[str, Any]) -> dict[str, Any] | None:
        record = event["Records"][0]
        count = record["attributes"]["ApproximateReceiveCount"]
        if count == "1":
            raise ValueError(f"cannot handle {record['body']}")
        if count == "2":
            return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
        return None

    source = start_source(handler)
    wait_for(lambda: source.stats()["deleted"] == 1, "the message to be deleted")
    [error] = [r for r in caplog.records if r.getMessage().startswith("sqs batch failed")]
    assert error.errorType == "ValueError"
    assert error.messageIds == [message_id]
    [partial] = [r for r in caplog.records if r.getMessage().startswith("sqs batch partly")]
    assert partial.failedMessageIds == [message_id]
    assert not [r for r in caplog.records if "secret" in repr(r.__dict__)]
