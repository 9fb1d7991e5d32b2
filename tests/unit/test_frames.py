import json
import uuid

import pytest

from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import (
    APPSYNC_PAYLOAD_LIMIT,
    WEBSOCKET_FRAME_LIMIT,
    FrameBuilder,
    FrameError,
    encode,
    max_text_chars,
    parse_start_request,
    validate_frame,
)
from chalicelib.settings import Limits

SID = str(uuid.uuid4())


def test_builder_numbers_transcript_frames_from_zero_without_gaps():
    b = FrameBuilder(SID)
    frames = [b.start("m"), b.delta("a"), b.delta("b"), b.done("end_turn")]
    assert [f["seq"] for f in frames] == [0, 1, 2, 3]
    assert b.last_seq == 3
    for f in frames:
        validate_frame(f)


def test_heartbeat_has_no_seq_and_does_not_consume_one():
    b = FrameBuilder(SID)
    b.start("m")
    hb = b.heartbeat()
    assert "seq" not in hb and hb["type"] == "heartbeat"
    assert b.delta("x")["seq"] == 1


def test_error_frame_carries_code_message_and_retryable():
    b = FrameBuilder(SID, next_seq=4)
    frame = b.error(StreamError(ErrorCode.THROTTLED, "The model is busy."))
    assert frame["seq"] == 4
    assert frame["error"] == {
        "code": "THROTTLED",
        "message": "The model is busy.",
        "retryable": True,
    }
    validate_frame(frame)


def test_start_after_other_frames_is_refused():
    b = FrameBuilder(SID, next_seq=3)
    with pytest.raises(FrameError):
        b.start("m")


def test_unknown_stop_reason_is_refused():
    with pytest.raises(FrameError):
        FrameBuilder(SID, 1).done("tool_use")


def test_encode_is_compact_utf8_json():
    text = encode({"v": 1, "text": "é"})
    assert text == '{"v":1,"text":"é"}'


def test_encode_refuses_a_frame_over_the_limit():
    with pytest.raises(FrameError, match="transport limit is 100"):
        encode({"text": "x" * 200}, limit_bytes=100)


@pytest.mark.parametrize("limit", [WEBSOCKET_FRAME_LIMIT, APPSYNC_PAYLOAD_LIMIT])
@pytest.mark.parametrize("char", ["a", "\u0001", "🚀", "漢", '"'])
def test_max_text_chars_always_fits_the_transport(limit, char):
    n = max_text_chars(limit)
    frame = FrameBuilder(SID, next_seq=10**9).delta(char * n)
    assert len(encode(frame).encode()) <= limit


def test_start_request_generates_a_stream_id_when_none_is_given():
    req = parse_start_request({"prompt": "hi"}, Limits())
    assert uuid.UUID(req.stream_id).version == 4


def test_start_request_limit_errors_name_the_configured_limit():
    with pytest.raises(StreamError) as exc:
        parse_start_request({"prompt": "x" * 11}, Limits(max_input_chars=10))
    assert "the limit is 10" in exc.value.message


def test_validated_frames_survive_a_json_round_trip():
    frame = FrameBuilder(SID, 1).delta('line\nbreak "quoted" 🚀')
    assert validate_frame(json.loads(encode(frame))) == frame
