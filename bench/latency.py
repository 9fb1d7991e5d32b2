"""What each transport adds to one stream, on the local cloud.

One stream per case: the Function URL (SSE), the WebSocket architecture once per
injected ``@connections`` post latency, and the AppSync + SQS architecture once per
injected publish latency. From the client's receive times
against the simulated model's emit times (one clock, one machine) it reports the
time to first token added by the transport, the per-frame lag (receive time minus
the emit time of the frame's last token: p50/p99/max), the completion delay after
the model's last token, and the delta frames per stream; for AppSync also the queue
hop (startStream sent to the model stream opened: resolver, SQS, event source, claim,
start frame published).

    .venv/bin/python -m bench.latency [--latencies 0,25] [--appsync-latencies 0,40]
                                      [--tokens 400] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import boto3
from websockets.sync.client import connect

from local.appsync import AppSyncControl
from local.bedrock import EmulatorControl
from local.cloud import CloudOptions, LocalCloud
from local.simulated_model import generate, prompt_hash, request_for_prompt
from local.ws_gateway import GatewayControl
from tests.support import sse
from tests.support.appsync import START, Realtime, graphql


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _sign_in(ep: dict[str, Any]) -> str:
    c = ep["cognito"]
    idp = boto3.client(
        "cognito-idp",
        region_name=c["region"],
        endpoint_url=c["endpoint"],
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    result = idp.initiate_auth(
        ClientId=c["clientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": ep["user"]["username"], "PASSWORD": ep["user"]["password"]},
    )
    return result["AuthenticationResult"]["IdToken"]


def _via_websocket(ep: dict[str, Any], token: str, prompt: str) -> list[tuple[float, dict]]:
    received: list[tuple[float, dict[str, Any]]] = []
    with connect(ep["websocket"], subprotocols=["llm-stream.v1", f"auth.{token}"]) as ws:
        ws.send(json.dumps({"action": "stream", "prompt": prompt, "maxTokens": 4096}))
        while True:
            frame = json.loads(ws.recv(timeout=120))
            received.append((time.time(), frame))
            if frame["type"] in ("done", "error"):
                return received


def _via_appsync(ep: dict[str, Any], token: str, prompt: str) -> list[tuple[float, dict]]:
    received: list[tuple[float, dict[str, Any]]] = []
    stream_id = str(uuid.uuid4())
    with Realtime(ep["appsync"]["graphql"], ep["appsync"]["realtime"], token) as rt:
        rt.subscribe(stream_id)
        sent_at = time.time()
        answer = graphql(
            ep["appsync"]["graphql"],
            token,
            START,
            {"input": {"streamId": stream_id, "prompt": prompt, "maxTokens": 4096}},
        )
        if "errors" in answer:
            raise RuntimeError(f"startStream failed: {answer['errors']}")
        received.append((sent_at, {"type": "sent"}))
        received += rt.frames(timeout=120)
    return received


def _via_function_url(ep: dict[str, Any], token: str, prompt: str) -> list[tuple[float, dict]]:
    received: list[tuple[float, dict[str, Any]]] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn, resp = sse.request(
        ep["functionUrl"], "POST", {"prompt": prompt, "maxTokens": 4096}, headers, timeout=120
    )
    try:
        for event in sse.events(resp):
            if event.data is None:
                continue  # heartbeat comment
            frame = event.frame()
            received.append((event.at, frame))
            if frame["type"] in ("done", "error"):
                return received
    finally:
        conn.close()
    raise RuntimeError("the Function URL stream ended without a terminal frame")


def run_stream(
    ep: dict[str, Any], token: str, transport: str, tokens: int, rate: float
) -> dict[str, Any]:
    prompt = f"Benchmark {uuid.uuid4()} [tokens={tokens}]"
    answer = generate(request_for_prompt(prompt))
    ends = []  # cumulative character count at the end of each token
    total = 0
    for t in answer.tokens:
        total += len(t)
        ends.append(total)
    via = {"websocket": _via_websocket, "appsync": _via_appsync}.get(transport, _via_function_url)
    received = via(ep, token, prompt)
    sent_at = received.pop(0)[0] if received[0][1]["type"] == "sent" else None
    model = EmulatorControl(ep["bedrock"])
    wanted = prompt_hash(request_for_prompt(prompt))
    (record,) = [s for s in model.streams() if s["promptHash"] == wanted]
    first_emit = record["firstTokenAt"]

    lags, chars, first_delta_at = [], 0, None
    deltas = [(at, f) for at, f in received if f["type"] == "delta"]
    for at, frame in deltas:
        first_delta_at = first_delta_at or at
        chars += len(frame["text"])
        last_token = next(i for i, end in enumerate(ends) if end >= chars)
        lags.append((at - (first_emit + last_token / rate)) * 1000)
    done_at = received[-1][0]
    return {
        "frames": len([f for _, f in received if "seq" in f]),
        "deltaFrames": len(deltas),
        "modelTokens": len(answer.tokens),
        "ttftAddedMs": round((first_delta_at - first_emit) * 1000, 1),
        "lagP50Ms": round(_percentile(lags, 0.5), 1),
        "lagP99Ms": round(_percentile(lags, 0.99), 1),
        "lagMaxMs": round(max(lags), 1),
        "completionDelayMs": round((done_at - record["lastTokenAt"]) * 1000, 1),
        "textComplete": "".join(f["text"] for _, f in deltas) == answer.text,
        "queueHopMs": None if sent_at is None else round((record["openedAt"] - sent_at) * 1000, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latencies", default="0,25", help="injected post latencies, ms")
    p.add_argument(
        "--appsync-latencies", default="0,40", help="injected AppSync publish latencies, ms"
    )
    p.add_argument("--tokens", type=int, default=400)
    p.add_argument("--rate", type=float, default=50.0, help="model tokens per second")
    args = p.parse_args()
    options = CloudOptions(
        endpoints_file=None, model={"first_token_delay_ms": 300, "tokens_per_second": args.rate}
    )
    with LocalCloud(options) as cloud:
        ep = cloud.endpoints
        token = _sign_in(ep)
        gateway = GatewayControl(ep["websocket"].replace("ws://", "http://", 1))
        rows = [
            {
                "transport": "function_url",
                "postLatencyMs": 0.0,
                **run_stream(ep, token, "function_url", args.tokens, args.rate),
            }
        ]
        for latency in [float(x) for x in args.latencies.split(",")]:
            gateway.faults(postLatencyMs=latency)
            row = run_stream(ep, token, "websocket", args.tokens, args.rate)
            rows.append({"transport": "websocket", "postLatencyMs": latency, **row})
        gateway.reset()
        appsync = AppSyncControl(ep["appsync"]["graphql"].removesuffix("graphql"))
        for latency in [float(x) for x in args.appsync_latencies.split(",")]:
            appsync.faults(publishLatencyMs=latency)
            row = run_stream(ep, token, "appsync", args.tokens, args.rate)
            rows.append({"transport": "appsync", "postLatencyMs": latency, **row})
        appsync.reset()
    print(json.dumps(rows, indent=2))
    keys = ["transport", "postLatencyMs", "ttftAddedMs", "lagP50Ms", "lagP99Ms", "lagMaxMs"]
    keys += ["completionDelayMs", "deltaFrames", "modelTokens", "textComplete", "queueHopMs"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
