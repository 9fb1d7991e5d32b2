"""The shared vectors (tests/vectors/), which the Node implementation runs too."""

import json
from pathlib import Path

import pytest

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.flush import FlushPolicy
from chalicelib.frames import FrameError, parse_start_request, validate_frame
from chalicelib.settings import Limits

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


FRAMES = load("frames.json")
STARTS = load("start_requests.json")
FLUSH = load("flush.json")
LIMITS = Limits(
    max_input_chars=STARTS["limits"]["maxInputChars"],
    max_tokens_limit=STARTS["limits"]["maxTokensLimit"],
    default_max_tokens=STARTS["limits"]["defaultMaxTokens"],
    max_messages=STARTS["limits"]["maxMessages"],
)


@pytest.mark.parametrize("case", FRAMES["valid"], ids=lambda c: c["name"])
def test_valid_frame_vector_passes(case):
    assert validate_frame(case["frame"]) == case["frame"]


@pytest.mark.parametrize("case", FRAMES["invalid"], ids=lambda c: c["name"])
def test_invalid_frame_vector_is_rejected_naming_the_rule(case):
    with pytest.raises(FrameError) as exc:
        validate_frame(case["frame"])
    assert case["error"] in str(exc.value)


@pytest.mark.parametrize("case", STARTS["cases"], ids=lambda c: c["name"])
def test_start_request_vector(case):
    if case["ok"]:
        normalized = parse_start_request(case["request"], LIMITS).to_dict()
        if "streamId" not in case["normalized"]:
            normalized.pop("streamId")
        assert normalized == case["normalized"]
    else:
        with pytest.raises(StreamError) as exc:
            parse_start_request(case["request"], LIMITS)
        assert exc.value.code is ErrorCode.BAD_REQUEST
        assert case["error"] in exc.value.message


@pytest.mark.parametrize("case", FLUSH["cases"], ids=lambda c: c["name"])
def test_flush_vector(case):
    policy = FlushPolicy(case["intervalMs"], case["maxChars"])
    for step in case["steps"]:
        if step.get("drain"):
            out = policy.drain()
        elif step.get("tick"):
            out = policy.due(step["t"])
        else:
            out = policy.add(step["text"], step["t"])
        assert out == step["out"], step
