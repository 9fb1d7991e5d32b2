"""The error codes of docs/protocol.md and the one exception type that carries them.

Every layer raises ``StreamError`` with a code from ``ErrorCode``; transports
turn it into an ``error`` frame or an HTTP status. Messages are written for
users: no stack traces, ARNs, SDK exception text or prompt text. The codes, their
HTTP statuses and retryability come from chalicelib/protocol.json.
"""

from __future__ import annotations

from enum import StrEnum

from chalicelib.protocol import ERRORS

ErrorCode = StrEnum("ErrorCode", {code: code for code in ERRORS})  # type: ignore[misc]

HTTP_STATUS: dict[ErrorCode, int] = {ErrorCode(c): e["status"] for c, e in ERRORS.items()}

# Worth retrying the same request later, unchanged.
RETRYABLE = frozenset(ErrorCode(c) for c, e in ERRORS.items() if e["retryable"])


class StreamError(Exception):
    """A failure with a code from docs/protocol.md and a message safe to show a user."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.retryable = self.code in RETRYABLE if retryable is None else retryable

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code.value, "message": self.message, "retryable": self.retryable}

    def __repr__(self) -> str:
        return f"StreamError({self.code.value}, {self.message!r})"
