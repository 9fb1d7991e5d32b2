"""DynamoDB and SQS calls of a run, counted at the local cloud's moto server.

moto's recorder (``/moto-api/recorder/...``) appends every request it serves to a file
while recording is on; both runtimes (the Python app and the Node.js function) reach
DynamoDB and SQS only through that server, so this counts every call of both. Requests
are classified by their ``X-Amz-Target`` (both services speak the JSON protocol) and
turned into the units AWS bills: write request units (1 per item written, 2 for a
transactional one; every item here is under 1 KB), read request units (1 for a strongly
consistent read, 0.5 for an eventually consistent one; items under 4 KB) and SQS
requests.
"""

from __future__ import annotations

import base64
import collections
import json
import urllib.request
from typing import Any

_WRITE_ONE = {"PutItem", "UpdateItem", "DeleteItem"}
_READ_ONE = {"GetItem", "Query", "Scan"}


class CallRecorder:
    def __init__(self, aws_endpoint: str) -> None:
        self._base = aws_endpoint.rstrip("/") + "/moto-api/recorder/"

    def _post(self, action: str) -> bytes:
        req = urllib.request.Request(self._base + action, data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def start(self) -> None:
        """Forget what was recorded and record from now on."""
        self._post("reset-recording")
        self._post("start-recording")

    def stop(self) -> dict[str, Any]:
        """Stop recording; the counts of what was recorded (see ``count``)."""
        self._post("stop-recording")
        with urllib.request.urlopen(self._base + "download-recording", timeout=60) as resp:
            text = resp.read().decode("utf-8")
        self._post("reset-recording")  # the recording holds request bodies: do not keep it
        return count(json.loads(line) for line in text.splitlines() if line.strip())


def _body(entry: dict[str, Any]) -> dict[str, Any]:
    raw = entry.get("body") or ""
    if entry.get("body_encoded"):
        raw = base64.b64decode(raw).decode("utf-8")
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def count(entries: Any) -> dict[str, Any]:
    """Operations, billed units and SQS requests of recorded moto requests."""
    ops: collections.Counter[str] = collections.Counter()
    wru = rru = 0.0
    sqs = 0
    for entry in entries:
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        target = headers.get("x-amz-target", "")
        service, _, op = target.partition(".")
        if not op:
            continue
        if service.startswith("AmazonSQS"):
            ops[f"sqs.{op}"] += 1
            sqs += 1
            continue
        if not service.startswith("DynamoDB"):
            continue
        ops[f"dynamodb.{op}"] += 1
        body = _body(entry)
        if op in _WRITE_ONE:
            wru += 1
        elif op == "BatchWriteItem":
            wru += sum(len(v) for v in (body.get("RequestItems") or {}).values())
        elif op == "TransactWriteItems":
            wru += 2 * len(body.get("TransactItems") or [])
        elif op in _READ_ONE:
            rru += 1.0 if body.get("ConsistentRead") else 0.5
        elif op == "BatchGetItem":
            for table in (body.get("RequestItems") or {}).values():
                rru += len(table.get("Keys") or []) * (1.0 if table.get("ConsistentRead") else 0.5)
        elif op == "TransactGetItems":
            rru += 2 * len(body.get("TransactItems") or [])
    return {"operations": dict(sorted(ops.items())), "wru": wru, "rru": rru, "sqsRequests": sqs}
