"""The comparison client's host (docs/local-cloud.md): ``client/dist`` as static files on its own
port, plus ``GET /config`` proxied to the REST API's ``/config``.

The client fetches ``./config`` from its own origin, so one build works anywhere: here
this host routes it, on AWS a CloudFront behaviour does. Until the client is built the
page says how to build it; the files are looked up per request, so a build made while the
cloud runs is served on the next reload.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import aiohttp
from aiohttp import web

from local.http_service import Served

log = logging.getLogger("local.client_host")

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DIST = ROOT / "client" / "dist"
BUILD_HINT = "make client"
CONFIG_TIMEOUT_S = 10.0

# The page talks to the other local services (other ports, ws://), never to other hosts'
# scripts; no inline scripts; uPlot sets inline styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' http: https: ws: wss:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-stream client not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>The comparison client is not built yet</h1>
<p>Build it with <code>{hint}</code> (in the repository root), then reload this page.
The local cloud keeps running meanwhile.</p>
<p>Looked for <code>{path}</code>.</p>
</body></html>
"""


def is_built(dist: Path = CLIENT_DIST) -> bool:
    return (dist / "index.html").is_file()


class ClientHost:
    """Serves ``dist`` and proxies ``GET /config`` to ``rest_url`` + ``config``."""

    def __init__(self, rest_url: str, dist: Path = CLIENT_DIST) -> None:
        self.rest_url = rest_url.rstrip("/") + "/"
        self.dist = dist.resolve()
        self._served = Served("client host")
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._served.endpoint

    async def start(self, host: str, port: int) -> int:
        app = web.Application(middlewares=[self._headers])
        app.router.add_get("/config", self._config)
        app.router.add_get("/", self._index)
        app.router.add_get("/{path:.+}", self._file)
        timeout = aiohttp.ClientTimeout(total=CONFIG_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            return await self._served.start(app, host, port)
        except BaseException:
            await self._session.close()
            raise

    async def stop(self) -> None:
        await self._served.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: web.RequestHandler
    ) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _config(self, request: web.Request) -> web.Response:
        assert self._session is not None
        try:
            async with self._session.get(self.rest_url + "config") as upstream:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status,
                    body=body,
                    content_type="application/json",
                    headers={"Cache-Control": "no-store"},
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "GET /config: the REST API did not answer", extra={"error": type(exc).__name__}
            )
            return web.json_response(
                {"error": {"code": "BAD_GATEWAY", "message": "The REST API did not answer."}},
                status=502,
            )

    async def _index(self, request: web.Request) -> web.StreamResponse:
        index = self.dist / "index.html"
        if not index.is_file():
            page = _NOT_BUILT.format(hint=html.escape(BUILD_HINT), path=html.escape(str(index)))
            return web.Response(text=page, content_type="text/html", status=503)
        # The page names the hashed assets of the current build: always revalidate it.
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = (self.dist / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.dist) or not path.is_file():
            raise web.HTTPNotFound()
        # Vite's assets carry a content hash in their names; anything else revalidates.
        hashed = path.parent == self.dist / "assets"
        cache = "public, max-age=31536000, immutable" if hashed else "no-cache"
        return web.FileResponse(path, headers={"Cache-Control": cache})
