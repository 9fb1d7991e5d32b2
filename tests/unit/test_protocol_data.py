"""One data file for the protocol's shared values (chalicelib/protocol.json), shipped with
each package that reads it: the Node function's copy and the client's copy must be
byte-identical, and the Python modules must take their values from it."""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib import errors, frames, protocol, settings

ROOT = Path(__file__).resolve().parents[2]
COPIES = [
    ROOT / "node_function" / "src" / "protocol.json",
    ROOT / "client" / "src" / "protocol.json",
]


def test_every_copy_is_byte_identical_to_the_chalicelib_file():
    original = protocol.PATH.read_bytes()
    for copy in COPIES:
        assert copy.read_bytes() == original, f"{copy.relative_to(ROOT)} differs: copy it again"


def test_error_codes_statuses_and_retryability_come_from_the_file():
    data = json.loads(protocol.PATH.read_text("utf-8"))
    assert {c.value for c in errors.ErrorCode} == set(data["errors"])
    for code, entry in data["errors"].items():
        err = errors.StreamError(errors.ErrorCode(code), "x")
        assert (err.http_status, err.retryable) == (entry["status"], entry["retryable"])


def test_too_many_followers_is_a_retryable_429():
    err = errors.StreamError(errors.ErrorCode("TOO_MANY_FOLLOWERS"), "x")
    assert (err.http_status, err.retryable) == (429, True)


def test_stop_reasons_frame_types_and_limits_come_from_the_file():
    data = protocol.DATA
    assert set(data["stopReasons"]) == frames.STOP_REASONS
    assert set(data["frameTypes"]) == frames.FRAME_TYPES
    assert data["limits"]["websocketFrameBytes"] == frames.WEBSOCKET_FRAME_LIMIT
    assert data["limits"]["maxSeq"] == frames.MAX_SEQ


def test_every_setting_of_the_schema_is_a_field_with_the_schemas_default():
    defaults = settings.Settings()
    for entry in protocol.SETTINGS:
        holder = defaults.limits if entry.get("group") == "limits" else defaults
        assert hasattr(holder, entry["python"]), entry["env"]
        if not entry.get("required") and entry["env"] not in ("JWT_ISSUER", "JWKS_URL"):
            assert getattr(holder, entry["python"]) == entry["default"], entry["env"]


def test_the_default_model_id_is_written_once():
    text = protocol.PATH.read_text("utf-8")
    assert text.count(protocol.DEFAULT_MODEL_ID) == 1
    assert settings.Settings().model_id == protocol.DEFAULT_MODEL_ID
