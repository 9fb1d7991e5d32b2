"""The local Lambda Function URL: ``local/function_url_host.mjs`` run as a child process.

:class:`FunctionUrlHost` starts ``node local/function_url_host.mjs`` for one streaming
handler module (``node_function/index.mjs`` in the local cloud), waits for the line
``{"listening": "http://HOST:PORT/"}`` and forwards everything else the child prints to
``logging``: its JSON log records (stderr) under ``local.function_url`` at their level,
and the handler's own console output under ``local.function_url.console``.

The records are also kept (the most recent ones), so tests can wait for one, e.g. the
``invoke_end`` of a request id (:meth:`FunctionUrlHost.wait_for_log`).

With ``invoke_port`` the host also serves Lambda's InvokeWithResponseStream for the
function at :attr:`FunctionUrlHost.invoke_url` (what the local REST API's streaming
routes call, ``local/rest_stream.py``); :meth:`FunctionUrlHost.invocations` counts the
invocations by way in.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

HOST_SCRIPT = Path(__file__).with_name("function_url_host.mjs")

log = logging.getLogger("local.function_url")
console_log = logging.getLogger("local.function_url.console")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_STOP_GRACE_S = 5.0
_KEPT_RECORDS = 5000


class FunctionUrlHostError(RuntimeError):
    """The Function URL host could not be started (the message says why)."""


class FunctionUrlHost:
    """A Node handler module served as a Lambda Function URL on ``host:port`` (0 = any)."""

    def __init__(
        self,
        handler_path: str | Path,
        env: Mapping[str, str],
        cors_origins: Iterable[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        export: str = "handler",
        function_name: str = "function-url-local",
        timeout_s: float = 900.0,
        node: str | None = None,
        start_timeout_s: float = 30.0,
        invoke_port: int | None = None,
    ) -> None:
        self.handler_path = Path(handler_path).resolve()
        self.env = dict(env)
        self.cors_origins = list(cors_origins)
        self.host = host
        self.port = port
        self.export = export
        self.function_name = function_name
        self.timeout_s = timeout_s
        # The Makefile points LOCAL_NODE_BINARY at Node of the Lambda runtime's major (24).
        self.node = node or os.environ.get("LOCAL_NODE_BINARY") or "node"
        self.start_timeout_s = start_timeout_s
        self.invoke_port = invoke_port
        self.url: str | None = None
        self.invoke_url: str | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._pumps: list[threading.Thread] = []
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=_KEPT_RECORDS)
        self._tail: collections.deque[str] = collections.deque(maxlen=30)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> str:
        """Start the host; returns its URL (``http://host:port/``)."""
        if self._proc is not None:
            raise FunctionUrlHostError("the Function URL host is already running")
        node = shutil.which(self.node)
        if node is None:
            raise FunctionUrlHostError(
                f"Node.js ({self.node!r}) is not installed or not on PATH; the local Function "
                "URL needs Node.js 24 (the Lambda runtime's), which make run and make test "
                "install when missing, or set LOCAL_NODE_BINARY."
            )
        if not self.handler_path.is_file():
            raise FunctionUrlHostError(f"the handler module {self.handler_path} does not exist")
        args = [
            node,
            str(HOST_SCRIPT),
            "--handler",
            str(self.handler_path),
            "--export",
            self.export,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--cors-origins",
            ",".join(self.cors_origins),
            "--timeout-s",
            str(self.timeout_s),
            "--function-name",
            self.function_name,
            "--exit-with-stdin",
        ]
        if self.invoke_port is not None:
            args += ["--invoke-port", str(self.invoke_port)]
        self._ready.clear()
        self.url = self.invoke_url = self.returncode = None
        self._proc = subprocess.Popen(
            args,
            # Like Lambda's /var/task: relative paths resolve next to the handler.
            cwd=self.handler_path.parent,
            env={**os.environ, **self.env},
            # Our end of stdin is the child's lifeline: if this process dies, it stops.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._pumps = [
            threading.Thread(
                target=self._pump_stdout,
                args=(self._proc.stdout,),
                name="function-url-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._pump_stderr,
                args=(self._proc.stderr,),
                name="function-url-stderr",
                daemon=True,
            ),
        ]
        for pump in self._pumps:
            pump.start()

        if not self._ready.wait(self.start_timeout_s):
            self.stop()
            raise FunctionUrlHostError(
                f"the Function URL host did not start within {self.start_timeout_s:g} s"
                f"{self._failure_detail()}"
            )
        if self.url is None:  # stdout closed: the child exited before listening
            code = self._proc.wait(timeout=_STOP_GRACE_S)
            self._join_pumps()
            self._proc = None
            self.returncode = code
            raise FunctionUrlHostError(
                f"the Function URL host for {self.handler_path} exited (code {code}) before "
                f"listening{self._failure_detail()}"
            )
        log.info("Function URL for %s at %s", self.handler_path, self.url)
        return self.url

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Safe to call more than once."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning(
                    "the Function URL host ignored SIGTERM for %g s; killing it", _STOP_GRACE_S
                )
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        self._join_pumps()
        self.returncode = proc.returncode
        self.url = self.invoke_url = None

    def __enter__(self) -> FunctionUrlHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def invocations(self) -> dict[str, int]:
        """Invocations so far: ``{"functionUrl": n, "streaming": n}`` (needs ``invoke_port``)."""
        if self.invoke_url is None:
            raise FunctionUrlHostError("the host was started without an invoke port")
        with urllib.request.urlopen(f"{self.invoke_url}_local/invocations", timeout=5) as resp:
            counts: dict[str, int] = json.loads(resp.read())
        return counts

    # -- the child's output ---------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """The host's log records so far (the most recent ones)."""
        with self._cond:
            return list(self._records)

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """The first record (already logged or still to come) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self._records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching Function URL host log within {timeout} s")
                self._cond.wait(remaining)

    def _pump_stdout(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if self.url is None:
                announced = _json_object(line)
                listening = announced.get("listening")
                if isinstance(listening, str):
                    invoke = announced.get("invoke")
                    self.invoke_url = invoke if isinstance(invoke, str) else None
                    self.url = listening
                    self._ready.set()
                    continue
            console_log.info("%s", line)
        self._ready.set()  # EOF: start() stops waiting and reports the exit

    def _pump_stderr(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            self._tail.append(line)
            record = _json_object(line)
            if "event" not in record:
                # console.error/warn of the handler, or Node's own warnings.
                console_log.warning("%s", line)
                continue
            with self._cond:
                self._records.append(record)
                self._cond.notify_all()
            fields = {k: v for k, v in record.items() if k not in ("time", "level", "event")}
            level = _LEVELS.get(str(record.get("level")), logging.INFO)
            log.log(level, "%s %s", record["event"], json.dumps(fields) if fields else "")

    def _join_pumps(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=_STOP_GRACE_S)
        self._pumps = []

    def _failure_detail(self) -> str:
        errors = [
            f"{r['event']}: {r.get('message') or r.get('errorMessage') or ''}".rstrip(": ")
            for r in self.records()
            if r.get("level") == "error"
        ]
        if errors:
            return ": " + "; ".join(errors)
        if self._tail:
            return ":\n" + "\n".join(self._tail)
        return ""


def _json_object(line: str) -> dict[str, Any]:
    if not line.startswith("{"):
        return {}
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
