"""DynamoDB and SQS on one loopback port: moto's server, with DynamoDB requests served
one at a time.

moto's backends are not thread-safe: ``TransactWriteItems`` deep-copies the table it
writes (for its rollback) while other request threads change that table, which fails
with ``RuntimeError: dictionary changed size during iteration`` once tens of streams
start at once. DynamoDB itself has no such race, so the local cloud serialises DynamoDB
requests (moto's work runs under the GIL anyway, so little throughput is lost). SQS
requests are not serialised: a long-polling ReceiveMessage must not hold the others up.

moto also keeps every model object it ever created (see :func:`stop_tracking_instances`,
switched off here): that was most of the local cloud's memory growth per stream.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

_DYNAMODB_TARGET = "DynamoDB"  # X-Amz-Target: DynamoDB_20120810.<Operation>


def serialized_dynamodb(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that runs ``app`` for DynamoDB requests under one lock, body included."""
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGET):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wsgi


def stop_tracking_instances() -> None:
    """Keep moto from holding on to every model object it ever creates.

    moto's ``BaseModel.__new__`` appends each instance to its class's ``instances_tracked``
    list (for its ``/moto-api/data.json`` dump): every DynamoDB item ever written, every
    copy of a table ``TransactWriteItems`` makes for its rollback, every SQS message, for
    the life of the process. Nothing the local cloud uses reads those lists.
    """
    from moto.core.common_models import BaseModel

    def untracked(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    BaseModel.__new__ = untracked  # type: ignore[method-assign,assignment]


class LocalAws:
    """moto's server (all its services; the app uses DynamoDB and SQS) in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Serve; returns the port."""
        # werkzeug logs every request to stderr otherwise.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = serialized_dynamodb(DomainDispatcherApplication(create_backend_app))
        stop_tracking_instances()
        self._server = make_server(
            self._host, self._port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-aws", daemon=True
        )
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
