"""LocalLambdas and Lambda's Invoke API, driven by boto3's real ``lambda`` client."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from chalice import Chalice

from local.lambdas import LambdaApi, LambdaCrash, LocalLambdas, ResourceNotFoundException
from local.loop import LoopThread

CREDS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}

app = Chalice(app_name="toy")
fired: dict[str, Any] = {}
fired_event = threading.Event()


@app.lambda_function(name="echo")
def echo(event: Any, context: Any) -> Any:
    return event


@app.lambda_function(name="fire")
def fire(event: Any, context: Any) -> None:
    fired["event"] = event
    fired_event.set()


@app.lambda_function(name="boom")
def boom(event: Any, context: Any) -> None:
    raise ValueError("secret payload text")


@app.lambda_function(name="whoami")
def whoami(event: Any, context: Any) -> dict[str, Any]:
    return {
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remainingMs": context.get_remaining_time_in_millis(),
    }


@pytest.fixture
def lambdas() -> Iterator[LocalLambdas]:
    fired.clear()
    fired_event.clear()
    local = LocalLambdas(app)
    yield local
    local.close()


@pytest.fixture
def endpoint(lambdas: LocalLambdas) -> Iterator[str]:
    loop = LoopThread().start()
    api = LambdaApi(lambdas)
    loop.run(api.start("127.0.0.1", 0))
    yield api.endpoint
    loop.run(api.stop())
    loop.stop()


@pytest.fixture
def client(endpoint: str) -> Any:
    return boto3.client("lambda", region_name="us-east-1", endpoint_url=endpoint, **CREDS)


class Spinner:
    """A function that runs Python code until released (or crashed), reporting what it saw."""

    def __init__(self, swallow: type[BaseException] = Exception) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.caught: list[BaseException] = []
        self._swallow = swallow
        self._entered = threading.Semaphore(0)

    def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert self._entered.acquire(timeout=5)

    def __call__(self, event: Any, context: Any) -> str:
        self.started.set()
        self._entered.release()
        try:
            deadline = time.monotonic() + 5
            while not self.release.is_set() and time.monotonic() < deadline:
                self.release.wait(0.01)
        except self._swallow as exc:
            self.caught.append(exc)
            return "swallowed"
        return "finished"


@pytest.fixture
def spinner() -> Iterator[Spinner]:
    spin = Spinner()
    app.handler_map["spin"] = spin
    yield spin
    spin.release.set()
    del app.handler_map["spin"]


def test_request_response_returns_the_functions_result(client):
    resp = client.invoke(FunctionName="echo", Payload=json.dumps({"hello": ["world", 1]}))
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert json.loads(resp["Payload"].read()) == {"hello": ["world", 1]}


def test_event_invocation_answers_202_and_runs_the_function(client):
    resp = client.invoke(FunctionName="fire", InvocationType="Event", Payload=b'{"n": 7}')
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    assert fired_event.wait(5)
    assert fired["event"] == {"n": 7}


def test_a_handler_exception_is_an_unhandled_function_error(client):
    resp = client.invoke(FunctionName="boom", Payload=b"{}")
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    body = json.loads(resp["Payload"].read())
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "secret payload text"


def test_an_unknown_function_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", Payload=b"{}")


def test_an_arn_with_the_deployed_name_resolves_to_the_handler(client):
    arn = "arn:aws:lambda:us-east-1:123456789012:function:toy-dev-echo"
    resp = client.invoke(FunctionName=arn, Payload=b'{"via": "arn"}')
    assert json.loads(resp["Payload"].read()) == {"via": "arn"}


def test_every_invocation_gets_a_fresh_context(lambdas):
    first, second = lambdas.invoke("whoami", {}), lambdas.invoke("whoami", {})
    assert first["requestId"] != second["requestId"]
    assert first["functionName"] == "whoami"
    assert first["memory"] == 128
    assert first["remainingMs"] > 0


def test_direct_invoke_of_an_unknown_name_raises_resource_not_found(lambdas):
    with pytest.raises(ResourceNotFoundException):
        lambdas.invoke("llm-stream-dev-nothing", {})


def test_invoke_async_logs_a_failure_without_its_message_and_never_raises(lambdas, caplog):
    caplog.set_level(logging.ERROR, logger="local.lambdas")
    lambdas.invoke_async("boom", {"token": "eyJ-secret"})
    assert lambdas.close(timeout=5)
    [record] = [r for r in caplog.records if r.getMessage() == "async invocation failed"]
    assert record.errorType == "ValueError"
    assert "secret" not in caplog.text


def test_close_waits_for_running_async_invocations(lambdas):
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow(event: Any, context: Any) -> None:
        started.set()
        release.wait(5)
        done.set()

    app.handler_map["slow"] = slow
    try:
        lambdas.invoke_async("slow", {})
        assert started.wait(5)
        results: list[bool] = []
        closer = threading.Thread(target=lambda: results.append(lambdas.close(timeout=5)))
        closer.start()
        release.set()
        closer.join(10)
        assert results == [True]
        assert done.is_set()
    finally:
        del app.handler_map["slow"]


def test_close_reports_invocations_still_running_after_its_timeout(lambdas):
    started, release = threading.Event(), threading.Event()

    def stuck(event: Any, context: Any) -> None:
        started.set()
        release.wait(5)

    app.handler_map["stuck"] = stuck
    try:
        lambdas.invoke_async("stuck", {})
        assert started.wait(5)
        assert lambdas.close(timeout=0.05) is False
    finally:
        release.set()
        del app.handler_map["stuck"]


# -- per-function timeouts -------------------------------------------------------------------


def test_a_per_function_timeout_shows_in_the_remaining_time():
    local = LocalLambdas(app, timeout_s=7, timeouts={"whoami": 2.5})
    try:
        remaining = local.invoke("whoami", {})["remainingMs"]
        assert 2000 < remaining <= 2500
        assert local.timeout_for("whoami") == 2.5
        assert local.timeout_for("toy-dev-whoami") == 2.5  # any name resolve() takes
        assert local.timeout_for("echo") == 7
    finally:
        local.close()


def test_a_non_positive_timeout_is_refused():
    with pytest.raises(ValueError, match="whoami must be > 0 s"):
        LocalLambdas(app, timeouts={"whoami": 0})


# -- crash injection -------------------------------------------------------------------------


def test_crash_stops_a_running_invocation_with_lambda_crash(lambdas, spinner):
    future = lambdas.submit("spin", {})
    assert spinner.started.wait(5)
    assert lambdas.crash("spin") == 1
    with pytest.raises(LambdaCrash):
        future.result(timeout=5)
    assert spinner.caught == []  # `except Exception` in the handler did not see it
    assert lambdas.crash("spin") == 0  # nothing of it runs any more
    assert lambdas.invoke("echo", {"after": "crash"}) == {"after": "crash"}


def test_crash_returns_0_when_the_function_is_not_running(lambdas):
    assert lambdas.crash("echo") == 0
    with pytest.raises(ResourceNotFoundException):
        lambdas.crash("nope")


def test_a_handler_that_swallows_the_crash_still_ends_crashed(lambdas):
    spin = Spinner(swallow=BaseException)
    app.handler_map["swallower"] = spin
    try:
        future = lambdas.submit("swallower", {})
        assert spin.started.wait(5)
        assert lambdas.crash("swallower") == 1
        with pytest.raises(LambdaCrash):
            future.result(timeout=5)
        assert [type(exc) for exc in spin.caught] == [LambdaCrash]
    finally:
        spin.release.set()
        del app.handler_map["swallower"]


def test_crash_hits_every_running_invocation_of_the_function_only(lambdas, spinner):
    other = Spinner()
    app.handler_map["other"] = other
    try:
        first, second = lambdas.submit("spin", {}), lambdas.submit("spin", {})
        bystander = lambdas.submit("other", {})
        spinner.wait_entered(2)
        other.wait_entered(1)
        assert lambdas.crash("spin") == 2
        for future in (first, second):
            with pytest.raises(LambdaCrash):
                future.result(timeout=5)
        assert not bystander.done()
        other.release.set()
        assert bystander.result(timeout=5) == "finished"
    finally:
        other.release.set()
        del app.handler_map["other"]


def test_the_crash_route_crashes_the_function(lambdas, spinner, endpoint):
    future = lambdas.submit("spin", {})
    assert spinner.started.wait(5)
    request = urllib.request.Request(f"{endpoint}_local/functions/spin/crash", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"crashed": 1}
    with pytest.raises(LambdaCrash):
        future.result(timeout=5)


def test_the_crash_route_answers_404_for_an_unknown_function(endpoint):
    request = urllib.request.Request(f"{endpoint}_local/functions/nope/crash", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404
    assert caught.value.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    body = json.loads(caught.value.read())
    assert body["Type"] == "User"
    assert "nope" in body["message"]


def test_a_crashed_synchronous_invocation_is_a_runtime_exit_error(lambdas, spinner, client):
    with ThreadPoolExecutor(1) as caller:
        pending = caller.submit(client.invoke, FunctionName="spin", Payload=b"{}")
        assert spinner.started.wait(5)
        assert lambdas.crash("spin") == 1
        resp = pending.result(timeout=10)
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    body = json.loads(resp["Payload"].read())
    assert body["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error" in body["errorMessage"]


# -- on-failure destinations of Event invocations ----------------------------------------


@pytest.fixture
def with_destination() -> Iterator[LocalLambdas]:
    fired.clear()
    fired_event.clear()
    local = LocalLambdas(app, on_failure={"boom": "fire", "spin": "fire", "echo": "fire"})
    yield local
    local.close()


def test_a_failed_event_invocation_invokes_its_destination_with_lambdas_record(with_destination):
    with_destination.invoke_async("boom", {"streamId": "s-1", "owner": "o"}, request_id="req-1")
    assert fired_event.wait(5)
    record = fired["event"]
    assert record["version"] == "1.0"
    assert record["requestPayload"] == {"streamId": "s-1", "owner": "o"}
    context = record["requestContext"]
    assert context["requestId"] == "req-1"
    assert context["condition"] == "RetriesExhausted"
    assert context["approximateInvokeCount"] == 1
    assert context["functionArn"].endswith(":function:boom:$LATEST")
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"


def test_a_crashed_event_invocation_invokes_its_destination(with_destination, spinner):
    with_destination.invoke_async("spin", {"n": 1})
    assert spinner.started.wait(5)
    assert with_destination.crash("spin") == 1
    assert fired_event.wait(5)
    assert fired["event"]["requestPayload"] == {"n": 1}
    assert fired["event"]["responsePayload"]["errorType"] == "Runtime.ExitError"


def test_a_successful_event_invocation_invokes_no_destination(with_destination):
    with_destination.invoke_async("echo", {"ok": True})
    assert with_destination.close(5)
    assert not fired_event.is_set()
