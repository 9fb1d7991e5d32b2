"""Lambda's SQS event source mapping, emulated: SQS batches delivered to a local function.

What it reproduces (AWS Lambda developer guide, "Using Lambda with Amazon SQS" and
"Handling errors for an SQS event source"):

- long polling with ReceiveMessage (``MaxNumberOfMessages`` = the batch size, all
  system and message attributes), each batch handed to the function as Lambda's
  SQS event (``{"Records": [...]}``, camelCase record keys, message attributes in
  Lambda's lowercase shape with binary values base64-encoded);
- success deletes the batch (DeleteMessageBatch); an unhandled function error
  (a crash included) deletes nothing, so every message returns when its visibility
  timeout ends;
- with ``ReportBatchItemFailures`` the function's ``{"batchItemFailures":
  [{"itemIdentifier": "<messageId>"}]}`` keeps only those messages; a null or empty
  list is a complete success, and an identifier that is empty, not a string,
  missing, or not a message of the batch makes it a complete failure;
- retries and the dead-letter queue are SQS's own work (visibility timeout,
  ``RedrivePolicy``); they happen because the poller keeps receiving (SQS, and moto,
  move a message to the DLQ inside a ReceiveMessage on the source queue);
- a mapping whose function timeout exceeds the queue's visibility timeout is
  refused, with Lambda's message.

Batches run on :class:`local.lambdas.LocalLambdas`'s pool while polling goes on, up
to ``max_concurrency`` at once (capped by the pool's size, so no received batch
waits for a worker while its visibility timeout runs); at the limit the poller
stops receiving. Not emulated: Lambda's scaling of pollers and its backoff after
function errors, batching windows and batches over 10 messages, FIFO ordering.

Logs name queues, message ids and counts, never message bodies or error messages.
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local.lambdas import LocalLambdas, error_location

log = logging.getLogger(__name__)

# One ReceiveMessage returns at most 10 messages (bigger Lambda batches need a window).
MAX_BATCH_SIZE = 10
# SQS's long-polling limit.
MAX_WAIT_TIME_S = 20
# Pause after a failed ReceiveMessage (endpoint down, queue deleted) before the next.
_RETRY_RECEIVE_S = 1.0

_STATS = ("received", "invocations", "deleted", "failedItems", "functionErrors")


# -- the event and the batch response (no I/O) ------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # Lambda always sends both list fields (SQS reserves them), each value once.
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _b64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def lambda_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """A message as boto3's ReceiveMessage returns it, as a record of Lambda's SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record


def sqs_event(
    messages: Sequence[Mapping[str, Any]], *, queue_arn: str, region: str
) -> dict[str, Any]:
    """Lambda's SQS event for one received batch."""
    return {"Records": [lambda_record(m, queue_arn=queue_arn, region=region) for m in messages]}


@dataclass(frozen=True)
class BatchOutcome:
    """Which messages of a batch stay on the queue, and why the whole batch failed."""

    retry: frozenset[str]
    problem: str | None = None


def batch_outcome(
    result: Any, message_ids: Sequence[str], *, report_batch_item_failures: bool
) -> BatchOutcome:
    """Read a function's (successful) result the way Lambda's SQS poller does."""
    everything = frozenset(message_ids)
    if not report_batch_item_failures or result is None:
        return BatchOutcome(frozenset())
    if not isinstance(result, dict):
        return BatchOutcome(everything, "the response is not a JSON object")
    failures = result.get("batchItemFailures")
    if failures is None:
        return BatchOutcome(frozenset())
    if not isinstance(failures, list):
        return BatchOutcome(everything, "batchItemFailures is not a list")
    retry: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier:
            return BatchOutcome(everything, "an itemIdentifier is missing, empty or not a string")
        if identifier not in everything:
            return BatchOutcome(everything, "an itemIdentifier is not a message of the batch")
        retry.add(identifier)
    return BatchOutcome(frozenset(retry))


# -- the poller ----------------------------------------------------------------------------


