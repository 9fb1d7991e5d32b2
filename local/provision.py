"""Creates the AWS resources the app expects, on the local endpoints.

The table shapes come from ``chalicelib.stream_store``, the same constants the
CDK stack uses, so local and deployed tables cannot differ.
"""

from __future__ import annotations

from typing import Any

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
