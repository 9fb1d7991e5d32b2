"""The local Function URL host (``local/function_url_host.mjs`` via ``FunctionUrlHost``),
driven with a toy streaming handler module the tests write themselves."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.function_url import FunctionUrlHost, FunctionUrlHostError
from tests.support.sse import events, request

MAX_REQUEST_BYTES = 6 * 1024 * 1024
ALLOWED_ORIGIN = "https://app.example"
LOG_WAIT_S = 10

# One module, routed by path, so one host serves most tests.
TOY_HANDLER = r"""
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const OUT = process.env.TOY_OUT_DIR;
const STEP_MS = 150;
console.log("toy handler module loaded");

// A bounded wait for a file the test creates (the handler has no other way to hear from it).
async function fileAppears(file, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`no ${file} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

const written = (stream, chunk) => new Promise((resolve) => stream.write(chunk, resolve));

const routes = {
  async "/stream"(event, responseStream) {
    const stream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 200,
      headers: { "Content-Type": "text/event-stream", "X-Toy": "stream" },
    });
    for (let i = 0; i < 3; i++) {
      if (i > 0) await sleep(STEP_MS);
      stream.write(`data: ${i} ${Date.now()}\n\n`); // when it was written, in ms
    }
    stream.end();
    writeFileSync(path.join(OUT, `finished-${event.requestContext.requestId}`), "");
  },

  async "/echo"(event, responseStream, context) {
    responseStream.setContentType("application/json");
    context.callbackWaitsForEmptyEventLoop = false;
    responseStream.write(JSON.stringify({
      event,
      context: {
        awsRequestId: context.awsRequestId,
        functionName: context.functionName,
        invokedFunctionArn: context.invokedFunctionArn,
        remainingMs: context.getRemainingTimeInMillis(),
        callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
      },
      env: process.env.TOY_VAR ?? null,
      writtenAt: Date.now(),
    }));
    responseStream.end();
  },

  async "/plain"(event, responseStream) {
    responseStream.write("just bytes");
    responseStream.end();
  },

  async "/prelude"(event, responseStream) {
    const stream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 418,
      headers: {
        "Content-Type": "text/plain",
        "X-Toy": "teapot",
        "Access-Control-Allow-Origin": "https://evil.example",
      },
      cookies: ["a=1; Path=/", "b=2"],
    });
    stream.write("short and stout");
    stream.end();
  },

  async "/end-only"(event, responseStream) {
    const stream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 404,
      headers: { "Content-Type": "text/plain" },
    });
    stream.end("not found");
  },

  async "/throw"() {
    throw new Error("toy failure before any byte");
  },

  async "/throw-late"(event, responseStream) {
    await written(responseStream, "partial");
    throw new Error("toy failure mid-stream");
  },

  async "/after-disconnect"(event, responseStream) {
    const id = event.requestContext.requestId;
    const seen = { errors: [], closedBeforeEnd: false, writesAfter: 0 };
    responseStream.on("error", (err) => seen.errors.push(String(err)));
    responseStream.on("close", () => {
      if (!responseStream.writableEnded) seen.closedBeforeEnd = true;
    });
    responseStream.write("data: first\n\n");
    await fileAppears(path.join(OUT, `gone-${id}`), 10_000);
    for (let i = 0; i < 5; i++) {
      await written(responseStream, `data: later ${i}\n\n`);
      seen.writesAfter += 1;
    }
    await new Promise((resolve) => responseStream.end(resolve));
    writeFileSync(path.join(OUT, `marker-${id}.json`), JSON.stringify(seen));
  },

  async "/hang"(event, responseStream) {
    responseStream.write("started");
    await new Promise(() => {}); // never ends: only the function timeout stops it
  },

  async "/hang-silent"() {
    await new Promise(() => {});
  },
};

export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const route = routes[event.rawPath];
  if (!route) throw new Error(`no toy route ${event.rawPath}`);
  await route(event, responseStream, context);
});

export const notStreaming = async () => ({ statusCode: 200 });
"""


def write_toy(directory: Path) -> Path:
    module = directory / "toy.mjs"
    module.write_text(TOY_HANDLER)
    return module


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("toy-out")


@pytest.fixture(scope="module")
def toy_module(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def host(toy_module, out_dir):
    h = FunctionUrlHost(
        toy_module,
        {"TOY_OUT_DIR": str(out_dir), "TOY_VAR": "from-python"},
        [ALLOWED_ORIGIN],
        function_name="toy-function",
    )
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def short_host(toy_module, out_dir):
    """The same handler with a 0.5 s function timeout."""
    h = FunctionUrlHost(toy_module, {"TOY_OUT_DIR": str(out_dir)}, ["*"], timeout_s=0.5)
    h.start()
    yield h
    h.stop()


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn, resp = request(url, method, body, headers)
    data = resp.read()
    conn.close()
    return resp, data


def log_of(host: FunctionUrlHost, event: str, request_id: str) -> dict[str, Any]:
    return host.wait_for_log(
        lambda r: r["event"] == event and r.get("requestId") == request_id, LOG_WAIT_S
    )


def cors_headers(resp: http.client.HTTPResponse) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.getheaders() if k.lower().startswith("access-control-")}


# ------------------------------------------------------------------------- streaming


def test_chunks_arrive_as_the_handler_writes_them(host, out_dir):
    conn, resp = request(host.url + "stream")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("X-Toy") == "stream"
    request_id = resp.getheader("x-amzn-RequestId")
    received = [(ev.at * 1000, ev.data) for ev in events(resp)]
    conn.close()
    written_at = [int(data.split()[1]) for _, data in received]
    arrived_at = [at for at, _ in received]
    assert [data.split()[0] for _, data in received] == ["0", "1", "2"]
    # Each chunk was at the client before the handler wrote the next one.
    assert arrived_at[0] < written_at[1]
    assert arrived_at[1] < written_at[2]
    end = log_of(host, "invoke_end", request_id)
    assert end["outcome"] == "ok" and end["status"] == 200 and not end["clientGone"]
    assert (out_dir / f"finished-{request_id}").exists()


def test_invocations_run_concurrently(host):
    conn, resp = request(host.url + "stream")
    stream = events(resp)
    first = next(stream)
    assert first.data is not None and first.data.startswith("0 ")
    _, body = call(host.url + "echo")  # served while the stream is still being written
    echoed_at = json.loads(body)["writtenAt"]
    rest = list(stream)
    conn.close()
    last_written_at = int(rest[-1].data.split()[1])
    assert echoed_at < last_written_at


def test_no_prelude_means_200_and_the_content_type_set_or_octet_stream(host):
    resp, body = call(host.url + "plain")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert body == b"just bytes"
    resp, body = call(host.url + "echo")
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"


def test_status_headers_and_cookies_come_from_the_prelude(host):
    resp, body = call(host.url + "prelude", headers={"Origin": ALLOWED_ORIGIN})
    assert resp.status == 418
    assert resp.getheader("Content-Type") == "text/plain"
    assert resp.getheader("X-Toy") == "teapot"
    assert resp.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert body == b"short and stout"
    # The handler's own CORS header is dropped (with a warning); the URL's is kept.
    assert resp.headers.get_all("Access-Control-Allow-Origin") == [ALLOWED_ORIGIN]
    dropped = log_of(host, "cors_header_dropped", resp.getheader("x-amzn-RequestId"))
    assert dropped["level"] == "warn"
    assert dropped["headers"] == ["Access-Control-Allow-Origin"]


def test_end_with_data_right_after_from_loses_the_prelude_as_on_aws(host):
    resp, body = call(host.url + "end-only")
    assert resp.status == 502
    assert json.loads(body) == {"message": "Internal Server Error"}
    lost = log_of(host, "prelude_lost", resp.getheader("x-amzn-RequestId"))
    assert "write(data)" in lost["message"]


# ------------------------------------------------------------------------- failures


def test_a_handler_that_throws_before_writing_gives_502(host):
    resp, body = call(host.url + "throw")
    assert resp.status == 502
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body) == {"message": "Internal Server Error"}
    error = log_of(host, "handler_error", resp.getheader("x-amzn-RequestId"))
    assert error["errorMessage"] == "toy failure before any byte"


def test_a_handler_that_throws_after_writing_cuts_the_response(host):
    conn, resp = request(host.url + "throw-late")
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    conn.close()
    assert cut.value.partial == b"partial"
    end = log_of(host, "invoke_end", resp.getheader("x-amzn-RequestId"))
    assert end["outcome"] == "error"


def test_the_function_timeout_cuts_a_started_response(short_host):
    conn, resp = request(short_host.url + "hang")
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    conn.close()
    assert cut.value.partial == b"started"
    request_id = resp.getheader("x-amzn-RequestId")
    assert "Task timed out" in log_of(short_host, "invoke_timeout", request_id)["message"]
    assert log_of(short_host, "invoke_end", request_id)["outcome"] == "timeout"


def test_the_function_timeout_before_any_byte_gives_502(short_host):
    resp, body = call(short_host.url + "hang-silent")
    assert resp.status == 502
    assert json.loads(body) == {"message": "Internal Server Error"}


def test_a_body_over_6_mb_is_413_and_6_mb_is_accepted(host):
    headers = {"Content-Type": "application/octet-stream"}
    resp, body = call(host.url + "plain", "POST", b"x" * (MAX_REQUEST_BYTES + 1), headers)
    assert resp.status == 413
    assert "message" in json.loads(body)
    resp, body = call(host.url + "plain", "POST", b"x" * MAX_REQUEST_BYTES, headers)
    assert resp.status == 200 and body == b"just bytes"


# ------------------------------------------------------------------------- client disconnect


def test_the_handler_runs_on_after_the_client_left_and_never_hears_of_it(host, out_dir):
    conn, resp = request(host.url + "after-disconnect")
    request_id = resp.getheader("x-amzn-RequestId")
    assert resp.readline() == b"data: first\n"
    conn.close()  # the client goes away mid-stream
    log_of(host, "client_disconnected", request_id)
    (out_dir / f"gone-{request_id}").touch()  # now the handler writes on
    end = log_of(host, "invoke_end", request_id)
    assert end["clientGone"] is True and end["outcome"] == "ok"
    assert end["droppedBytes"] == sum(len(f"data: later {i}\n\n") for i in range(5))
    seen = json.loads((out_dir / f"marker-{request_id}.json").read_text())
    # Every write completed, no 'error' and no early 'close' reached the handler.
    assert seen == {"errors": [], "closedBeforeEnd": False, "writesAfter": 5}


# ------------------------------------------------------------------------- event and context


def test_the_event_is_payload_format_2_0(host):
    conn = connect(host.url)
    conn.putrequest("POST", "/echo?a=1&a=2&b=x%20y", skip_accept_encoding=True)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("X-Custom-Header", "one")
    conn.putheader("X-Custom-Header", "two")
    conn.putheader("Cookie", "c1=v1; c2=v2")
    conn.putheader("User-Agent", "toy-test/1.0")
    body = b'{"hello": "world"}'
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    echoed = json.loads(resp.read())
    conn.close()
    event, context = echoed["event"], echoed["context"]
    request_id = resp.getheader("x-amzn-RequestId")

    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    headers = event["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-custom-header"] == "one,two"
    assert headers["content-type"] == "application/json"
    assert "cookie" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert event["body"] == '{"hello": "world"}' and event["isBase64Encoded"] is False

    rc = event["requestContext"]
    assert rc["accountId"] == "anonymous"
    assert rc["requestId"] == request_id == context["awsRequestId"]
    assert rc["routeKey"] == "$default" and rc["stage"] == "$default"
    assert rc["http"] == {
        "method": "POST",
        "path": "/echo",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "toy-test/1.0",
    }
    assert rc["apiId"] == rc["domainPrefix"] and len(rc["apiId"]) == 32
    assert rc["domainName"] == urlsplit(host.url).netloc
    assert isinstance(rc["timeEpoch"], int) and rc["time"].endswith(" +0000")

    assert context["functionName"] == "toy-function"
    assert context["invokedFunctionArn"].endswith(":function:toy-function")
    assert 0 < context["remainingMs"] <= 900_000
    assert context["callbackWaitsForEmptyEventLoop"] is False  # settable
    assert echoed["env"] == "from-python"  # env merged over os.environ


def test_a_binary_body_is_base64_and_an_empty_one_absent(host):
    payload = bytes(range(256))
    _, body = call(host.url + "echo", "POST", payload, {"Content-Type": "application/octet-stream"})
    event = json.loads(body)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload

    _, body = call(host.url + "echo")
    event = json.loads(body)["event"]
    assert "body" not in event and event["isBase64Encoded"] is False
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event and "cookies" not in event


def test_get_remaining_time_follows_the_timeout(short_host):
    _, body = call(short_host.url + "echo")
    assert 0 < json.loads(body)["context"]["remainingMs"] <= 500


# ------------------------------------------------------------------------- CORS


def test_preflight_from_an_allowed_origin_is_answered_by_the_url(host):
    resp, body = call(
        host.url + "stream",
        "OPTIONS",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert resp.status == 204 and body == b""
    assert cors_headers(resp) == {
        "access-control-allow-origin": ALLOWED_ORIGIN,
        "access-control-allow-methods": "GET,POST",
        "access-control-allow-headers": "authorization,content-type,last-event-id",
        "access-control-max-age": "600",
    }
    assert resp.getheader("Vary") == "Origin"
    request_id = resp.getheader("x-amzn-RequestId")
    assert log_of(host, "cors_preflight", request_id)["allowed"] is True
    invoked = [r for r in host.records() if r.get("requestId") == request_id]
    assert [r["event"] for r in invoked] == ["cors_preflight"]  # the handler never ran


def test_preflight_from_another_origin_gets_no_cors_headers(host):
    resp, _ = call(
        host.url + "stream",
        "OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status == 204
    assert cors_headers(resp) == {}
    assert log_of(host, "cors_preflight", resp.getheader("x-amzn-RequestId"))["allowed"] is False


def test_responses_carry_the_allow_origin_for_allowed_origins_only(host):
    resp, _ = call(host.url + "plain", headers={"Origin": ALLOWED_ORIGIN})
    assert cors_headers(resp) == {"access-control-allow-origin": ALLOWED_ORIGIN}
    assert resp.getheader("Vary") == "Origin"
    resp, _ = call(host.url + "plain", headers={"Origin": "https://evil.example"})
    assert cors_headers(resp) == {}
    resp, _ = call(host.url + "plain")
    assert cors_headers(resp) == {}


def test_a_wildcard_origin_list_allows_any_origin(short_host):
    resp, _ = call(
        short_host.url + "echo",
        "OPTIONS",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 204
    assert resp.getheader("Access-Control-Allow-Origin") == "http://localhost:5173"


# ------------------------------------------------------------------------- lifecycle


def test_console_output_of_the_handler_is_forwarded_to_logging(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="local.function_url")
    with FunctionUrlHost(write_toy(tmp_path), {"TOY_OUT_DIR": str(tmp_path)}, []):
        pass
    console = [r.getMessage() for r in caplog.records if r.name == "local.function_url.console"]
    assert "toy handler module loaded" in console
    events_logged = [r.getMessage() for r in caplog.records if r.name == "local.function_url"]
    assert any(m.startswith("listening ") for m in events_logged)


def test_stop_terminates_the_child(tmp_path):
    h = FunctionUrlHost(write_toy(tmp_path), {"TOY_OUT_DIR": str(tmp_path)}, ["*"])
    url = h.start()
    parts = urlsplit(url)
    h.stop()
    assert h.returncode == 0  # a clean exit on SIGTERM
    assert h.url is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    h.stop()  # idempotent


def test_a_missing_module_is_named(tmp_path):
    missing = tmp_path / "nope.mjs"
    with pytest.raises(FunctionUrlHostError, match=r"nope\.mjs does not exist"):
        FunctionUrlHost(missing, {}, []).start()


def test_a_missing_node_is_named(tmp_path):
    h = FunctionUrlHost(write_toy(tmp_path), {}, [], node="no-such-node-binary")
    with pytest.raises(FunctionUrlHostError, match=r"Node\.js .* not installed"):
        h.start()


@pytest.mark.parametrize(
    ("source", "export", "needle"),
    [
        ('throw new Error("broken at import");\n', "handler", "broken at import"),
        (TOY_HANDLER, "notStreaming", "streamifyResponse"),
        (TOY_HANDLER, "absent", 'no function named "absent"'),
    ],
    ids=["import-fails", "not-streaming", "no-such-export"],
)
def test_a_handler_that_cannot_be_served_is_a_clear_error(tmp_path, source, export, needle):
    module = tmp_path / "bad.mjs"
    module.write_text(source)
    h = FunctionUrlHost(module, {"TOY_OUT_DIR": str(tmp_path)}, [], export=export)
    with pytest.raises(FunctionUrlHostError, match="exited") as err:
        h.start()
    assert needle in str(err.value)
    assert h.returncode == 1
