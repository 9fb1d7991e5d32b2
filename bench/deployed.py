"""The benchmark against a deployed stack (``python -m bench --target deployed``).

The stack's outputs (``cdk deploy --outputs-file``: ``{"LlmStream": {"FunctionUrl": ...}}``)
name every endpoint; the bench signs in as a bench user and runs the same clients
(``bench.clients``) as on the local cloud, one level at a time. What only the local cloud
can give is left out and the report says so: the simulated model's emit times (the
``done`` frame's ``metrics.modelFirstTokenMs`` and ``modelLatencyMs`` stand in, see
``metrics.reported_stream_metrics``), the DynamoDB and SQS call counts, the server-side
publish counts and the cloud's CPU and memory.

Bench users: ``BENCH_USERNAME`` / ``BENCH_PASSWORD`` (e.g. a user from ``make user``), one
user running at most the stack's per-user stream cap at once; or ``--create-users``:
users created with Cognito admin calls (the default AWS credential chain) for this run
and deleted at its end. ``CognitoEndpoint`` in the outputs overrides Cognito's regional
endpoint (tests point it at the local cloud's Cognito).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from botocore.exceptions import BotoCoreError, ClientError

from bench.metrics import Received, reported_stream_metrics
from bench.runner import drive, level_line
from bench.scenario import Scenario

log = logging.getLogger("bench.deployed")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUTS = ROOT / ".local" / "stack-outputs.json"
DEFAULT_STACK = "LlmStream"
MODE = "deployed"
# The stack's per-user cap on running streams when GET /config does not say.
DEFAULT_STREAMS_PER_USER = 3
# Between levels: how long to wait for the stack to mark the streams ended, polled at.
SETTLE_TIMEOUT_S = 30.0
SETTLE_POLL_S = 0.2
REQUIRED_OUTPUTS = (
    "FunctionUrl",
    "WebsocketUrl",
    "AppsyncGraphqlUrl",
    "AppsyncRealtimeUrl",
    "UserPoolId",
    "UserPoolClientId",
    "Region",
)


class DeployedError(RuntimeError):
    """The deployed target cannot run; the message says what to fix."""


@dataclass(frozen=True)
class StackOutputs:
    stack: str
    region: str
    user_pool_id: str
    client_id: str
    function_url: str
    websocket_url: str
    graphql_url: str
    realtime_url: str
    rest_url: str | None = None
    rest_stream_url: str | None = None
    client_url: str | None = None
    # Cognito's endpoint when it is not the regional one (the local cloud's, in tests).
    cognito_endpoint: str | None = None

    def endpoints(self) -> dict[str, Any]:
        """The endpoints in the shape ``bench.clients`` reads."""
        return {
            "functionUrl": self.function_url,
            "restStream": self.rest_stream_url,
            "websocket": self.websocket_url,
            "appsync": {"graphql": self.graphql_url, "realtime": self.realtime_url},
        }


def load_outputs(path: Path, stack: str | None = None) -> StackOutputs:
    """The stack's outputs from a CDK ``--outputs-file`` JSON, or from the local cloud's
    ``.local/endpoints.json`` (to try the target without AWS)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployedError(
            f"{path} does not exist: deploy with `cdk deploy --outputs-file {path}` (or pass "
            "--outputs with the file your deploy wrote)"
        ) from None
    except ValueError as exc:
        raise DeployedError(f"{path} is not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("cognito"), dict) and "rest" in doc:
        doc = local_stack_outputs(doc)  # the local cloud's endpoints file: a dry run
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise DeployedError(f"{path} should map stack names to their outputs")
    if stack is None:
        stack = DEFAULT_STACK if DEFAULT_STACK in doc or len(doc) != 1 else next(iter(doc))
    if stack not in doc:
        raise DeployedError(
            f"{path} has no stack {stack!r} (it has {', '.join(sorted(doc)) or 'none'}); "
            "pass --stack"
        )
    out: Mapping[str, Any] = doc[stack]
    missing = [k for k in REQUIRED_OUTPUTS if not isinstance(out.get(k), str) or not out[k]]
    if missing:
        raise DeployedError(f"{path}: stack {stack!r} lacks the outputs {', '.join(missing)}")
    return StackOutputs(
        stack=stack,
        region=out["Region"],
        user_pool_id=out["UserPoolId"],
        client_id=out["UserPoolClientId"],
        function_url=out["FunctionUrl"],
        websocket_url=out["WebsocketUrl"],
        graphql_url=out["AppsyncGraphqlUrl"],
        realtime_url=out["AppsyncRealtimeUrl"],
        rest_url=out.get("RestApiUrl") or None,
        rest_stream_url=out.get("RestStreamUrl") or None,
        client_url=out.get("ClientUrl") or None,
        cognito_endpoint=out.get("CognitoEndpoint") or None,
    )


def local_stack_outputs(endpoints: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """A stack-outputs document for the local cloud (``.local/endpoints.json``), so the
    deployed target can be tried, and tested, without AWS."""
    c = endpoints["cognito"]
    return {
        DEFAULT_STACK: {
            "ClientUrl": endpoints["client"],
            "RestApiUrl": endpoints["rest"],
            "FunctionUrl": endpoints["functionUrl"],
            "RestStreamUrl": endpoints.get("restStream") or "",
            "WebsocketUrl": endpoints["websocket"],
            "AppsyncGraphqlUrl": endpoints["appsync"]["graphql"],
            "AppsyncRealtimeUrl": endpoints["appsync"]["realtime"],
            "UserPoolId": c["userPoolId"],
            "UserPoolClientId": c["clientId"],
            "Region": c["region"],
            "CognitoEndpoint": c["endpoint"],
        }
    }


def public_config(outputs: StackOutputs) -> dict[str, Any]:
    """``GET /config`` of the stack (model, limits, flush interval); {} without a REST URL."""
    if outputs.rest_url is None:
        return {}
    url = outputs.rest_url.rstrip("/") + "/config"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        log.warning("GET %s failed: %s", url, exc)
        return {}
    return doc if isinstance(doc, dict) else {}


# -- bench users ----------------------------------------------------------------------------


class BenchUsers:
    """ID tokens of signed-in bench users, each running at most ``streams_per_user``
    streams of a level (the stack's per-user cap).

    With ``username``/``password``, that one user; with ``create``, users made with admin
    calls as a level needs them (deleted by ``close``).
    """

    def __init__(
        self,
        outputs: StackOutputs,
        *,
        username: str | None,
        password: str | None,
        create: bool,
        streams_per_user: int,
    ) -> None:
        if not create and not (username and password):
            raise DeployedError(
                "sign in as a bench user: set BENCH_USERNAME and BENCH_PASSWORD (e.g. a user "
                "from `make user`), or pass --create-users to create bench users with Cognito "
                "admin calls (AdminCreateUser, AdminSetUserPassword, AdminDeleteUser on the "
                "pool, with your AWS credentials)"
            )
        self._outputs = outputs
        self._create = create
        self._per_user = max(1, streams_per_user)
        self._run = secrets.token_hex(3)
        self._created: list[str] = []
        self.created_names: list[str] = []  # kept after close, for the report
        self._idp = boto3.client(
            "cognito-idp", region_name=outputs.region, endpoint_url=outputs.cognito_endpoint
        )
        self._tokens: list[str] = []
        if not create:
            assert username is not None and password is not None
            self._tokens.append(self._sign_in(username, password))

    def users_for(self, n: int) -> int:
        return math.ceil(n / self._per_user)

    def check(self, levels: tuple[int, ...]) -> None:
        """Refuse before anything runs when a level needs more users than there are."""
        needed = self.users_for(max(levels))
        if not self._create and needed > 1:
            raise DeployedError(
                f"{max(levels)} concurrent streams need {needed} bench users (each may run "
                f"{self._per_user} streams at once); pass --create-users or lower --levels "
                f"to at most {self._per_user}"
            )

    def tokens(self, n: int) -> list[str]:
        """``n`` ID tokens, one per stream, no user's more than ``streams_per_user`` times."""
        while len(self._tokens) < self.users_for(n):
            self._tokens.append(self._new_user())
        return [self._tokens[i // self._per_user] for i in range(n)]

    def _new_user(self) -> str:
        name = f"bench-{self._run}-{len(self._created) + 1:03d}"
        password = f"Bench-{secrets.token_urlsafe(9)}-1a"
        pool = self._outputs.user_pool_id
        try:
            self._idp.admin_create_user(UserPoolId=pool, Username=name, MessageAction="SUPPRESS")
            self._created.append(name)
            self.created_names.append(name)
            self._idp.admin_set_user_password(
                UserPoolId=pool, Username=name, Password=password, Permanent=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise DeployedError(f"could not create the bench user {name}: {exc}") from None
        return self._sign_in(name, password)

    def _sign_in(self, username: str, password: str) -> str:
        try:
            result = self._idp.initiate_auth(
                ClientId=self._outputs.client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": username, "PASSWORD": password},
            )
        except (BotoCoreError, ClientError) as exc:
            raise DeployedError(f"sign-in of the bench user {username} failed: {exc}") from None
        if "AuthenticationResult" not in result:
            raise DeployedError(
                f"sign-in of the bench user {username} asks for {result.get('ChallengeName')}: "
                "finish it first (a user from `make user` has a permanent password)"
            )
        return str(result["AuthenticationResult"]["IdToken"])

    def close(self) -> None:
        """Delete the users this run created."""
        for name in self._created:
            try:
                self._idp.admin_delete_user(UserPoolId=self._outputs.user_pool_id, Username=name)
            except (BotoCoreError, ClientError) as exc:
                log.warning("could not delete the bench user %s: %s", name, exc)
        self._created = []


def bench_users(outputs: StackOutputs, create: bool, streams_per_user: int) -> BenchUsers:
    """The bench users, from ``BENCH_USERNAME`` / ``BENCH_PASSWORD`` unless ``create``."""
    return BenchUsers(
        outputs,
        username=os.environ.get("BENCH_USERNAME"),
        password=os.environ.get("BENCH_PASSWORD"),
        create=create,
        streams_per_user=streams_per_user,
    )


# -- the run --------------------------------------------------------------------------------


def prompt(stream_id: str, tokens: int) -> str:
    """A prompt a real model answers at length (it is cut at ``maxTokens``); the directive
    at the end sets the simulated model's answer length when the target is the local
    cloud."""
    return (
        f"Benchmark stream {stream_id}. Write a long essay in plain prose, without headings "
        f"or lists, on the history of movable type, and keep writing. [tokens={tokens}]"
    )


class DeployedSession:
    def __init__(self, outputs: StackOutputs, users: BenchUsers, scenario: Scenario) -> None:
        self.outputs = outputs
        self.users = users
        self.scenario = scenario
        self.ep = outputs.endpoints()

    async def run_level(self, architecture: str, n: int) -> dict[str, Any]:
        tokens = await asyncio.to_thread(self.users.tokens, n)
        received = [
            Received(
                architecture,
                sid,
                prompt(sid, self.scenario.tokens),
                max_tokens=self.scenario.tokens,
            )
            for sid in (str(uuid.uuid4()) for _ in range(n))
        ]
        await drive(architecture, self.ep, tokens, received)
        await self._settle(tokens, received)
        streams = [
            {
                **reported_stream_metrics(r),
                "startAnsweredMs": None
                if r.start_answered_at is None or r.sent_at is None
                else (r.start_answered_at - r.sent_at) * 1000.0,
                "error": r.error,
            }
            for r in received
        ]
        return {
            "architecture": architecture,
            "concurrency": n,
            "streams": streams,
            "errors": [r.error for r in received if r.error],
            "serverCalls": None,  # not counted on AWS
            "resources": {},  # the cloud's CPU and memory are AWS's
        }

    async def _settle(self, tokens: list[str], received: list[Received]) -> None:
        """Wait until the stack has marked every stream of the level ended: a producer
        frees its user's slot just after the terminal frame, and the next level's starts
        would otherwise find the user still at the cap (``TOO_MANY_STREAMS``)."""
        if self.outputs.rest_url is None:
            return
        base = self.outputs.rest_url.rstrip("/")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        pending = {r.stream_id: (t, r) for t, r in zip(tokens, received, strict=True)}
        async with aiohttp.ClientSession() as http:
            while pending and time.monotonic() < deadline:
                for sid, (token, r) in list(pending.items()):
                    last = max((f["seq"] for _, f in r.frames if "seq" in f), default=-1)
                    url = f"{base}/streams/{sid}?afterSeq={last}"
                    headers = {"Authorization": f"Bearer {token}"}
                    try:
                        async with http.get(url, headers=headers) as resp:
                            status = resp.status
                            doc = await resp.json(content_type=None) if status == 200 else {}
                    except (aiohttp.ClientError, ValueError) as exc:
                        log.warning("reading stream %s failed: %s", sid, exc)
                        status, doc = 0, {}
                    # 404: the start was refused, there is nothing to wait for.
                    if status != 200 or doc.get("status") != "running":
                        del pending[sid]
                if pending:
                    await asyncio.sleep(SETTLE_POLL_S)
        if pending:
            log.warning("%d streams still running after %g s", len(pending), SETTLE_TIMEOUT_S)


def model_tokens_at_most(scenario: Scenario) -> int:
    """Output tokens the run asks the model for, at most (what Bedrock bills)."""
    streams = scenario.repeats + sum(n for n in scenario.levels if n > 1)
    return streams * len(scenario.architectures) * scenario.tokens


async def run(
    scenario: Scenario,
    outputs: StackOutputs,
    users: BenchUsers,
    config: Mapping[str, Any],
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every architecture: ``repeats`` single streams, then each level of the sweep."""
    scenario.validate()
    users.check(scenario.levels)
    started = time.monotonic()
    session = DeployedSession(outputs, users, scenario)
    single: dict[str, Any] = {}
    sweep: dict[str, list[dict[str, Any]]] = {a: [] for a in scenario.architectures}
    for arch in scenario.architectures:
        levels = []
        for i in range(scenario.repeats):
            level = await session.run_level(arch, 1)
            progress(level_line(MODE, arch, 1, level, i + 1, scenario.repeats))
            levels.append(level)
        single[arch] = {"runs": levels, "calls": None}  # no DynamoDB/SQS counting on AWS
    for n in sorted(x for x in scenario.levels if x > 1):
        for arch in scenario.architectures:
            level = await session.run_level(arch, n)
            progress(level_line(MODE, arch, n, level))
            sweep[arch].append(level)
    model = config.get("model") or {}
    return {
        "scenario": scenario,
        "target": {
            "name": MODE,
            "stack": outputs.stack,
            "region": outputs.region,
            "clientUrl": outputs.client_url,
            "modelId": model.get("id"),
            "modelLabel": model.get("label"),
            "flushIntervalMs": config.get("flushIntervalMs"),
            "benchUsers": list(users.created_names),  # created for the run, then deleted
        },
        "modes": {
            MODE: {
                "mode": MODE,
                "single": single,
                "sweep": sweep,
                "wallSeconds": time.monotonic() - started,
            }
        },
        "wallSeconds": time.monotonic() - started,
    }
