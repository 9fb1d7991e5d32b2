"""The local Function URL host runs on the Node.js that ``LOCAL_NODE_BINARY`` names.

The Makefile sets it to Node of the Lambda runtime's major (nodejs24.x), installed from the
npm registry when the machine's is older, so ``make run`` and ``make test`` serve the function
on the Node it is deployed on.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from local.function_url import FunctionUrlHost

VERSION_HANDLER = """
export const handler = awslambda.streamifyResponse(async (_event, responseStream) => {
  responseStream.setContentType("application/json");
  responseStream.write(JSON.stringify({ version: process.version }));
  responseStream.end();
});
"""


def served_version(handler: Path, **options: str) -> str:
    with FunctionUrlHost(handler, {}, [], **options) as host:
        assert host.url is not None
        with urllib.request.urlopen(host.url, timeout=30) as response:
            return str(json.loads(response.read())["version"])


def version_of(binary: str) -> str:
    resolved = shutil.which(binary)
    assert resolved is not None, f"{binary} is not installed"
    return subprocess.run([resolved, "--version"], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    module = tmp_path / "version.mjs"
    module.write_text(VERSION_HANDLER)
    return module


def test_the_host_runs_the_binary_named_by_local_node_binary(handler, tmp_path, monkeypatch):
    real = shutil.which(os.environ.get("LOCAL_NODE_BINARY") or "node")
    assert real is not None
    marker = tmp_path / "wrapper-ran"
    wrapper = tmp_path / "node-wrapper"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("LOCAL_NODE_BINARY", str(wrapper))

    assert served_version(handler) == version_of(real)
    assert marker.exists()


def test_an_explicit_node_argument_wins_over_the_setting(handler, monkeypatch):
    monkeypatch.setenv("LOCAL_NODE_BINARY", "/nonexistent/node")
    assert served_version(handler, node="node") == version_of("node")


def test_the_host_serves_on_the_configured_node_version(handler):
    # Under make test this is Node 24 (the Makefile's LOCAL_NODE_BINARY); run alone, the
    # machine's node: either way the function sees exactly the binary the setting names.
    expected = version_of(os.environ.get("LOCAL_NODE_BINARY") or "node")
    assert served_version(handler) == expected
