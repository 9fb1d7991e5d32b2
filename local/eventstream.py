"""Encoder and decoder for ``application/vnd.amazon.eventstream`` messages.

Layout of one message (all integers big-endian)::

    total_length u32 | headers_length u32 | prelude_crc u32
    headers ...      | payload ...        | message_crc u32

``prelude_crc`` is the CRC32 of the first 8 bytes; ``message_crc`` the CRC32 of
every byte before it (prelude and prelude CRC included). Each header is
``name_len u8 | name | type u8 | value``; only type 7 (string: ``u16 len |
utf-8``) is used, which is all Bedrock sends.

The local Bedrock emulator writes these frames so that boto3 and the AWS SDK for
JavaScript parse them with their own, unmodified parsers.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

PRELUDE_LENGTH = 12  # total_length + headers_length + prelude_crc
MESSAGE_CRC_LENGTH = 4
HEADER_TYPE_STRING = 7

_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">II")


class DecodeError(ValueError):
    """Bytes that are not a well-formed event stream message."""


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"header name must be 1..255 bytes: {name!r}")
        if len(raw_value) > 0xFFFF:
            raise ValueError(f"header value too long for {name!r}")
        out += bytes([len(raw_name)]) + raw_name
        out += bytes([HEADER_TYPE_STRING]) + struct.pack(">H", len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One complete message: prelude, headers, payload and both CRCs."""
    raw_headers = encode_headers(headers)
    total = PRELUDE_LENGTH + len(raw_headers) + len(payload) + MESSAGE_CRC_LENGTH
    prelude = _PRELUDE.pack(total, len(raw_headers))
    prelude += _U32.pack(_crc32(prelude))
    body = prelude + raw_headers + payload
    return body + _U32.pack(_crc32(body))


def _json(payload: dict[str, Any]) -> bytes:
    # Compact separators: this is what goes on the wire, a few bytes per token count.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event frame; ``event_type`` must be the exact lowerCamel member name
    (``contentBlockDelta``), otherwise boto3 silently drops the event."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, _json(payload))


def exception(exception_type: str, message: str) -> bytes:
    """An in-stream exception frame (``throttlingException``,
    ``modelStreamErrorException``, ...). The payload key must be lowercase
    ``message`` or boto3 reports an empty message."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, _json({"message": message}))


def _decode_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        name_len = raw[pos]
        pos += 1
        name = raw[pos : pos + name_len].decode("utf-8")
        pos += name_len
        if pos >= len(raw):
            raise DecodeError("truncated header")
        kind = raw[pos]
        pos += 1
        if kind != HEADER_TYPE_STRING:
            # Only string headers are ever produced here; anything else is a bug.
            raise DecodeError(f"unsupported header type {kind} for {name!r}")
        (value_len,) = struct.unpack_from(">H", raw, pos)
        pos += 2
        value = raw[pos : pos + value_len]
        if len(value) != value_len:
            raise DecodeError("truncated header value")
        headers[name] = value.decode("utf-8")
        pos += value_len
    return headers


def decode_messages(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split ``data`` into ``(headers, payload)`` pairs, verifying both CRCs.

    Raises ``DecodeError`` on a bad CRC, a bad length or trailing partial bytes.
    """
    messages: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < PRELUDE_LENGTH + MESSAGE_CRC_LENGTH:
            raise DecodeError("truncated prelude")
        total, headers_len = _PRELUDE.unpack_from(data, pos)
        (prelude_crc,) = _U32.unpack_from(data, pos + 8)
        if prelude_crc != _crc32(data[pos : pos + 8]):
            raise DecodeError("prelude CRC mismatch")
        if total < PRELUDE_LENGTH + headers_len + MESSAGE_CRC_LENGTH:
            raise DecodeError("total length smaller than its parts")
        end = pos + total
        if end > len(data):
            raise DecodeError("truncated message")
        (message_crc,) = _U32.unpack_from(data, end - MESSAGE_CRC_LENGTH)
        if message_crc != _crc32(data[pos : end - MESSAGE_CRC_LENGTH]):
            raise DecodeError("message CRC mismatch")
        headers_start = pos + PRELUDE_LENGTH
        payload_start = headers_start + headers_len
        headers = _decode_headers(data[headers_start:payload_start])
        messages.append((headers, data[payload_start : end - MESSAGE_CRC_LENGTH]))
        pos = end
    return messages
