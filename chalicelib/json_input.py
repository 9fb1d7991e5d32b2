"""JSON from outside, parsed with a nesting limit (docs/protocol.md).

Python's ``json`` recurses once per nesting level and raises ``RecursionError`` on deep
input, which no handler expects. The depth is measured first, without recursion and
without parsing, so deeply nested input is a ``BAD_REQUEST`` naming the limit. The Node
function applies the same rule (node_function/src/json_input.mjs), held to
``tests/vectors/json_nesting.json``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.protocol import LIMITS

MAX_JSON_DEPTH: int = LIMITS["maxJsonDepth"]

# A JSON string (with escapes), or one bracket outside strings.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar). Brackets
    inside strings do not count; the text need not be valid JSON."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        ch = match.group()
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def nesting_error(limit: int = MAX_JSON_DEPTH) -> StreamError:
    return StreamError(
        ErrorCode.BAD_REQUEST, f"the JSON is nested deeper than the limit of {limit} levels"
    )


def loads(text: str | bytes, what: str = "the message", limit: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON from a client; BAD_REQUEST if it is not JSON or nested beyond ``limit``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamError(ErrorCode.BAD_REQUEST, f"{what} must be JSON") from None
    if json_depth(text) > limit:
        raise nesting_error(limit)
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise StreamError(ErrorCode.BAD_REQUEST, f"{what} must be JSON") from None
