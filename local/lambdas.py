"""The Chalice app's Lambda functions, run in this process, and Lambda's Invoke API.

:class:`LocalLambdas` calls ``app.handler_map[name](event, context)`` the way the
Lambda runtime does: the event goes through a JSON round trip, every call gets a
fresh context with a new request id, and ``Event`` invocations run on a thread
pool without reporting back. Everything that invokes a function locally (the
WebSocket gateway, the Invoke API below, the SQS poller) goes through it, so the
app runs as one process with one set of warm clients and caches, like one
warm Lambda container per function.

The Invoke API, for app code that calls ``boto3.client("lambda").invoke`` with
``AWS_ENDPOINT_URL_LAMBDA`` pointed here::

    POST /2015-03-31/functions/{FunctionName}/invocations
        X-Amz-Invocation-Type: RequestResponse (default) -> 200, the JSON result
                               Event                      -> 202, runs on the pool
                               DryRun                     -> 204
        handler exception -> 200, X-Amz-Function-Error: Unhandled,
                             {"errorMessage", "errorType", "requestId", "stackTrace"}
        runtime crashed   -> 200, X-Amz-Function-Error: Unhandled,
                             {"errorMessage", "errorType": "Runtime.ExitError"}
        unknown function  -> 404 ResourceNotFoundException {"Type": "User", "message"}

``Event`` invocations that fail (the handler raises, or its runtime crashes) are sent to
the function's on-failure destination when one is configured (``on_failure``), as Lambda
does for asynchronous invocations: the destination function is invoked asynchronously
with Lambda's destination record (``requestContext`` with ``condition``
``RetriesExhausted``, ``requestPayload``, ``responseContext``, ``responsePayload``). Retries
are not emulated: the functions that have a destination are configured with none.

and one local-only control route next to it (fault injection, see :meth:`LocalLambdas.crash`)::

    POST /_local/functions/{FunctionName}/crash -> 200 {"crashed": n}
                                                   404 as above for an unknown function

``FunctionName`` may be the ``handler_map`` key (``ws_generate``), a deployed-style
name ending in ``-<key>`` (``llm-stream-dev-ws_generate``) or an ARN with either.
SigV4 headers are accepted and never checked; ``Qualifier`` is ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import datetime
import json
import logging
import os
import threading
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from chalice.app import Chalice
from chalice.local import LambdaContext

from local.environ import EnvironPatch
from local.http_service import Served

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
# Lambda's own request payload limit for synchronous invocations (6 MB).
_MAX_REQUEST_BYTES = 6 * 1024 * 1024


class ResourceNotFoundException(LookupError):
    """No function of that name is deployed (Lambda's error code of the same name)."""


class MarshalError(TypeError):
    """The handler returned something JSON cannot represent (``Runtime.MarshalError``)."""


class LambdaCrash(BaseException):
    """The function's process died mid-invocation (runtime crash, out of memory, killed).

    Raised by :meth:`LocalLambdas.crash` inside the invocation's thread. It derives
    from ``BaseException`` so application code's ``except Exception`` cannot swallow
    it, as no handler can catch its own process dying.
    """

    def __init__(self, *args: object) -> None:
        # The interpreter instantiates an asynchronous exception without arguments.
        super().__init__(*(args or ("Runtime exited with error: signal: killed",)))


class RuntimeExitError(RuntimeError):
    """What the *caller* of a crashed invocation sees (Lambda's ``Runtime.ExitError``).

    :meth:`LocalLambdas.run` raises it in place of :class:`LambdaCrash`: the awaiting
    code (an API Gateway, AppSync or the Invoke API) did not crash, the function did.
    """


_EXIT_ERROR = "Runtime.ExitError"


class _Running:
    """One invocation in progress: which thread runs it (identity is the token)."""

    __slots__ = ("thread_id",)

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id


def _set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> int:
    # Untyped arguments on purpose: None must reach C as NULL ("clear the pending
    # exception"), which a py_object argtype would turn into Py_None.
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_type is None else ctypes.py_object(exc_type)
    )


