"""The shared Bedrock vectors (tests/vectors/bedrock.json), which node_function/test runs
too: both producers classify a failure the same way and map stop reasons alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)

from chalicelib.bedrock import classify_error, map_stop_reason

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "bedrock.json").read_text("utf-8")
)


def _exception(case: dict) -> BaseException:
    where, code = case["where"], case.get("code", "")
    if where == "http":
        return ClientError({"Error": {"Code": code, "Message": "x"}}, "ConverseStream")
    if where == "stream":
        # boto3 names in-stream exceptions by their lowerCamel event member.
        member = code[0].lower() + code[1:]
        return EventStreamError({"Error": {"Code": member, "Message": "x"}}, "ConverseStream")
    if where == "timeout":
        return ReadTimeoutError(endpoint_url="https://bedrock-runtime.invalid")
    if where == "unreachable":
        return EndpointConnectionError(endpoint_url="https://bedrock-runtime.invalid")
    return RuntimeError("something else")


@pytest.mark.parametrize("case", VECTORS["errors"], ids=lambda c: c["name"])
def test_bedrock_error_vector(case):
    error, retry_before_text = classify_error(_exception(case))
    assert error.to_dict() == {k: case["expect"][k] for k in ("code", "message", "retryable")}
    assert retry_before_text is case["expect"]["retryBeforeText"]


@pytest.mark.parametrize("case", VECTORS["stopReasons"], ids=lambda c: str(c["raw"]))
def test_stop_reason_vector(case):
    assert map_stop_reason(case["raw"]) == case["stopReason"]
