"""The event stream encoder, checked against our decoder and against botocore's own parser."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser

from local import eventstream


def botocore_parse(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


class RawBody:
    """Stands in for the urllib3 response that botocore's EventStream reads."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        pass


def converse_stream_events(data: bytes) -> EventStream:
    """What boto3's converse_stream()["stream"] would be for this response body."""
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    operation = client.meta.service_model.operation_model("ConverseStream")
    shape = operation.output_shape.members["stream"]
    # One byte per chunk: botocore must reassemble frames split anywhere.
    chunks = [data[i : i + 1] for i in range(len(data))]
    return EventStream(RawBody(chunks), shape, EventStreamJSONParser(), "ConverseStream")


def test_round_trip_returns_headers_and_payload() -> None:
    data = eventstream.encode_message({":a": "1", "b": "two"}, b"payload bytes")

    assert eventstream.decode_messages(data) == [({":a": "1", "b": "two"}, b"payload bytes")]


def test_several_messages_decode_in_order() -> None:
    data = eventstream.event("messageStart", {"role": "assistant"}) + eventstream.event(
        "messageStop", {"stopReason": "end_turn"}
    )

    decoded = eventstream.decode_messages(data)

    assert [h[":event-type"] for h, _ in decoded] == ["messageStart", "messageStop"]


def test_prelude_holds_total_and_header_lengths_and_its_crc() -> None:
    headers = {":event-type": "metadata"}
    data = eventstream.encode_message(headers, b"{}")

    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])

    assert total == len(data)
    assert headers_len == len(eventstream.encode_headers(headers))
    assert prelude_crc == zlib.crc32(data[:8])


def test_message_crc_covers_every_preceding_byte() -> None:
    data = eventstream.encode_message({"k": "v"}, b"abc")

    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_string_header_layout_is_name_len_name_type7_u16_len_value() -> None:
    raw = eventstream.encode_headers({":event-type": "contentBlockDelta"})

    assert raw == b"\x0b:event-type" + b"\x07" + b"\x00\x11" + b"contentBlockDelta"


def test_botocore_accepts_both_crcs() -> None:
    data = eventstream.event("contentBlockDelta", {"delta": {"text": "hi"}, "contentBlockIndex": 0})

    (message,) = botocore_parse(data)

    assert message.prelude.crc == struct.unpack(">I", data[8:12])[0]
    assert message.crc == struct.unpack(">I", data[-4:])[0]
    assert message.headers[":event-type"] == "contentBlockDelta"
    assert json.loads(message.payload) == {"delta": {"text": "hi"}, "contentBlockIndex": 0}


def test_a_corrupted_payload_fails_both_parsers() -> None:
    data = bytearray(eventstream.event("messageStart", {"role": "assistant"}))
    data[-6] ^= 0xFF

    with pytest.raises(ChecksumMismatch):
        botocore_parse(bytes(data))
    with pytest.raises(eventstream.DecodeError):
        eventstream.decode_messages(bytes(data))


def test_event_frames_carry_the_three_bedrock_headers() -> None:
    (headers, payload), *_ = eventstream.decode_messages(
        eventstream.event("messageStop", {"stopReason": "end_turn"})
    )

    assert headers == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(payload) == {"stopReason": "end_turn"}


def test_exception_frames_use_lowercase_message_key() -> None:
    ((headers, payload),) = eventstream.decode_messages(
        eventstream.exception("throttlingException", "slow down")
    )

    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "throttlingException"
    assert json.loads(payload) == {"message": "slow down"}


def test_non_ascii_text_survives_encoding() -> None:
    data = eventstream.event("contentBlockDelta", {"delta": {"text": " café 🚀"}})

    ((_, payload),) = eventstream.decode_messages(data)

    assert json.loads(payload)["delta"]["text"] == " café 🚀"


def test_boto3_turns_event_frames_into_converse_stream_events() -> None:
    data = b"".join(
        [
            eventstream.event("messageStart", {"role": "assistant"}),
            eventstream.event(
                "contentBlockDelta", {"delta": {"text": "Hello"}, "contentBlockIndex": 0}
            ),
            eventstream.event("messageStop", {"stopReason": "end_turn"}),
        ]
    )

    events = list(converse_stream_events(data))

    assert events == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hello"}, "contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
    ]


def test_boto3_raises_event_stream_error_with_the_exception_type_as_code() -> None:
    data = eventstream.exception("modelStreamErrorException", "boom")

    with pytest.raises(EventStreamError) as caught:
        list(converse_stream_events(data))

    assert caught.value.response["Error"] == {
        "Code": "modelStreamErrorException",
        "Message": "boom",
    }