class LocalLambdas:
    """Runs the functions of a Chalice app in-process.

    ``app`` may be attached later (:meth:`attach`): the local cloud starts the
    servers that invoke functions before it imports ``app.py``, because the app's
    environment must name their ports. Until then every name is unknown.

    ``env`` holds the functions' environment variables. All functions share this
    process, so they are set in ``os.environ`` for as long as this object is open
    and restored by :meth:`close`.

    ``max_workers`` bounds concurrently running pool invocations (Lambda's
    concurrency). A function that synchronously invokes another through the pool
    while all workers are busy would wait for a free one.

    ``timeout_s`` is every function's configured timeout, ``timeouts`` overrides it
    per ``handler_map`` key (seconds). It shows in the context's remaining time and
    in :meth:`timeout_for`; it is not enforced (nothing kills a slow invocation).

    ``on_failure`` maps a ``handler_map`` key to the key of its asynchronous invocations'
    on-failure destination.
    """

    def __init__(
        self,
        app: Chalice | None = None,
        *,
        env: Mapping[str, str] | None = None,
        max_workers: int = 32,
        memory_limit_in_mb: int = 128,
        timeout_s: float = 60.0,
        timeouts: Mapping[str, float] | None = None,
        region: str = "us-east-1",
        on_failure: Mapping[str, str] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 s, got {timeout_s}")
        for name, seconds in (timeouts or {}).items():
            if not seconds > 0:
                raise ValueError(f"The timeout of function {name} must be > 0 s, got {seconds}")
        self._app = app
        self._on_failure = dict(on_failure or {})
        self.memory_limit_in_mb = memory_limit_in_mb
        self.timeout_s = timeout_s
        self._timeouts = dict(timeouts or {})
        self.max_workers = max_workers
        self.region = region
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="lambda"
        )
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        # Invocations in progress per handler_map key, and the threads that have been
        # sent a LambdaCrash that their invocation has not yet accounted for.
        self._running: dict[str, set[_Running]] = {}
        self._doomed: set[int] = set()
        self._closed = False
        self._env = EnvironPatch()
        self._env.set(env or {})

    # -- functions -------------------------------------------------------------------

    @property
    def app(self) -> Chalice | None:
        return self._app

    def attach(self, app: Chalice) -> None:
        """Deploy ``app``'s functions (the local cloud does this once it imported it)."""
        self._app = app

    def function_names(self) -> list[str]:
        return sorted(self._app.handler_map) if self._app is not None else []

    def resolve(self, function_name: str) -> str:
        """The ``handler_map`` key for a key, a ``<prefix>-<key>`` name or an ARN."""
        handlers = self._app.handler_map if self._app is not None else {}
        if function_name in handlers:
            return function_name
        name = function_name
        if name.startswith("arn:") or ":function:" in name:
            # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
            name = name.split(":function:", 1)[-1].split(":", 1)[0]
        if name in handlers:
            return name
        # Chalice deploys "<app>-<stage>-<key>"; take the longest key that fits.
        matches = [key for key in handlers if name.endswith(f"-{key}")]
        if not matches:
            raise ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        return max(matches, key=len)

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    def timeout_for(self, function_name: str) -> float:
        """The configured timeout (s) of a function (any name :meth:`resolve` takes).

        A name not deployed (yet) is looked up as given, so this works before ``attach``.
        """
        try:
            key = self.resolve(function_name)
        except ResourceNotFoundException:
            key = function_name
        return self._timeouts.get(key, self.timeout_s)

    # -- fault injection ---------------------------------------------------------------

    def crash(self, function_name: str) -> int:
        """Kill every running invocation of the function, as if its process died.

        Raises :class:`LambdaCrash` asynchronously in each thread running the function
        and returns how many invocations it hit (0 when none runs). Each of them ends
        with ``LambdaCrash``: :meth:`invoke` and a pool invocation's future raise it,
        :meth:`run` raises :class:`RuntimeExitError`, the Invoke API answers
        ``Runtime.ExitError``.

        Limits, since this is an exception and not a dying process:

        - it lands when the thread next runs Python bytecode: a thread blocked in C
          (``time.sleep``, a socket read, a lock or ``Event.wait``) gets it only when
          that call returns;
        - ``finally`` blocks and context managers' ``__exit__`` still run, and code that
          catches ``BaseException`` (or a bare ``except:``) can run on (the invocation
          still ends with ``LambdaCrash`` once the handler returns);
        - :meth:`invoke` runs the callee in the calling thread: when one function invokes
          another that way, crashing either kills both (on AWS only one process dies).

        An unknown name raises ``ResourceNotFoundException``.
        """
        key = self.resolve(function_name)
        with self._lock:
            # An invocation whose thread already has a crash on its way is not hit again.
            hit = [r for r in self._running.get(key, ()) if r.thread_id not in self._doomed]
            for thread_id in {r.thread_id for r in hit}:
                if _set_async_exc(thread_id, LambdaCrash) == 1:
                    self._doomed.add(thread_id)
        if hit:
            log.warning("crashed running invocations", extra={"function": key, "count": len(hit)})
        return len(hit)

    # -- invoking --------------------------------------------------------------------

    def invoke(self, function_name: str, event: Any) -> Any:
        """Run the function in the calling thread and return its (JSON) result.

        Exceptions raised by the handler propagate unchanged.
        """
        return self._run(self.resolve(function_name), event, str(uuid.uuid4()))

    def submit(
        self, function_name: str, event: Any, request_id: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Run the function on the pool; the future holds its result or exception.

        An unknown name raises ``ResourceNotFoundException`` here, before anything runs.
        """
        key = self.resolve(function_name)
        return self._submit(self._run, key, event, request_id or str(uuid.uuid4()))

    def _submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalLambdas is closed")
            future = self._pool.submit(fn, *args)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    async def run(
        self,
        function_name: str,
        event: Any,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Any:
        """Await the function running on the pool (for code on an event loop).

        After ``timeout`` s raises ``TimeoutError`` while the function runs on, as an
        integration timeout does on AWS; its outcome is then dropped. A crashed
        invocation (:meth:`crash`) raises :class:`RuntimeExitError`.
        """
        loop = asyncio.get_running_loop()
        # The loop gets the finished concurrent future as a *result*: an exception
        # stored in an asyncio future nobody awaits any more would be reported as
        # "never retrieved" when the loop stops first.
        settled: asyncio.Future[concurrent.futures.Future[Any]] = loop.create_future()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if not settled.done():
                settled.set_result(done)

        def on_done(done: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, done)

        self.submit(function_name, event, request_id).add_done_callback(on_done)
        done = await asyncio.wait_for(asyncio.shield(settled), timeout)
        try:
            return done.result()
        except LambdaCrash as exc:
            raise RuntimeExitError(str(exc)) from exc

    def invoke_async(self, function_name: str, event: Any, request_id: str | None = None) -> None:
        """Like Lambda's ``Event`` invocation: run on the pool, report nothing back.

        A failure is logged (type and location only: no payload or message text).
        An unknown name raises ``ResourceNotFoundException`` at once.
        """
        key = self.resolve(function_name)
        self._submit(self._run_logged, key, event, request_id or str(uuid.uuid4()))

    def _run_logged(self, key: str, event: Any, request_id: str) -> None:
        # Logged in the worker, so the log line exists once the invocation counts as done.
        try:
            self._run(key, event, request_id)
        except (Exception, LambdaCrash) as exc:
            # The message may carry request data or tokens: log where, not what.
            log.error(
                "async invocation failed",
                extra={
                    "function": key,
                    "requestId": request_id,
                    "errorType": type(exc).__name__,
                    "where": error_location(exc),
                },
            )
            destination = self._on_failure.get(key)
            if destination is not None:
                with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody to tell
                    self.invoke_async(
                        destination, failure_record(self.arn(key), event, exc, request_id)
                    )

    def close(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s for running invocations, then stop the pool.

        Returns False when some were still running (their threads finish on their own).
        """
        with self._lock:
            self._closed = True
            pending = set(self._pending)
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._env.restore()
        return not not_done

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _run(self, key: str, event: Any, request_id: str) -> Any:
        assert self._app is not None
        context = LambdaContext(
            function_name=key,
            memory_size=self.memory_limit_in_mb,
            max_runtime_ms=int(self.timeout_for(key) * 1000),
        )
        context.aws_request_id = request_id
        context.invoked_function_arn = self.arn(key)
        running = _Running(threading.get_ident())
        failure: BaseException | None = None
        try:
            # Registered inside the try: from here on crash() may strike anywhere.
            with self._lock:
                self._running.setdefault(key, set()).add(running)
            # Lambda hands the function a JSON document, never the caller's objects.
            result = self._app.handler_map[key](json.loads(json.dumps(event)), context)
        except BaseException as exc:
            failure = exc
        crashed = isinstance(failure, LambdaCrash)
        # The loop lives in this frame because a pending crash can be raised at any call,
        # including on entry to _leave; _leave is idempotent, so it is simply run again.
        # A thread is sent at most one crash until _leave cancels it, so this ends.
        while True:
            try:
                crashed = self._leave(key, running) or crashed
                break
            except LambdaCrash:
                crashed = True
        try:
            if isinstance(failure, LambdaCrash):
                raise failure
            if crashed:
                # Sent while the handler was finishing: the process died all the same.
                raise LambdaCrash() from None
            if failure is not None:
                raise failure
        finally:
            failure = None  # no frame <-> traceback cycle
        try:
            return json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            raise MarshalError(f"Unable to marshal response: {exc}") from None

    def _leave(self, key: str, running: _Running) -> bool:
        """Unregister an invocation; True if a crash was sent to its thread.

        A crash sent but not raised yet is cancelled (the caller raises it instead), so
        none can fire after the invocation ended, in the pool's own code.
        """
        with self._lock:
            invocations = self._running.get(key)
            if invocations is not None:
                invocations.discard(running)
                if not invocations:
                    del self._running[key]
            if running.thread_id not in self._doomed:
                return False
            _set_async_exc(running.thread_id, None)
            self._doomed.discard(running.thread_id)
            return True


def error_location(exc: BaseException) -> str:
    """``file.py:line in function`` where ``exc`` was raised (safe to log: no message)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def failure_record(
    function_arn: str, event: Any, exc: BaseException, request_id: str
) -> dict[str, Any]:
    """Lambda's on-failure destination record of a failed asynchronous invocation."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "version": "1.0",
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": error_payload(exc, request_id),
    }


