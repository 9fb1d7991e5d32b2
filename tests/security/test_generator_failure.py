"""A crashed WebSocket generator (invoked asynchronously, no retries) is ended at once
through Lambda's on-failure destination (``ws_generate_failed``): the client still
connected receives one terminal INTERNAL error frame after the frames it has, within a
couple of seconds, far below the claim's lease, without any reader having to look."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from tests.security.checks import assert_transcript, model_streams, note
from tests.security.cloud_settings import CLAIM_LEASE_S

pytestmark = pytest.mark.security("transport")


def test_a_crashed_websocket_generator_ends_promptly_with_one_error_frame(
    cloud, websocket, users, model, store, request
):
    user = users.new("crashed")
    prompt = f"Crashed generator {uuid.uuid4()} [tokens=3000]"
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "maxTokens": 3000}
    with websocket.open(user.id_token, body) as live:
        live.until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
        req = urllib.request.Request(
            cloud.ep["lambda"] + "_local/functions/ws_generate/crash", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["crashed"] == 1
        crashed_at = time.monotonic()
        # No resume, no REST read: the same socket is told.
        rest = live.rest(timeout=CLAIM_LEASE_S)
        elapsed = time.monotonic() - crashed_at
    frames = live.received
    assert_transcript(frames)
    error = rest[-1]["error"]
    assert error["code"] == "INTERNAL" and error["retryable"] is True
    note(request, f"crashed generator: error frame {elapsed:.2f} s after the crash")
    assert elapsed < 2.5, f"the error frame took {elapsed:.2f} s (lease {CLAIM_LEASE_S} s)"
    store.assert_consistent(live.stream_id, user, status="error", client_frames=frames)
    (only,) = model_streams(model, prompt)  # never a second generation
    assert only["closedAt"] is not None
