"""Creates the AWS resources the app expects, on the local endpoints.

The table shapes come from ``chalicelib.stream_store``, the same constants the
CDK stack uses, so local and deployed tables cannot differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.settings import Settings
from chalicelib.stream_store import FRAMES_TABLE_SCHEMA, STREAMS_TABLE_SCHEMA


def create_tables(client: Any, settings: Settings) -> None:
    """Create the streams and frames tables (with TTL) if they do not exist."""
    existing = set(client.list_tables().get("TableNames", []))
    for name, schema in (
        (settings.streams_table, STREAMS_TABLE_SCHEMA),
        (settings.frames_table, FRAMES_TABLE_SCHEMA),
    ):
        if name in existing:
            continue
        client.create_table(
            TableName=name,
            KeySchema=schema["KeySchema"],
            AttributeDefinitions=schema["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
        )
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "Enabled": True,
                "AttributeName": schema["TimeToLiveAttribute"],
            },
        )


# SQS's maximum retention: a dead letter stays inspectable as long as SQS allows.
DLQ_RETENTION_S = 14 * 24 * 3600


@dataclass(frozen=True)
class WorkQueues:
    """The work queue (resolver -> worker) and its dead-letter queue."""

    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


def create_queues(
    sqs_client: Any,
    *,
    name: str = "llm-stream-work",
    visibility_timeout_s: int,
    max_receive_count: int = 3,
) -> WorkQueues:
    """Create the work queue and ``<name>-dlq``, or bring existing ones to this shape.

    The work queue redrives a message to the DLQ on the receive after its
    ``max_receive_count``-th (SQS does that, inside a ReceiveMessage on the work queue).
    ``visibility_timeout_s`` must be at least the worker's timeout, or Lambda (and
    ``SqsEventSource``) refuses the mapping.
    """
    if not 0 <= visibility_timeout_s <= 43_200:
        raise ValueError(
            f"visibility_timeout_s must be between 0 and 43200 s (12 h), got {visibility_timeout_s}"
        )
    if not 1 <= max_receive_count <= 1000:
        raise ValueError(f"max_receive_count must be between 1 and 1000, got {max_receive_count}")
    dlq_url = _create_or_update(
        sqs_client, f"{name}-dlq", {"MessageRetentionPeriod": str(DLQ_RETENTION_S)}
    )
    dlq_arn = _queue_arn(sqs_client, dlq_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
    url = _create_or_update(
        sqs_client,
        name,
        {"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)},
    )
    return WorkQueues(url=url, arn=_queue_arn(sqs_client, url), dlq_url=dlq_url, dlq_arn=dlq_arn)


def _create_or_update(sqs_client: Any, name: str, attributes: dict[str, str]) -> str:
    # CreateQueue is idempotent only for identical attributes; with others it fails
    # with QueueAlreadyExists, and then the existing queue is updated instead.
    try:
        return sqs_client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "QueueAlreadyExists",
            "QueueNameExists",
        ):
            raise
    url = sqs_client.get_queue_url(QueueName=name)["QueueUrl"]
    sqs_client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _queue_arn(sqs_client: Any, url: str) -> str:
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]
