"""The Chalice REST API served locally through Chalice's own local server.

One fidelity fix over ``chalice local``: when a Lambda authorizer fails with the
message "Unauthorized", API Gateway answers 401; chalice's local gateway lets
the exception escape and drops the connection. ``ApiGatewayAuthorizer`` gives
the API Gateway behaviour, so the app's code path is the same here and on AWS.
"""

from __future__ import annotations

import threading
from typing import Any

from chalice.app import Chalice
from chalice.local import (
    ChaliceRequestHandler,
    LambdaContext,
    LocalDevServer,
    LocalGateway,
    LocalGatewayAuthorizer,
    NotAuthorizedError,
)

_UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'


class ApiGatewayAuthorizer(LocalGatewayAuthorizer):
    def authorize(
        self, raw_path: str, lambda_event: dict[str, Any], lambda_context: LambdaContext
    ) -> Any:
        try:
            return super().authorize(raw_path, lambda_event, lambda_context)
        except Exception as exc:
            if str(exc) != "Unauthorized":
                raise
            raise NotAuthorizedError(
                {
                    "x-amzn-RequestId": lambda_context.aws_request_id,
                    "x-amzn-ErrorType": "UnauthorizedException",
                },
                _UNAUTHORIZED_BODY,
            ) from None


def use_api_gateway_authorizer(gateway: LocalGateway, app: Chalice) -> LocalGateway:
    gateway._authorizer = ApiGatewayAuthorizer(app)
    return gateway


class _Handler(ChaliceRequestHandler):
    def __init__(
        self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Any
    ) -> None:
        # The base __init__ handles the request, so the gateway is swapped by
        # building it here first and letting the base reuse it.
        self._app_object_for_auth = app_object
        super().__init__(request, client_address, server, app_object=app_object, config=config)

    def _generic_handle(self) -> None:
        use_api_gateway_authorizer(self.local_gateway, self._app_object_for_auth)
        super()._generic_handle()

    # The base class binds these to its own _generic_handle at class creation.
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged by the app; the default prints to stderr


class RestServer:
    """Serves the Chalice app's routes on ``host:port`` (0 picks a free port)."""

    def __init__(self, app: Chalice, config: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = LocalDevServer(app, config, host, port, handler_cls=_Handler)
        self.port: int = self._server.server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.server.serve_forever, name="rest", daemon=True
        )

    def start(self) -> RestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server.server_close()
        self._thread.join(5)


def load_chalice_app(project_dir: str, stage: str = "dev") -> tuple[Chalice, Any]:
    """Import the Chalice app the way ``chalice local`` does (stage env applied first)."""
    from chalice.cli.factory import CLIFactory

    config = CLIFactory(project_dir).create_config_obj(chalice_stage_name=stage)
    return config.chalice_app, config
