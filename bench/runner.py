"""Running the scenario: two local clouds, every architecture, every level.

1. The coalescing cloud (``SENDER_MODE=coalesce``): the default scenario (one stream at
   a time, ``repeats`` times per architecture, DynamoDB and SQS calls recorded), then
   the concurrency sweep (``levels`` > 1: that many streams of one architecture at once).
2. The baseline cloud (``SENDER_MODE=per_token``): one stream per architecture, calls
   recorded.

Each level starts its streams together (every client is connected and subscribed
first); the cloud's CPU time and peak memory are taken over the level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import aiohttp
import boto3

from bench import calls, clients
from bench.cloud import BenchCloud
from bench.metrics import Received, stream_metrics, summarize
from bench.scenario import Scenario
from local.appsync import AppSyncControl
from local.bedrock import EmulatorControl
from local.simulated_model import generate, prompt_hash, request_for_prompt
from local.ws_gateway import GatewayControl

log = logging.getLogger("bench")
READY_TIMEOUT_S = 120.0
CONTROL_TIMEOUT_S = 30.0


class Users:
    """Bench users of one cloud's Cognito (admin calls), one stream each per level, so the
    per-user cap of 3 running streams (MAX_STREAMS_PER_USER) stays as deployed."""

    def __init__(self, ep: dict[str, Any]) -> None:
        c = ep["cognito"]
        self._pool, self._client_id = c["userPoolId"], c["clientId"]
        self._idp = boto3.client(
            "cognito-idp",
            region_name=c["region"],
            endpoint_url=c["endpoint"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        self.tokens: list[str] = []

    def ensure(self, n: int) -> list[str]:
        while len(self.tokens) < n:
            name = f"bench-{len(self.tokens) + 1:03d}"
            password = f"Bench-{secrets.token_urlsafe(9)}-1a"
            self._idp.admin_create_user(
                UserPoolId=self._pool, Username=name, MessageAction="SUPPRESS"
            )
            self._idp.admin_set_user_password(
                UserPoolId=self._pool, Username=name, Password=password, Permanent=True
            )
            result = self._idp.initiate_auth(
                ClientId=self._client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": name, "PASSWORD": password},
            )
            self.tokens.append(result["AuthenticationResult"]["IdToken"])
        return self.tokens[:n]


class CloudSession:
    """One running cloud configured for the scenario, and what the runs need of it."""

    def __init__(self, cloud: BenchCloud, scenario: Scenario) -> None:
        self.cloud = cloud
        self.scenario = scenario
        ep = cloud.endpoints
        self.ep = ep
        self.model = EmulatorControl(ep["bedrock"], timeout=CONTROL_TIMEOUT_S)
        self.gateway = GatewayControl(
            ep["websocket"].replace("ws://", "http://", 1), timeout=CONTROL_TIMEOUT_S
        )
        self.appsync = AppSyncControl(
            ep["appsync"]["graphql"].removesuffix("graphql"), timeout=CONTROL_TIMEOUT_S
        )
        self.recorder = calls.CallRecorder(ep["aws"])
        self.users = Users(ep)
        needs_node = {"function_url", "rest_stream"} & set(scenario.architectures)
        if ep.get("functionUrl") is None and needs_node:
            raise RuntimeError(
                "the local cloud has no Function URL (Node.js or node_function/node_modules "
                "missing: run `make install`)"
            )
        self.model.faults(
            firstTokenDelayMs=scenario.first_token_ms,
            tokensPerSecond=scenario.tokens_per_second,
        )
        self.gateway.faults(postLatencyMs=scenario.post_latency_ms)
        self.appsync.faults(publishLatencyMs=scenario.publish_latency_ms)

    async def run_level(self, architecture: str, n: int) -> dict[str, Any]:
        """``n`` streams of ``architecture`` at once; per-stream metrics and the level's
        server-side counts and resources."""
        tokens = await asyncio.to_thread(self.users.ensure, n)
        await asyncio.to_thread(self.model.clear_streams)
        received = [
            Received(architecture, sid, f"Benchmark {sid} [tokens={self.scenario.tokens}]")
            for sid in (str(uuid.uuid4()) for _ in range(n))
        ]
        publishes_before = (await asyncio.to_thread(self.appsync.stats))["publishes"]
        level_started = time.time()

        async def gateway_posts() -> int | None:
            if architecture != "websocket":
                return None
            return sum(
                c["postsOut"]
                for c in await asyncio.to_thread(self.gateway.connections)
                if c["connectedAt"] >= level_started - 1
            )

        meter = self.cloud.meter
        assert meter is not None
        resources, posts = await drive(
            architecture, self.ep, tokens, received, meter.window, gateway_posts
        )
        publishes = (await asyncio.to_thread(self.appsync.stats))["publishes"] - publishes_before
        records = {s["promptHash"]: s for s in await asyncio.to_thread(self.model.streams)}
        streams = [self._measure(r, records) for r in received]
        server_calls = {
            "function_url": None,
            "rest_stream": None,
            "websocket": posts,
            "appsync": publishes,
        }[architecture]
        return {
            "architecture": architecture,
            "concurrency": n,
            "streams": streams,
            "errors": [r.error for r in received if r.error],
            "serverCalls": server_calls,
            "resources": resources,
        }

    def _measure(self, r: Received, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        request = request_for_prompt(r.prompt)
        answer = generate(request)
        record = records.get(prompt_hash(request))
        if record is None or record.get("firstTokenAt") is None:
            # The stream never reached the model: a failed start (refused or errored
            # before any frame). Frames received anyway would be counted as lost.
            return {
                "architecture": r.architecture,
                "streamId": r.stream_id,
                "modelTokens": len(answer.tokens),
                "modelTokensSent": None,
                "transcriptFrames": 0,
                "lost": len(r.frames),
                "duplicates": 0,
                "terminal": None,
                "stopReason": None,
                "textComplete": False,
                "deltaFrames": 0,
                "messages": r.messages,
                "wireBytes": r.wire_bytes,
                "heartbeats": r.heartbeats,
                "lagsMs": [],
                "lagSeries": [],
                "ttftAddedMs": None,
                "completionDelayMs": None,
                "modelDriftMs": None,
                "startToModelMs": None,
                "streamSeconds": None,
                "connectionSeconds": None,
                "connectSeconds": None,
                "startAnsweredMs": None,
                "error": r.error or "the model stream was not found",
            }
        return {
            **stream_metrics(r, answer.tokens, {**record, "rate": self.scenario.tokens_per_second}),
            "startAnsweredMs": None
            if r.start_answered_at is None or r.sent_at is None
            else (r.start_answered_at - r.sent_at) * 1000.0,
            "error": r.error,
        }


async def drive(
    architecture: str,
    ep: dict[str, Any],
    tokens: list[str],
    received: list[Received],
    window: Callable[[], AbstractContextManager[dict[str, Any]]] = contextlib.nullcontext,
    before_release: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[dict[str, Any], Any]:
    """One level: a client per ``received`` (with the token beside it), started together
    once every one is ready; ``window`` is open while the streams run. Returns what
    ``window`` yielded (the cloud's resources) and what ``before_release`` found (read
    once every stream ended, before the sockets close). A client's exception becomes its
    stream's error."""
    gate = clients.Gate(len(received))
    connector = aiohttp.TCPConnector(limit=0)
    found = None
    async with aiohttp.ClientSession(connector=connector) as session:
        run = _client(architecture, session, ep)
        tasks = [
            asyncio.create_task(run(token, r, gate))
            for token, r in zip(tokens, received, strict=True)
        ]
        ready = asyncio.create_task(gate.start.wait())
        done, _ = await asyncio.wait(
            {ready, *tasks}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:  # a client failed before it was ready, or time ran out
            await gate.start.abort()
        with window() as resources:
            try:
                async with asyncio.timeout(clients.STREAM_TIMEOUT_S + 30):
                    await gate.all_ended.wait()
            except TimeoutError:
                log.warning("streams did not end in time", extra={"level": len(received)})
        if before_release is not None:
            found = await before_release()
        gate.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for r, outcome in zip(received, outcomes, strict=True):
        if isinstance(outcome, BaseException) and r.error is None:
            r.error = f"{type(outcome).__name__}: {outcome}"[:300]
    return resources if resources is not None else {}, found


def _client(architecture: str, session: aiohttp.ClientSession, ep: dict[str, Any]) -> Callable:
    if architecture == "function_url":
        return lambda token, r, gate: clients.function_url(session, ep, token, r, gate)
    if architecture == "rest_stream":
        return lambda token, r, gate: clients.rest_stream(session, ep, token, r, gate)
    if architecture == "websocket":
        return lambda token, r, gate: clients.websocket(ep, token, r, gate)
    return lambda token, r, gate: clients.appsync(session, ep, token, r, gate)


def _recorded(session: CloudSession, runs: Callable[[], Any]) -> Any:
    """Run ``runs`` (a coroutine factory) with DynamoDB/SQS recording on."""

    async def go() -> tuple[Any, dict[str, Any]]:
        await asyncio.to_thread(session.recorder.start)
        result = await runs()
        counted = await asyncio.to_thread(session.recorder.stop)
        return result, counted

    return go()


async def run_mode(
    scenario: Scenario, mode: str, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Everything one cloud does: ``coalesce`` runs the default scenario and the sweep,
    ``per_token`` the baseline (one stream per architecture)."""
    started = time.monotonic()
    cloud = BenchCloud(scenario.app_env(mode), mode)
    await asyncio.to_thread(cloud.start)
    try:
        progress(f"{mode}: local cloud up in {cloud.started_in_s:.1f} s")
        session = CloudSession(cloud, scenario)
        single: dict[str, Any] = {}
        repeats = scenario.repeats if mode == "coalesce" else 1
        for arch in scenario.architectures:

            async def runs(arch: str = arch) -> list[dict[str, Any]]:
                out = []
                for i in range(repeats):
                    level = await session.run_level(arch, 1)
                    progress(level_line(mode, arch, 1, level, i + 1, repeats))
                    out.append(level)
                return out

            levels, counted = await _recorded(session, runs)
            single[arch] = {"runs": levels, "calls": counted}
        sweep: dict[str, list[dict[str, Any]]] = {a: [] for a in scenario.architectures}
        if mode == "coalesce":
            for n in sorted(x for x in scenario.levels if x > 1):
                for arch in scenario.architectures:
                    level = await session.run_level(arch, n)
                    progress(level_line(mode, arch, n, level))
                    sweep[arch].append(level)
    finally:
        await asyncio.to_thread(cloud.stop)
    return {
        "mode": mode,
        "single": single,
        "sweep": sweep,
        "wallSeconds": time.monotonic() - started,
    }


def level_line(mode: str, arch: str, n: int, level: dict[str, Any], i: int = 1, of: int = 1) -> str:
    s = summarize(level["streams"])
    rep = f" run {i}/{of}" if of > 1 else ""
    return (
        f"{mode:9} {arch:12} x{n:<3}{rep}: lag p99 {s['lagP99Ms']:.0f} ms, completion p99 "
        f"{s['completionP99Ms']:.0f} ms, frames {s['frames']}, lost {s['lost']}, "
        f"dup {s['duplicates']}, failed {len(level['errors'])}"
        + (f" ({'; '.join(sorted(set(level['errors']))[:3])})" if level["errors"] else "")
    )


async def run(scenario: Scenario, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole benchmark: the coalescing cloud, then (optionally) the baseline cloud."""
    scenario.validate()
    started = time.monotonic()
    results = {"coalesce": await run_mode(scenario, "coalesce", progress)}
    if scenario.baseline:
        results["per_token"] = await run_mode(scenario, "per_token", progress)
    return {"scenario": scenario, "modes": results, "wallSeconds": time.monotonic() - started}
