"""What every local emulator shares: an aiohttp application served on loopback, and
a small synchronous JSON client for the emulators' control routes."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web


def url_host(host: str) -> str:
    """The host to put in URLs for a listening address (wildcards mean loopback)."""
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"[{host}]" if ":" in host else host


class ControlError(ValueError):
    """A bad body on a control route."""


async def apply_control(
    request: web.Request, apply: Callable[[dict[str, Any]], Any]
) -> web.Response:
    """A control route's POST: the JSON object body goes to ``apply``, whose answer is
    returned; a body that is not one, or that ``apply`` refuses, answers 400."""
    try:
        body = json.loads(await request.read() or b"{}")
        if not isinstance(body, dict):
            raise ControlError("body must be a JSON object")
        return web.json_response(apply(body))
    except ValueError as exc:  # bad JSON, ControlError
        return web.json_response({"message": str(exc)}, status=400)


def cors_preflight(
    request: web.Request, allow_headers: Iterable[str], methods: str
) -> web.Response:
    """A CORS preflight answer allowing ``allow_headers`` plus whatever well-formed header
    the browser asks for, so a new SDK header does not break a browser client."""
    allowed = list(allow_headers)
    requested = request.headers.get("Access-Control-Request-Headers", "")
    for name in (h.strip().lower() for h in requested.split(",")):
        if name and name not in allowed and re.fullmatch(r"[a-z0-9-]+", name):
            allowed.append(name)
    return web.Response(
        status=200,
        headers={
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ", ".join(allowed),
            "Access-Control-Max-Age": "86400",
        },
    )


class Served:
    """One aiohttp application on ``host:port`` (0 picks a free port)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    @property
    def serving(self) -> bool:
        return self._runner is not None

    @property
    def endpoint(self) -> str:
        """``http://host:port/`` while serving."""
        if self._runner is None:
            raise RuntimeError(f"The {self._what} is not serving; start() it first.")
        return f"http://{self.host}:{self.port}/"

    async def start(self, app: web.Application, host: str, port: int, **runner_options: Any) -> int:
        """Serve ``app``; returns the actual port."""
        if self._runner is not None:
            raise RuntimeError(f"The {self._what} is already serving; stop() it first.")
        runner = web.AppRunner(app, access_log=None, **runner_options)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = url_host(host)
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None


class JsonClient:
    """Synchronous JSON calls to a local service (tests, bench, orchestrator)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())