def error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The body Lambda returns for an unhandled error of a Python function."""
    if isinstance(exc, (LambdaCrash, RuntimeExitError)):
        return {
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
            "signal: killed",
            "errorType": _EXIT_ERROR,
        }
    error_type = "Runtime.MarshalError" if isinstance(exc, MarshalError) else type(exc).__name__
    return {
        "errorMessage": str(exc),
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


# -- the Invoke API over HTTP --------------------------------------------------------------

LAMBDAS_KEY = web.AppKey("local_lambdas", LocalLambdas)


def _client_error(status: int, error_type: str, message: str) -> web.Response:
    # botocore's rest-json parser takes the error code from x-amzn-ErrorType.
    return web.json_response(
        {"Type": "User", "message": message},
        status=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


async def _handle_invoke(request: web.Request) -> web.Response:
    lambdas = request.app[LAMBDAS_KEY]
    name = request.match_info["name"]
    invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if invocation_type not in ("RequestResponse", "Event", "DryRun"):
        return _client_error(
            400, "InvalidParameterValueException", f"Unknown invocation type {invocation_type}"
        )
    try:
        lambdas.resolve(name)
    except ResourceNotFoundException as exc:
        return _client_error(404, "ResourceNotFoundException", str(exc))
    raw = await request.read()
    try:
        event = json.loads(raw) if raw else {}
    except ValueError:
        return _client_error(
            400, "InvalidRequestContentException", "Could not parse request body into json"
        )
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
    if invocation_type == "DryRun":
        return web.Response(status=204, headers=headers)
    if invocation_type == "Event":
        lambdas.invoke_async(name, event, request_id)
        return web.Response(status=202, headers=headers)
    try:
        result = await lambdas.run(name, event, request_id=request_id)
    except Exception as exc:
        headers["X-Amz-Function-Error"] = "Unhandled"
        return web.json_response(error_payload(exc, request_id), headers=headers)
    return web.Response(
        body=json.dumps(result).encode("utf-8"),
        content_type="application/json",
        headers=headers,
    )


async def _handle_crash(request: web.Request) -> web.Response:
    lambdas = request.app[LAMBDAS_KEY]
    try:
        crashed = lambdas.crash(request.match_info["name"])
    except ResourceNotFoundException as exc:
        return _client_error(404, "ResourceNotFoundException", str(exc))
    return web.json_response({"crashed": crashed})


def create_lambda_api(lambdas: LocalLambdas) -> web.Application:
    """Lambda's Invoke API for ``lambdas`` as an aiohttp application."""
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
    app[LAMBDAS_KEY] = lambdas
    app.router.add_post("/2015-03-31/functions/{name}/invocations", _handle_invoke)
    app.router.add_post("/_local/functions/{name}/crash", _handle_crash)
    return app


class LambdaApi:
    """Serves :func:`create_lambda_api` (same lifecycle as the other emulators)."""

    def __init__(self, lambdas: LocalLambdas) -> None:
        self.lambdas = lambdas
        self._served = Served("Lambda API")

    @property
    def endpoint(self) -> str:
        """``http://host:port/`` while serving (what ``AWS_ENDPOINT_URL_LAMBDA`` takes)."""
        return self._served.endpoint

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self._served.start(
            create_lambda_api(self.lambdas), host, port, shutdown_timeout=1.0
        )

    async def stop(self) -> None:
        await self._served.stop()
