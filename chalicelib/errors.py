"""The error codes of docs/protocol.md and the one exception type that carries them.

Every layer raises ``StreamError`` with a code from ``ErrorCode``; transports
turn it into an ``error`` frame or an HTTP status. Messages are written for
users: no stack traces, ARNs, SDK exception text or prompt text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    TOO_MANY_FOLLOWERS = "TOO_MANY_FOLLOWERS"
    THROTTLED = "THROTTLED"
    MODEL_ERROR = "MODEL_ERROR"
    MODEL_TIMEOUT = "MODEL_TIMEOUT"
    INTERNAL = "INTERNAL"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_MANY_STREAMS: 429,
    ErrorCode.TOO_MANY_FOLLOWERS: 429,
    ErrorCode.THROTTLED: 429,
    ErrorCode.MODEL_ERROR: 502,
    ErrorCode.MODEL_TIMEOUT: 504,
    ErrorCode.INTERNAL: 500,
}

# Worth retrying the same request later, unchanged.
RETRYABLE = frozenset(
    {
        ErrorCode.TOO_MANY_STREAMS,
        ErrorCode.TOO_MANY_FOLLOWERS,
        ErrorCode.THROTTLED,
        ErrorCode.MODEL_TIMEOUT,
    }
)


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
