"""The comparison client's host: the built client as static files and ``GET /config``
proxied to the REST API, so the page finds its settings on its own origin."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from local.__main__ import _client_line
from local.client_host import ClientHost
from local.http_service import Served
from local.loop import LoopThread

CONFIG = {"region": "us-east-1", "endpoints": {"rest": "http://127.0.0.1:1/"}}


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("test-client-host").start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def rest(loop: LoopThread) -> Iterator[str]:
    """A stand-in for the REST API's /config."""

    async def config(request: web.Request) -> web.Response:
        return web.json_response(CONFIG)

    app = web.Application()
    app.router.add_get("/config", config)
    served = Served("fake REST API")
    loop.run(served.start(app, "127.0.0.1", 0))
    yield served.endpoint
    loop.run(served.stop())


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>client</title>")
    (d / "assets" / "index-abc123.js").write_text("console.log(1)")
    (d / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside the dist")
    return d


def serve(loop: LoopThread, rest_url: str, dist: Path) -> Iterator[str]:
    host = ClientHost(rest_url, dist)
    loop.run(host.start("127.0.0.1", 0))
    try:
        yield host.url
    finally:
        loop.run(host.stop())


@pytest.fixture
def client(loop: LoopThread, rest: str, dist: Path) -> Iterator[str]:
    yield from serve(loop, rest, dist)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_is_served_and_always_revalidated(client: str) -> None:
    status, headers, body = get(client)
    assert status == 200
    assert body == b"<!doctype html><title>client</title>"
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_hashed_assets_are_cached_for_good_other_files_revalidate(client: str) -> None:
    status, headers, body = get(client + "assets/index-abc123.js")
    assert (status, body) == (200, b"console.log(1)")
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    status, headers, _ = get(client + "favicon.svg")
    assert (status, headers["Cache-Control"]) == (200, "no-cache")


def test_config_is_the_rest_apis_config(client: str) -> None:
    status, headers, body = get(client + "config")
    assert status == 200
    assert json.loads(body) == CONFIG
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["missing.js", "..%2Fsecret.txt", "assets/..%2F..%2Fsecret.txt"])
def test_nothing_outside_the_build_is_served(client: str, path: str) -> None:
    status, _, body = get(client + path)
    assert status == 404
    assert b"outside the dist" not in body


def test_before_the_build_the_page_says_how_to_build_it(
    loop: LoopThread, rest: str, tmp_path: Path
) -> None:
    for url in serve(loop, rest, tmp_path / "no-dist"):
        status, _, body = get(url)
        assert status == 503
        assert b"make client" in body
        # /config still works: the REST API is there.
        assert get(url + "config")[0] == 200


def test_config_answers_502_when_the_rest_api_is_down(loop: LoopThread, dist: Path) -> None:
    dead = Served("dead")
    app = web.Application()
    port = loop.run(dead.start(app, "127.0.0.1", 0))
    loop.run(dead.stop())  # nothing listens on this port any more
    for url in serve(loop, f"http://127.0.0.1:{port}/", dist):
        status, _, body = get(url + "config")
        assert status == 502
        error: dict[str, Any] = json.loads(body)["error"]
        assert error["code"] == "BAD_GATEWAY"


def test_the_banner_says_whether_the_client_is_built() -> None:
    url = "http://127.0.0.1:4518/"
    assert _client_line(url, built=True) == (
        f"  Client          {url}  (open in a browser; sign in as the local user)"
    )
    assert "run `make client`" in _client_line(url, built=False)
