"""The stream store: the streams and frames tables (docs/architecture.md, stream store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from chalicelib.stream_store import FRAMES_TABLE_SCHEMA, STREAMS_TABLE_SCHEMA

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


class StreamStore(Construct):
    """Both tables, built from chalicelib's schema constants, so AWS and the local cloud create
    the same key schema from one definition."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.streams_table = self._table("StreamsTable", STREAMS_TABLE_SCHEMA)
        self.frames_table = self._table("FramesTable", FRAMES_TABLE_SCHEMA)

    def environment(self) -> dict[str, str]:
        return {
            "STREAMS_TABLE": self.streams_table.table_name,
            "FRAMES_TABLE": self.frames_table.table_name,
        }

    def grant_read_write(self, role: iam.IGrantable) -> None:
        self.streams_table.grant_read_write_data(role)
        self.frames_table.grant_read_write_data(role)

    def _table(self, construct_id: str, schema: Mapping[str, Any]) -> dynamodb.Table:
        types = {a["AttributeName"]: a["AttributeType"] for a in schema["AttributeDefinitions"]}
        keys = {k["KeyType"]: k["AttributeName"] for k in schema["KeySchema"]}
        if set(types) != set(keys.values()) or set(schema) - {
            "KeySchema",
            "AttributeDefinitions",
            "TimeToLiveAttribute",
        }:
            # Indexes or extra attributes would need mapping here: fail rather than diverge.
            raise ValueError(f"{construct_id}: schema has parts this stack does not map: {schema}")

        def attribute(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[types[name]])

        return dynamodb.Table(
            self,
            construct_id,
            partition_key=attribute(keys["HASH"]),
            sort_key=attribute(keys["RANGE"]) if "RANGE" in keys else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema["TimeToLiveAttribute"],
            # Streams and frames expire after 24 h (TTL): nothing worth keeping on teardown.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
