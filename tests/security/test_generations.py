"""Weakness: a reused streamId returned the previous owner's text. Frames were keyed by
streamId alone and outlive their record (TTL deletes the two tables' items separately and
lazily), so once a stream record was gone, whoever started a stream with the same id read
the earlier frames. Frames are now keyed by a per-generation id stored in the record:
no read path returns another owner's or an earlier generation's frames.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.security.checks import assert_transcript, expected_text, text_of, unique_prompt
from tests.security.clients import gql_refusal

pytestmark = pytest.mark.security("isolation")


def _ttl_deletes_the_record(store, stream_id: str) -> None:
    store._ddb.delete_item(TableName=store._table, Key={"pk": {"S": f"stream#{stream_id}"}})


def _only_start(frames: list[dict], victim_text: str) -> None:
    # The Function URL writes a frame to its client before storing it: a read may come
    # before the start frame is stored.
    assert [f["type"] for f in frames] in (["start"], []), frames
    assert not any(victim_text[:20] in f.get("text", "") for f in frames)


@pytest.mark.parametrize("victim_transport", ["websocket", "function_url"])
def test_a_reused_stream_id_never_returns_the_earlier_owners_frames(
    victim_transport, users, transports, function_url, websocket, appsync, rest, store, model
):
    victim, attacker = users.new("victim"), users.new("reuser")
    prompt = unique_prompt("victim's private answer", 40)
    stream_id = str(uuid.uuid4())
    with transports[victim_transport].open(
        victim.id_token, {"prompt": prompt, "streamId": stream_id}
    ) as live:
        frames = live.rest()
    assert_transcript(frames, prompt)
    store.assert_consistent(stream_id, victim, status="done")
    victim_text = expected_text(prompt)
    _ttl_deletes_the_record(store, stream_id)

    # The attacker takes the id; its model is slow to answer, so only its start frame
    # exists while every read path is tried.
    model.faults(firstTokenDelayMs=6000)
    body = {"prompt": unique_prompt("reuse", 3), "streamId": stream_id}
    with function_url.open(attacker.id_token, body) as own:
        assert own.next()["type"] == "start"
        status, read = rest.read(attacker.id_token, stream_id)
        assert status == 200, read
        _only_start(read["frames"], victim_text)

        answer = appsync.read(attacker.id_token, stream_id, -1)
        assert gql_refusal(answer) is None, answer
        _only_start([json.loads(f) for f in answer["data"]["streamFrames"]["frames"]], victim_text)

        with function_url.resume(attacker.id_token, stream_id, -1) as resumed:
            got = [resumed.next()]
            with pytest.raises(TimeoutError):
                got.append(resumed.next(timeout=1.0))  # nothing more until the model answers
        _only_start(got, victim_text)

        # (A WebSocket resume replays what was posted to a socket: nothing, for this
        # Function URL stream; it must not replay the earlier owner's frames either.)
        conn = websocket.connect(attacker.id_token)
        try:
            conn.send({"action": "resume", "streamId": stream_id, "afterSeq": -1})
            with pytest.raises(TimeoutError):
                frame = conn.recv(timeout=1.0)
                raise AssertionError(f"replayed {frame}")
        finally:
            conn.close()

        rest.cancel(attacker.id_token, stream_id)
        rest_frames = own.rest()
    assert victim_text not in text_of(rest_frames)
    # The victim's stream is gone for everyone, the victim included.
    assert rest.read(victim.id_token, stream_id)[0] == 404
