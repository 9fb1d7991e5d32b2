"""The nesting limit on JSON from clients, held to tests/vectors/json_nesting.json (which
node_function/test runs too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.json_input import MAX_JSON_DEPTH, json_depth, loads

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "json_nesting.json").read_text("utf-8")
)


def text_of(case: dict) -> str:
    if "text" in case:
        return case["text"]
    r = case["repeat"]
    return r["open"] * r["times"] + r.get("inner", "") + r["close"] * r["times"]


def test_the_vectors_limit_is_the_protocols():
    assert VECTORS["limit"] == MAX_JSON_DEPTH == 32


@pytest.mark.security("input")
@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_json_nesting_vector(case):
    text = text_of(case)
    assert json_depth(text) == case["depth"]
    if case["ok"]:
        assert loads(text) == json.loads(text)
    else:
        with pytest.raises(StreamError) as refused:
            loads(text)
        assert refused.value.code == ErrorCode.BAD_REQUEST
        expected = VECTORS["notJsonError"] if case.get("notJson") else VECTORS["error"]
        assert expected in refused.value.message
