"""Case 2: other users' streams. While a victim's stream runs on each transport, another
user tries every way in, on every transport: read its frames, subscribe to it, resume it,
cancel it, and start a stream with its ``streamId``. Each attempt is refused, or sees
nothing; "not found" answers are the same as for a stream that does not exist, so not
even existence leaks. Afterwards the victim's stream is intact: every frame delivered,
one generation, never cancelled by anyone but its owner."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.security.checks import assert_transcript, expected_text, model_streams, text_of
from tests.security.clients import Background, Refused, User

pytestmark = pytest.mark.security("isolation")

VICTIMS = ("function_url", "websocket", "appsync")
# Long enough to outlast every attack (about 40 s at the suite's 100 tokens/s).
VICTIM_TOKENS = 4096


class Victim:
    def __init__(self, transport: str, live: Any, prompt: str) -> None:
        self.transport = transport
        self.live = live
        self.prompt = prompt
        self.stream_id = live.stream_id
        self.background = Background(live)


@pytest.fixture(scope="module")
def alice(users) -> User:
    return users.new("alice")


@pytest.fixture(scope="module")
def mallory(users) -> User:
    return users.new("mallory")


@pytest.fixture(scope="module")
def victims(transports, alice) -> dict[str, Victim]:
    started: dict[str, Victim] = {}
    for name in VICTIMS:
        prompt = f"Alice's private question {uuid.uuid4()} [tokens={VICTIM_TOKENS}]"
        body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "maxTokens": VICTIM_TOKENS}
        live = transports[name].open(alice.id_token, body)
        live.until(lambda f: f["type"] == "delta")
        started[name] = Victim(name, live, prompt)
    yield started
    for victim in started.values():
        victim.live.close()


def _same_but_id(answer: Any, stream_id: str, other_id: str) -> Any:
    """``answer`` (about ``other_id``) as it would read about ``stream_id``."""
    same = json.loads(json.dumps(answer).replace(other_id, stream_id))
    return tuple(same) if isinstance(answer, tuple) else same


def _assert_untouched(store, victim: Victim, alice: User) -> None:
    record = store.store.get(victim.stream_id)
    assert record.owner == alice.sub
    assert record.cancel_requested is False
    assert record.status == "running"


# -- the attacks -----------------------------------------------------------------------
# Each takes (victim, mallory, clients...) and asserts the refusal.


def attack_rest_read(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    answer = c.rest.read(mallory.id_token, victim.stream_id)
    assert answer[0] == 404 and answer[1]["error"]["code"] == "NOT_FOUND"
    assert answer == _same_but_id(c.rest.read(mallory.id_token, nobody), victim.stream_id, nobody)


def attack_rest_cancel(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    answer = c.rest.cancel(mallory.id_token, victim.stream_id)
    assert answer[0] == 404 and answer[1]["error"]["code"] == "NOT_FOUND"
    assert answer == _same_but_id(c.rest.cancel(mallory.id_token, nobody), victim.stream_id, nobody)


def _refusal(call) -> Refused:
    with pytest.raises(Refused) as refused:
        call()
    return refused.value


def attack_function_url_resume(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    refused = _refusal(lambda: c.function_url.resume(mallory.id_token, victim.stream_id, -1))
    assert (refused.status, refused.code) == (404, "NOT_FOUND")
    other = _refusal(lambda: c.function_url.resume(mallory.id_token, nobody, -1))
    assert refused.body == other.body.replace(nobody, victim.stream_id)


def attack_function_url_start_same_id(victim, mallory, c) -> None:
    prompt = f"Mallory's takeover {uuid.uuid4()} [tokens=5]"
    body = {"prompt": prompt, "streamId": victim.stream_id}
    refused = _refusal(lambda: c.function_url.open(mallory.id_token, body))
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    assert model_streams(c.model, prompt) == []


def attack_websocket_resume(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    conn = c.websocket.connect(mallory.id_token)
    try:
        answer = conn.answer({"action": "resume", "streamId": victim.stream_id, "afterSeq": -1})
        assert answer["type"] == "error" and answer["error"]["code"] == "NOT_FOUND", answer
        other = conn.answer({"action": "resume", "streamId": nobody, "afterSeq": -1})
        assert answer == _same_but_id(other, victim.stream_id, nobody)
        # The stream was not re-attached here: none of its frames follow.
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.3)
    finally:
        conn.close()


def attack_websocket_cancel(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    answer = c.websocket.cancel(mallory.id_token, victim.stream_id)
    assert answer is not None and answer["error"]["code"] == "NOT_FOUND", answer
    other = c.websocket.cancel(mallory.id_token, nobody)
    assert answer == _same_but_id(other, victim.stream_id, nobody)


def attack_websocket_start_same_id(victim, mallory, c) -> None:
    prompt = f"Mallory's takeover {uuid.uuid4()} [tokens=5]"
    body = {"prompt": prompt, "streamId": victim.stream_id}
    refused = _refusal(lambda: c.websocket.open(mallory.id_token, body))
    assert refused.code == "FORBIDDEN"
    assert model_streams(c.model, prompt) == []


def attack_appsync_read(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    answer = c.appsync.read(mallory.id_token, victim.stream_id)
    assert answer["errors"][0]["errorType"] == "NOT_FOUND" and answer["data"] is None
    assert answer == _same_but_id(
        c.appsync.read(mallory.id_token, nobody), victim.stream_id, nobody
    )


def attack_appsync_cancel(victim, mallory, c) -> None:
    nobody = str(uuid.uuid4())
    answer = c.appsync.cancel(mallory.id_token, victim.stream_id)
    assert answer["errors"][0]["errorType"] == "NOT_FOUND" and answer["data"] is None
    other = c.appsync.cancel(mallory.id_token, nobody)
    assert answer == _same_but_id(other, victim.stream_id, nobody)


def attack_appsync_start_same_id(victim, mallory, c) -> None:
    prompt = f"Mallory's takeover {uuid.uuid4()} [tokens=5]"
    answer = c.appsync.start(mallory.id_token, {"prompt": prompt, "streamId": victim.stream_id})
    assert answer["errors"][0]["errorType"] == "FORBIDDEN" and answer["data"] is None
    assert model_streams(c.model, prompt) == []


def attack_appsync_subscribe(victim, mallory, c) -> None:
    """AppSync lets anyone subscribe with any streamId; the owner filter delivers nothing."""
    with c.appsync.realtime(mallory.id_token) as rt:
        rt.subscribe(victim.stream_id)
        seen = len(victim.live.received)
        # While the victim receives more frames, the subscriber receives none.
        while len(victim.live.received) < seen + 3:
            with pytest.raises(TimeoutError):
                rt.next_message(0.2)


ATTACKS = {
    f.__name__.removeprefix("attack_"): f
    for f in (
        attack_rest_read,
        attack_rest_cancel,
        attack_function_url_resume,
        attack_function_url_start_same_id,
        attack_websocket_resume,
        attack_websocket_cancel,
        attack_websocket_start_same_id,
        attack_appsync_read,
        attack_appsync_cancel,
        attack_appsync_start_same_id,
        attack_appsync_subscribe,
    )
}


class Clients:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@pytest.fixture
def clients(rest, function_url, websocket, appsync, model) -> Clients:
    return Clients(
        rest=rest, function_url=function_url, websocket=websocket, appsync=appsync, model=model
    )


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("victim_transport", VICTIMS)
def test_another_users_stream_is_refused_or_invisible(
    victim_transport, attack, victims, alice, mallory, clients, store
):
    victim = victims[victim_transport]
    ATTACKS[attack](victim, mallory, clients)
    _assert_untouched(store, victim, alice)
    assert store.running_ids(mallory) == []  # no slot was taken, not even for a moment


@pytest.mark.parametrize("victim_transport", VICTIMS)
def test_the_victims_stream_is_intact_after_every_attack(
    victim_transport, victims, alice, rest, websocket, appsync, model, store
):
    victim = victims[victim_transport]
    # Only the owner's cancel stops it, through its own transport.
    if victim_transport == "websocket":
        victim.live.conn.send({"action": "cancel", "streamId": victim.stream_id})
    elif victim_transport == "appsync":
        assert "errors" not in appsync.cancel(alice.id_token, victim.stream_id)
    else:
        assert rest.cancel(alice.id_token, victim.stream_id)[0] == 200
    frames = victim.background.join(30)
    assert_transcript(frames)
    assert frames[-1]["type"] == "done" and frames[-1]["stopReason"] == "cancelled"
    assert expected_text(victim.prompt).startswith(text_of(frames))
    (only,) = model_streams(model, victim.prompt)  # one generation
    assert only["closedBy"] == "client"
    store.assert_consistent(victim.stream_id, alice, status="cancelled", client_frames=frames)
