"""``LOCAL_MODEL=bedrock``: everything local except the model, which the producers call
with the default AWS credential chain and Region. Never AWS: a Bedrock emulator started
apart from the local cloud stands in for Bedrock's endpoint (``AWS_ENDPOINT_URL_BEDROCK_
RUNTIME`` in the caller's environment, as a user could point the SDKs at any endpoint),
and the credentials are fake ones in a temporary shared credentials file, found through
the chain. A recording middleware shows what each producer signed its model calls with.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web

from bench import clients, deployed
from bench.scenario import ARCHITECTURES, Scenario
from local.bedrock import BedrockEmulator, create_app
from local.http_service import Served
from local.loop import LoopThread
from tests.support.cloud import ROOT, Cloud

pytestmark = pytest.mark.local

KEY_ID = "AKIDLOCALREALMODEL01"  # the first the credential process hands out
SECRET = "fake-secret-for-the-real-model-path"
SESSION_TOKEN = "fake-session-token"
REGION = "eu-west-1"
MODEL_ID = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"


class StandInBedrock:
    """The Bedrock emulator on its own port, recording each model call's signature."""

    def __init__(self) -> None:
        self.emulator = BedrockEmulator(first_token_delay_ms=20, tokens_per_second=400)
        self.calls: list[dict[str, str]] = []
        self._served = Served("stand-in Bedrock")
        self._loop = LoopThread("stand-in-bedrock").start()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/model/"):
            self.calls.append(
                {
                    "path": unquote(request.path),
                    "authorization": request.headers.get("Authorization", ""),
                    "token": request.headers.get("X-Amz-Security-Token", ""),
                    "agent": request.headers.get("User-Agent", ""),
                }
            )
        return await handler(request)

    def start(self) -> str:
        app = create_app(self.emulator)
        app.middlewares.append(self._record)
        self._loop.run(self._served.start(app, "127.0.0.1", 0, handler_cancellation=True))
        return self._served.endpoint

    def stop(self) -> None:
        self._loop.run(self._served.stop())
        self._loop.stop()


# A credential_process that hands out new credentials on every call (as SSO or an assumed
# role would, in effect): every producer must sign with the ones resolved at start-up.
CREDENTIAL_PROCESS = f"""
import json, pathlib
counter = pathlib.Path(__file__).with_suffix(".count")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(json.dumps({{"Version": 1, "AccessKeyId": "{KEY_ID[:-2]}%02d" % n,
                  "SecretAccessKey": "{SECRET}", "SessionToken": "{SESSION_TOKEN}"}}))
"""


def aws_files(tmp: Path, *, credentials: bool = True, region: str | None = REGION) -> dict:
    """Shared AWS files with profile ``bench`` (credentials from a process, and a Region),
    and the environment that names them (and nothing of the machine's own AWS setup)."""
    script, config = tmp / "credential_process.py", tmp / "config"
    script.write_text(CREDENTIAL_PROCESS)
    lines = ["[profile bench]"]
    if credentials:
        lines.append(f"credential_process = {sys.executable} {script}")
    if region:
        lines.append(f"region = {region}")
    config.write_text("\n".join(lines) + "\n")
    (tmp / "credentials").write_text("")
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "credentials"),
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookup from a test
        "LOCAL_MODEL": "bedrock",
    }


@pytest.fixture(scope="module")
def stand_in():
    s = StandInBedrock()
    url = s.start()
    yield s, url
    s.stop()


@pytest.fixture(scope="module")
def cloud(stand_in, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-model")
    env = {
        **aws_files(tmp),
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": stand_in[1],
        "MODEL_ID": MODEL_ID,
    }
    c = Cloud(tmp, env)
    yield c
    c.stop()


def test_config_and_the_endpoints_name_the_real_model(cloud):
    with urllib.request.urlopen(cloud.ep["rest"] + "config", timeout=10) as resp:
        config = json.loads(resp.read())
    assert config["model"] == {"id": MODEL_ID, "label": MODEL_ID}
    assert config["region"] == REGION  # the whole local cloud runs in Bedrock's Region
    assert cloud.ep["bedrock"] is None  # no simulated model is started
    model = cloud.ep["model"]
    assert (model["source"], model["region"], model["id"]) == ("bedrock", REGION, MODEL_ID)
    assert "custom-process" in model["description"]
    banner = "\n".join(cloud.output)
    assert f"Amazon Bedrock in {REGION}, {MODEL_ID}" in banner
    assert SECRET not in banner and SESSION_TOKEN not in banner
    assert SECRET not in json.dumps(cloud.ep)


def test_every_producer_calls_bedrock_with_the_chains_credentials(cloud, stand_in, monkeypatch):
    # A producer that cannot deliver fails the test in seconds, not after the bench's 300 s.
    monkeypatch.setattr(clients, "STREAM_TIMEOUT_S", 20.0)
    standin, _ = stand_in
    standin.calls.clear()
    outputs_file = Path(cloud.endpoints_file).with_name("stack-outputs.json")
    outputs_file.write_text(json.dumps(deployed.local_stack_outputs(cloud.ep)))
    outputs = deployed.load_outputs(outputs_file)
    user = cloud.ep["user"]
    users = deployed.BenchUsers(
        outputs,
        username=user["username"],
        password=user["password"],
        create=False,
        streams_per_user=3,
    )
    session = deployed.DeployedSession(outputs, users, Scenario(tokens=20))
    for arch in ARCHITECTURES:
        level = asyncio.run(session.run_level(arch, 1))
        (s,) = level["streams"]
        # AppSync completing means the local AppSync accepted the worker's SigV4 made
        # with the chain's credentials.
        assert (s["error"], s["terminal"], s["lost"], s["textComplete"]) == (
            None,
            "done",
            0,
            True,
        ), arch
        assert s["modelTokensSent"] == 20
    assert len(standin.calls) == len(ARCHITECTURES)
    agents = []
    for call in standin.calls:
        assert call["path"] == f"/model/{MODEL_ID}/converse-stream"
        assert f"Credential={KEY_ID}/" in call["authorization"]
        assert f"/{REGION}/bedrock/aws4_request" in call["authorization"]
        assert call["token"] == SESSION_TOKEN
        agents.append(call["agent"])
    # The Node.js function (behind its Function URL and behind the REST API's streaming
    # routes) and the Python functions (WebSocket generator, AppSync worker).
    node = {"function_url", "rest_stream"}
    assert sum("aws-sdk-js" in a for a in agents) == len(node & set(ARCHITECTURES))
    assert sum("Botocore/" in a for a in agents) == len(set(ARCHITECTURES) - node)


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "local", "--port-base", "0", "--endpoints-file", "/dev/null"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_credentials_start_up_stops_and_says_what_is_missing(tmp_path):
    started = time.monotonic()
    done = _start(aws_files(tmp_path, credentials=False))
    assert done.returncode == 1
    assert "LOCAL_MODEL=bedrock needs AWS credentials and found none" in done.stderr
    assert "aws configure" in done.stderr and "without LOCAL_MODEL" in done.stderr
    assert "Local cloud is up" not in done.stdout
    assert time.monotonic() - started < 30  # stops before starting any service


def test_without_a_region_start_up_stops_and_says_so(tmp_path):
    done = _start(aws_files(tmp_path, region=None))
    assert done.returncode == 1
    assert "needs a Region for Bedrock and found none: set AWS_REGION" in done.stderr
