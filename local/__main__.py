"""``python -m local``: start the local cloud in the foreground (``make run``).

Prints every URL and the local user's credentials, writes them to
``.local/endpoints.json``, and stops every service on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from local.client_host import BUILD_HINT, is_built
from local.cloud import ROOT, CloudOptions, LocalCloud
from local.model import source_from_env as model_source_from_env
from local.rest_stream import RestStreamLimits
from local.ws_gateway import GatewayLimits

DEFAULT_PORT_BASE = 4510


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    p.add_argument(
        "--port-base",
        type=int,
        default=int(os.environ.get("LOCAL_PORT_BASE", DEFAULT_PORT_BASE)),
        help="first port; services use consecutive ports (0 = any free ports). "
        f"Env LOCAL_PORT_BASE, default {DEFAULT_PORT_BASE}.",
    )
    p.add_argument(
        "--endpoints-file",
        type=Path,
        default=Path(os.environ.get("LOCAL_ENDPOINTS_FILE", ROOT / ".local" / "endpoints.json")),
    )
    return p.parse_args(argv)


# API Gateway WebSocket quotas, shortened by tests: LOCAL_WS_<FIELD> (e.g. LOCAL_WS_IDLE_TIMEOUT_S).
def gateway_limits_from_env(env: Mapping[str, str]) -> GatewayLimits:
    values: dict[str, Any] = {}
    for f in fields(GatewayLimits):
        raw = env.get(f"LOCAL_WS_{f.name.upper()}")
        if raw:
            try:
                values[f.name] = type(f.default)(raw)
            except ValueError:
                raise SystemExit(
                    f"LOCAL_WS_{f.name.upper()} must be a number, got {raw!r}"
                ) from None
    return GatewayLimits(**values)


# LogRecord attributes every record has; anything else came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class WithFields(logging.Formatter):
    """The message, then the fields passed with ``extra=`` as JSON, as Lambda's JSON log
    format shows them: what a reader of the logs (and the log checks) must see."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        return f"{line} {json.dumps(fields, default=str)}" if fields else line


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _client_line(url: str, built: bool) -> str:
    """The comparison client's banner line."""
    if built:
        return f"  Client          {url}  (open in a browser; sign in as the local user)"
    return f"  Client          {url}  (not built yet: run `{BUILD_HINT}`, then reload)"


def _banner(endpoints: dict[str, Any], started_in: float, path: Path) -> str:
    c = endpoints["cognito"]
    lines = [
        "",
        f"Local cloud is up ({started_in:.1f} s). Endpoints (also in {path}):",
        _client_line(endpoints["client"], is_built()),
        f"  REST API        {endpoints['rest']}",
        f"  WebSocket       {endpoints['websocket']}",
        f"  Function URL    {endpoints['functionUrl'] or 'not running (see the warning above)'}",
        f"  REST streaming  {endpoints['restStream'] or 'not running (no Function URL host)'}",
        f"  AppSync         {endpoints['appsync']['graphql']}  "
        f"real-time {endpoints['appsync']['realtime']}",
        f"  Cognito         {c['endpoint']}  pool {c['userPoolId']}  client {c['clientId']}",
        f"  Model           {endpoints['model']['description']}",
        f"  DynamoDB + SQS  {endpoints['aws']}",
        f"  Local user      {endpoints['user']['username']} / {endpoints['user']['password']}",
        "",
        f"Try: curl {endpoints['rest']}config",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(WithFields("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # Block the stop signals before any thread starts (threads inherit the mask)
    # and wait for them synchronously: no Python signal handler runs while
    # another thread or the main thread holds a lock it would need.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    started = time.monotonic()
    options = CloudOptions(
        port_base=args.port_base,
        endpoints_file=args.endpoints_file,
        gateway_limits=gateway_limits_from_env(os.environ),
        rest_stream_limits=RestStreamLimits.from_env(os.environ),
        queue_visibility_timeout_s=_optional_int(os.environ, "LOCAL_SQS_VISIBILITY_TIMEOUT_S"),
        # LOCAL_MODEL=bedrock: real Bedrock, everything else local (local/model.py).
        model_source=model_source_from_env(os.environ),
        token_validity_s=_optional_int(os.environ, "LOCAL_COGNITO_TOKEN_VALIDITY_S") or 3600,
    )
    cloud = LocalCloud(options)
    endpoints = cloud.start()
    try:
        print(_banner(endpoints, time.monotonic() - started, args.endpoints_file), flush=True)
        print("READY", flush=True)  # a line tests and scripts can wait for
        signal.sigwait(stop_signals)
    finally:
        print("Stopping the local cloud...", flush=True)
        cloud.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
