"""Users with every token Cognito issues, and the checks every case makes on the stream
store and the model emulator: nothing written, nothing left running, nothing lost."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import boto3
import pytest

from local.bedrock import EmulatorControl
from local.simulated_model import answer_text, prompt_hash, request_for_prompt
from tests.security.clients import StoreView, User, wait_until
from tests.support.cloud import CREDS, Cloud
from tests.support.tokens import unverified_claims


class Users:
    """Creates signed-in users; remembers every password and token handed out, so the
    log checks can look for all of them."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.secrets: set[str] = {cloud.ep["user"]["password"]}

    def sign_in(self, name: str, password: str) -> User:
        auth = self.cloud.sign_in(name, password)
        self.remember(password, auth["IdToken"], auth["AccessToken"], auth["RefreshToken"])
        return User(
            name=name,
            password=password,
            sub=unverified_claims(auth["IdToken"])["sub"],
            id_token=auth["IdToken"],
            access_token=auth["AccessToken"],
            refresh_token=auth["RefreshToken"],
        )

    def new(self, prefix: str = "user") -> User:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = f"Pw-{secrets.token_urlsafe(12)}-9"
        self.remember(password)
        self.cloud.add_user(name, password)
        return self.sign_in(name, password)

    def remember(self, *values: str) -> None:
        self.secrets |= {v for v in values if v}


class Store:
    """Read-only views of the stream store, for assertions."""

    def __init__(self, cloud: Cloud) -> None:
        self.store = cloud.store()
        self._ddb = boto3.client(
            "dynamodb", region_name="us-east-1", endpoint_url=cloud.ep["aws"], **CREDS
        )
        self._table = self.store._settings.streams_table

    def view(self, stream_id: str) -> StoreView:
        return StoreView(self.store.get(stream_id), self.store.frames_after(stream_id, -1))

    def nothing_for(self, stream_id: str) -> bool:
        """No stream record and no frame for ``stream_id``."""
        return self.store.get(stream_id) is None and self.store.frames_after(stream_id, -1) == []

    def running_ids(self, user: User) -> list[str]:
        """The ids in the user's running-stream slots."""
        resp = self._ddb.get_item(
            TableName=self._table, Key={"pk": {"S": f"user#{user.sub}"}}, ConsistentRead=True
        )
        return sorted(resp.get("Item", {}).get("running", {}).get("SS", []))

    def wait_terminal(self, stream_id: str, timeout: float = 20.0) -> StoreView:
        def ended() -> StoreView | None:
            view = self.view(stream_id)
            return view if view.record is not None and view.record.terminal else None

        return wait_until(ended, timeout, f"stream {stream_id} reaching a terminal status")

    def assert_consistent(
        self,
        stream_id: str,
        user: User,
        *,
        status: str,
        client_frames: list[dict[str, Any]] | None = None,
        error_code: str | None = None,
    ) -> StoreView:
        """The store after a stream ended: the expected status, a gap-free transcript
        0..lastSeq with exactly one terminal frame (the last), the record's lastSeq on
        it, the owner's slot released, and (when given) the very frames the client got."""
        view = self.wait_terminal(stream_id)
        record, frames = view.record, view.frames
        assert record.owner == user.sub
        assert record.status == status, (record, frames[-1:])
        seqs = [f["seq"] for f in frames]
        assert seqs == list(range(len(frames))), f"stored seqs are not 0..n: {seqs}"
        assert frames[0]["type"] == "start"
        terminals = [f for f in frames if f["type"] in ("done", "error")]
        assert terminals == [frames[-1]], "not exactly one terminal frame, last"
        assert record.last_seq == frames[-1]["seq"]
        if error_code is not None:
            assert frames[-1]["error"]["code"] == error_code
            assert record.error_code == error_code
        wait_until(
            lambda: stream_id not in self.running_ids(user),
            5,
            "the owner's running slot being released",
        )
        if client_frames is not None:
            by_seq = {f["seq"]: f for f in frames}
            for frame in client_frames:
                assert by_seq.get(frame["seq"]) == frame, f"client frame not as stored: {frame}"
        return view


def model_streams(model: EmulatorControl, prompt: str) -> list[dict[str, Any]]:
    """The emulator's records of the model streams opened for ``prompt``."""
    wanted = prompt_hash(request_for_prompt(prompt))
    return [s for s in model.streams() if s["promptHash"] == wanted]


def unique_prompt(label: str, tokens: int = 20) -> str:
    return f"{label} {uuid.uuid4()} [tokens={tokens}]"


def expected_text(prompt: str) -> str:
    return answer_text(request_for_prompt(prompt))


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f.get("text", "") for f in frames)


def assert_transcript(frames: list[dict[str, Any]], prompt: str | None = None) -> None:
    """A whole stream as a client received it: seq 0..n in order, no duplicate, one
    terminal frame at the end, and (with ``prompt``) exactly the model's answer."""
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(len(frames))), f"gap, duplicate or disorder: {seqs}"
    assert frames[0]["type"] == "start"
    assert [f["type"] for f in frames].count("done") + [f["type"] for f in frames].count(
        "error"
    ) == 1
    assert frames[-1]["type"] in ("done", "error")
    if prompt is not None:
        assert frames[-1]["type"] == "done", frames[-1]
        assert text_of(frames) == expected_text(prompt)


def note(request: pytest.FixtureRequest, text: str) -> None:
    """A line printed under the case's group in the suite's summary."""
    request.node.user_properties.append(("security_note", text))