class SqsEventSource:
    """Delivers batches from one SQS queue to one local function, as Lambda does.

    ``batch_size`` is 1-10, ``wait_time_s`` (ReceiveMessage's long poll, and so how
    long :meth:`stop` may wait for the poller) 1-20. The function must be deployed
    (attached to ``lambdas``) when :meth:`start` runs.
    """

    def __init__(
        self,
        lambdas: LocalLambdas,
        sqs_client: Any,
        *,
        queue_url: str,
        queue_arn: str,
        function_name: str,
        batch_size: int = 10,
        max_concurrency: int = 100,
        report_batch_item_failures: bool = True,
        wait_time_s: int = 1,
        region: str = "us-east-1",
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size must be between 1 and {MAX_BATCH_SIZE} (one ReceiveMessage), "
                f"got {batch_size}"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not 1 <= wait_time_s <= MAX_WAIT_TIME_S:
            raise ValueError(
                f"wait_time_s must be between 1 and {MAX_WAIT_TIME_S} s (long polling), "
                f"got {wait_time_s}"
            )
        self._lambdas = lambdas
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.function_name = function_name
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.report_batch_item_failures = report_batch_item_failures
        self.wait_time_s = wait_time_s
        self.region = region
        self._limit = min(max_concurrency, lambdas.max_workers)
        self._stopping = threading.Event()
        # Guards the counters and in-flight count; notified whenever a batch settles.
        self._changed = threading.Condition()
        self._in_flight = 0
        self._stats = dict.fromkeys(_STATS, 0)
        self._poller: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Check the mapping as Lambda does, then start polling.

        Raises ``ResourceNotFoundException`` for a function that is not deployed and
        ``ValueError`` when its timeout exceeds the queue's visibility timeout.
        """
        if self._poller is not None and self._poller.is_alive():
            raise RuntimeError(f"The event source for {self.queue_arn} is already polling")
        key = self._lambdas.resolve(self.function_name)
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        visibility_s = int(attributes["VisibilityTimeout"])
        timeout_s = self._lambdas.timeout_for(key)
        if timeout_s > visibility_s:
            # Lambda's own InvalidParameterValueException message, then what to do.
            raise ValueError(
                f"Queue visibility timeout: {visibility_s} seconds is less than Function "
                f"timeout: {timeout_s:g} seconds ({self.queue_arn} -> {key}); raise the "
                f"queue's VisibilityTimeout or lower the function's timeout"
            )
        self._stopping.clear()
        self._poller = threading.Thread(target=self._poll, name=f"sqs-poller-{key}", daemon=True)
        self._poller.start()
        log.info(
            "sqs event source started",
            extra={
                "queue": self.queue_arn,
                "function": key,
                "batchSize": self.batch_size,
                "maxConcurrency": self._limit,
            },
        )

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop receiving and wait up to ``timeout`` s for running batches to settle.

        The poller ends within its current long poll (``wait_time_s``); a batch it
        receives meanwhile is still delivered. Returns False when the poller or some
        batches were still running at the deadline (they finish on their own).
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        poller = self._poller
        if poller is not None:
            poller.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            settled = self._in_flight == 0
        stopped = poller is None or not poller.is_alive()
        log.info(
            "sqs event source stopped",
            extra={"queue": self.queue_arn, "stopped": stopped and settled, **self.stats()},
        )
        return stopped and settled

    def stats(self) -> dict[str, int]:
        """Counters since creation: messages ``received``, ``invocations`` (batches),
        messages ``deleted``, ``failedItems`` (messages left for redelivery: reported
        failures and failed batches), ``functionErrors`` (invocations that raised)."""
        with self._changed:
            return dict(self._stats)

    @property
    def in_flight(self) -> int:
        """Batches received and not settled yet."""
        with self._changed:
            return self._in_flight

    # -- polling -------------------------------------------------------------------------

    def _poll(self) -> None:
        failing = False
        try:
            while self._wait_for_capacity():
                try:
                    response = self._sqs.receive_message(
                        QueueUrl=self.queue_url,
                        MaxNumberOfMessages=self.batch_size,
                        WaitTimeSeconds=self.wait_time_s,
                        AttributeNames=["All"],
                        MessageAttributeNames=["All"],
                    )
                except Exception as exc:
                    if not failing:
                        log.warning(
                            "sqs receive failed; retrying",
                            extra={"queue": self.queue_arn, "errorType": type(exc).__name__},
                        )
                    failing = True
                    self._stopping.wait(_RETRY_RECEIVE_S)
                    continue
                if failing:
                    log.info("sqs receive recovered", extra={"queue": self.queue_arn})
                    failing = False
                messages = response.get("Messages") or []
                if messages:
                    self._dispatch(messages)
        except Exception as exc:  # a bug here: say so rather than stop silently
            log.error(
                "sqs poller failed",
                extra={
                    "queue": self.queue_arn,
                    "errorType": type(exc).__name__,
                    "where": error_location(exc),
                },
            )

    def _wait_for_capacity(self) -> bool:
        """Block while ``max_concurrency`` batches run; False once stopping."""
        with self._changed:
            while self._in_flight >= self._limit and not self._stopping.is_set():
                self._changed.wait()
            return not self._stopping.is_set()

    def _dispatch(self, messages: list[dict[str, Any]]) -> None:
        ids = [m["MessageId"] for m in messages]
        event = sqs_event(messages, queue_arn=self.queue_arn, region=self.region)
        with self._changed:
            self._in_flight += 1
            self._stats["received"] += len(messages)
        try:
            future = self._lambdas.submit(self.function_name, event)
        except Exception as exc:  # the pool is closed or the function is gone
            with self._changed:
                self._in_flight -= 1
                self._stats["failedItems"] += len(messages)
                self._changed.notify_all()
            log.warning(
                "sqs batch not delivered; it returns after the visibility timeout",
                extra={
                    "queue": self.queue_arn,
                    "messageIds": ids,
                    "errorType": type(exc).__name__,
                },
            )
            return
        with self._changed:
            self._stats["invocations"] += 1
        log.debug(
            "sqs batch delivered",
            extra={"queue": self.queue_arn, "function": self.function_name, "messageIds": ids},
        )
        future.add_done_callback(lambda done: self._settle(messages, done))

    # -- settling (runs in the thread that ran the function) --------------------------

    def _settle(self, messages: list[dict[str, Any]], done: concurrent.futures.Future[Any]) -> None:
        ids = [m["MessageId"] for m in messages]
        function_error = False
        try:
            if done.cancelled():  # the pool shut down before the batch ran
                outcome = BatchOutcome(frozenset(ids), "the invocation was cancelled")
            elif (exc := done.exception()) is not None:
                function_error = True
                outcome = BatchOutcome(frozenset(ids))
                log.warning(
                    "sqs batch failed: function error; every message returns after the "
                    "visibility timeout",
                    extra={
                        "queue": self.queue_arn,
                        "function": self.function_name,
                        "messageIds": ids,
                        "errorType": type(exc).__name__,
                        "where": error_location(exc),
                    },
                )
            else:
                outcome = batch_outcome(
                    done.result(),
                    ids,
                    report_batch_item_failures=self.report_batch_item_failures,
                )
                if outcome.retry:
                    log.info(
                        "sqs batch partly failed; those messages return after the visibility "
                        "timeout",
                        extra={
                            "queue": self.queue_arn,
                            "function": self.function_name,
                            "failedMessageIds": sorted(outcome.retry),
                            "problem": outcome.problem,
                        },
                    )
            done_with = [m for m in messages if m["MessageId"] not in outcome.retry]
            deleted = self._delete(done_with) if done_with else 0
            with self._changed:
                self._stats["deleted"] += deleted
                self._stats["failedItems"] += len(outcome.retry)
                self._stats["functionErrors"] += int(function_error)
        except Exception as exc:
            log.error(
                "settling an sqs batch failed",
                extra={
                    "queue": self.queue_arn,
                    "messageIds": ids,
                    "errorType": type(exc).__name__,
                    "where": error_location(exc),
                },
            )
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def _delete(self, messages: list[dict[str, Any]]) -> int:
        """DeleteMessageBatch; returns how many SQS deleted (failures are logged)."""
        try:
            response = self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        except Exception as exc:
            # At-least-once, as on AWS: the messages come back and run again.
            log.warning(
                "sqs delete failed; the messages will be delivered again",
                extra={
                    "queue": self.queue_arn,
                    "messageIds": [m["MessageId"] for m in messages],
                    "errorType": type(exc).__name__,
                },
            )
            return 0
        failed = response.get("Failed") or []
        if failed:
            log.warning(
                "sqs delete failed for some messages; they will be delivered again",
                extra={
                    "queue": self.queue_arn,
                    "messageIds": [messages[int(f["Id"])]["MessageId"] for f in failed],
                    "codes": sorted({f.get("Code", "") for f in failed}),
                },
            )
        return len(response.get("Successful") or [])
