"""The local cloud as `make run` starts it (``python -m local``), for end-to-end tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3

from chalicelib.settings import Settings
from chalicelib.stream_store import StreamStore

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
CREDS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class Cloud:
    """A running ``python -m local`` process and what it printed."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.endpoints_file = tmp / "endpoints.json"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        child_env.pop("LOCAL_MODEL", None)  # the simulated model unless a test asks
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local",
                "--port-base",
                "0",
                "--endpoints-file",
                str(self.endpoints_file),
            ],
            cwd=ROOT,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.wait_for("READY", START_TIMEOUT_S)
        except BaseException:
            self.proc.kill()
            raise
        self.ep: dict[str, Any] = json.loads(self.endpoints_file.read_text())

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout}s: {self.output}") from None
            self.output.append(line)
            if line == text:
                return

    def drain_output(self) -> list[str]:
        """Everything printed so far (logs included)."""
        while True:
            try:
                self.output.append(self.lines.get_nowait())
            except queue.Empty:
                return list(self.output)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def cognito(self) -> Any:
        c = self.ep["cognito"]
        return boto3.client(
            "cognito-idp", region_name=c["region"], endpoint_url=c["endpoint"], **CREDS
        )

    def sign_in(self, username: str, password: str) -> dict[str, str]:
        return self.cognito().initiate_auth(
            ClientId=self.ep["cognito"]["clientId"],
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )["AuthenticationResult"]

    def user_token(self) -> str:
        return self.sign_in(self.ep["user"]["username"], self.ep["user"]["password"])["IdToken"]

    def add_user(self, username: str, password: str) -> str:
        """Create a confirmed user; returns an ID token of theirs."""
        pool = self.ep["cognito"]["userPoolId"]
        idp = self.cognito()
        idp.admin_create_user(UserPoolId=pool, Username=username, MessageAction="SUPPRESS")
        idp.admin_set_user_password(
            UserPoolId=pool, Username=username, Password=password, Permanent=True
        )
        return self.sign_in(username, password)["IdToken"]

    def store(self) -> StreamStore:
        ddb = boto3.client(
            "dynamodb", region_name="us-east-1", endpoint_url=self.ep["aws"], **CREDS
        )
        return StreamStore(Settings(), client_factory=lambda: ddb)


def model_stream(model: Any, prompt: str) -> dict[str, Any]:
    """The Bedrock emulator's record of the one model stream opened for ``prompt``."""
    from local.simulated_model import prompt_hash, request_for_prompt

    wanted = prompt_hash(request_for_prompt(prompt))
    (record,) = [s for s in model.streams() if s["promptHash"] == wanted]
    return record


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f.get("text", "") for f in frames)
