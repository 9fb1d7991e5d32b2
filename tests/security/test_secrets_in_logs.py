"""Case 7: secrets in logs. A full run of each transport (sign-in, start, stream, resume,
read, cancel, with a long unique prompt, system prompt and conversation), then everything
the local cloud printed since it came up (every emulator's and the app's logs, the Node
function's included) is searched: no ID, access or refresh token (nor their payload or
signature parts), no password, no prompt, no model text.

The tokens and passwords looked for are all the suite handed out so far, so the cases
that ran before (forged tokens, other users) are covered too.
"""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.security.checks import assert_transcript, expected_text
from tests.security.clients import realtime_header

pytestmark = pytest.mark.security("logs")


def _secret_prompt() -> tuple[str, str]:
    marker = f"PROMPT-{uuid.uuid4().hex}"
    prompt = (
        f"{marker} My account number is 4929-1234-5678 and my question is private: how do I "
        "stream tokens from a serverless function without losing any of them? [tokens=30]"
    )
    return prompt, marker


def _run_function_url(user, prompt, clients) -> str:
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "system": f"SYSTEM-{uuid.uuid4()}"}
    with clients["function_url"].open(user.id_token, body) as live:
        live.next()
    with clients["function_url"].resume(user.id_token, body["streamId"], 0) as resumed:
        resumed.rest()
    assert clients["rest"].read(user.id_token, body["streamId"])[0] == 200
    assert clients["rest"].cancel(user.id_token, body["streamId"])[0] == 200
    return body["system"]


def _run_websocket(user, prompt, clients) -> str:
    system = f"SYSTEM-{uuid.uuid4()}"
    body = {
        "messages": [
            {"role": "user", "content": f"CONVERSATION-{uuid.uuid4()} earlier question"},
            {"role": "assistant", "content": "an earlier answer"},
            {"role": "user", "content": prompt},
        ],
        "system": system,
        "streamId": str(uuid.uuid4()),
    }
    with clients["websocket"].open(user.id_token, body) as live:
        live.next()
        live.drop()
    with clients["websocket"].resume(user.id_token, body["streamId"], 0) as resumed:
        frames = resumed.rest()
        assert frames[-1]["type"] == "done"
    clients["websocket"].cancel(user.id_token, body["streamId"])
    return system + " " + body["messages"][0]["content"].split()[0]


def _run_appsync(user, prompt, clients) -> str:
    system = f"SYSTEM-{uuid.uuid4()}"
    body = {"prompt": prompt, "system": system, "streamId": str(uuid.uuid4())}
    with clients["appsync"].open(user.id_token, body) as live:
        assert_transcript(live.rest(), prompt)
    assert "errors" not in clients["appsync"].read(user.id_token, body["streamId"])
    assert "errors" not in clients["appsync"].cancel(user.id_token, body["streamId"])
    # The header a client puts in the real-time URL or subprotocol carries the token too.
    clients["users"].remember(realtime_header(clients["appsync"].graphql_url, user.id_token))
    return system


def _run_rest_stream(user, prompt, clients) -> str:
    body = {"prompt": prompt, "streamId": str(uuid.uuid4()), "system": f"SYSTEM-{uuid.uuid4()}"}
    with clients["rest_stream"].open(user.id_token, body) as live:
        live.next()
    with clients["rest_stream"].resume(user.id_token, body["streamId"], 0) as resumed:
        resumed.rest()
    assert clients["rest"].cancel(user.id_token, body["streamId"])[0] == 200
    return body["system"]


RUNS = {
    "function_url": _run_function_url,
    "websocket": _run_websocket,
    "appsync": _run_appsync,
    "rest_stream": _run_rest_stream,
}


def _fragments(secret: str) -> set[str]:
    """The secret and, for a JWT, each of its parts (a log may hold a decoded piece)."""
    parts = secret.split(".")
    if len(parts) == 3 and all(len(p) > 16 for p in parts[1:]):
        return {secret, parts[1], parts[2]}
    return {secret}


def _logs_since_ready(cloud) -> str:
    output = cloud.drain_output()
    return "\n".join(output[output.index("READY") + 1 :])


@pytest.mark.parametrize("transport", [*RUNS, "cognito"])
def test_a_full_run_logs_no_token_password_or_prompt(
    transport, cloud, users, store, rest, function_url, websocket, appsync, rest_stream
):
    user = users.new(f"logs-{transport}")
    clients = {
        "rest": rest,
        "function_url": function_url,
        "websocket": websocket,
        "appsync": appsync,
        "rest_stream": rest_stream,
        "users": users,
    }
    prompt, marker = _secret_prompt()
    extra_markers: list[str] = []
    if transport == "cognito":
        # Sign-in failures, refresh and revocation: none may log what they were given.
        wrong = f"Wrong-{uuid.uuid4().hex}"
        users.remember(wrong)
        with pytest.raises(ClientError):
            cloud.sign_in(user.name, wrong)
        idp = cloud.cognito()
        refreshed = idp.initiate_auth(
            ClientId=cloud.ep["cognito"]["clientId"],
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": user.refresh_token},
        )["AuthenticationResult"]
        users.remember(refreshed["IdToken"], refreshed["AccessToken"])
        idp.revoke_token(Token=user.refresh_token, ClientId=cloud.ep["cognito"]["clientId"])
    else:
        extra_markers = RUNS[transport](user, prompt, clients).split()
    # Let every producer finish and log its end before reading the logs.
    deadline = time.monotonic() + 10
    while store.running_ids(user) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.running_ids(user) == []
    logs = _logs_since_ready(cloud)
    assert "InitiateAuth" in logs  # the logs are there to search
    looked_for = {f for s in users.secrets for f in _fragments(s)}
    looked_for |= {marker, prompt, *extra_markers, "4929-1234-5678"}
    looked_for.add(expected_text(prompt)[:40])  # model text
    leaked = sorted(s[:24] + "..." for s in looked_for if s in logs)
    assert leaked == [], f"found in the logs: {leaked}"
