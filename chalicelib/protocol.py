"""The protocol's shared values, read from ``protocol.json`` beside this module.

One file holds the error codes (HTTP status, retryability), the stop reasons, the
request limits, the settings schema and the default model id. Python reads it here,
the Node function reads its byte-identical copy (node_function/src/protocol.json), and
so does the client (client/src/protocol.json), so no value is written twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("protocol.json")

DATA: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))

SETTINGS: list[dict[str, Any]] = DATA["settings"]
# Written once, as the MODEL_ID setting's default.
DEFAULT_MODEL_ID: str = next(s["default"] for s in SETTINGS if s["env"] == "MODEL_ID")
ERRORS: dict[str, dict[str, Any]] = DATA["errors"]
STOP_REASONS: tuple[str, ...] = tuple(DATA["stopReasons"])
FRAME_TYPES: tuple[str, ...] = tuple(DATA["frameTypes"])
TERMINAL_TYPES: tuple[str, ...] = tuple(DATA["terminalTypes"])
LIMITS: dict[str, int] = DATA["limits"]
