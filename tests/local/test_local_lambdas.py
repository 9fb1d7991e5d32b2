"""LocalLambdas and Lambda's Invoke API, driven by boto3's real ``lambda`` client."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from chalice import Chalice

from local.lambdas import LambdaApi, LocalLambdas, ResourceNotFoundException
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
def client(lambdas: LocalLambdas) -> Iterator[Any]:
    loop = LoopThread().start()
    api = LambdaApi(lambdas)
    loop.run(api.start("127.0.0.1", 0))
    yield boto3.client("lambda", region_name="us-east-1", endpoint_url=api.endpoint, **CREDS)
    loop.run(api.stop())
    loop.stop()


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
