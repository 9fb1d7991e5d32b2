"""What 1,000 streams of the scenario cost on AWS, per architecture, from measured counts.

Prices are parameters (``PRICES``), each with its source; Bedrock is excluded (the same
for every architecture). What is counted per stream:

* Lambda: requests (invocations of the stream's functions) and GB-seconds (memory as
  the stack configures it x duration). Durations are measured from the client side,
  which bounds them from above: the generating invocation runs from the start request
  to the terminal frame; the short handlers are billed a measured round trip each: the
  WebSocket handshake for authorizer + ``$connect``, and again for the ``stream`` message
  and for ``$disconnect``; the ``startStream`` answer for the AppSync resolver.
* API Gateway (WebSocket): messages (every ``@connections`` post received by the client,
  plus the client's one ``stream`` message; every frame is far under the 32 KB metering
  increment) and connection minutes (connect to terminal frame).
* AppSync: query/mutation operations (``startStream`` and every ``publishFrames``),
  real-time updates (every delivered publish, plus the connection and the subscription
  start, which AppSync also counts as real-time updates) and connection minutes.
* SQS: ``SendMessage`` and ``DeleteMessage`` as recorded, plus the one receive that
  delivered the message; the event source's idle long polls are a fixed cost per queue,
  not per stream, and left out.
* DynamoDB (on demand): write and read request units as recorded at the local cloud's
  DynamoDB (every item is under 1 KB; reads under 4 KB).

Against a deployed stack nothing is recorded (``recorded`` is None): DynamoDB and the
SQS requests are left out, not guessed.

Free tiers are not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRICE_REGION = "us-east-1 (US East, N. Virginia)"
PRICE_DATE = "2026-11-23"


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str


PRICES: dict[str, Price] = {
    "lambda_request": Price(0.20 / 1e6, "request", "https://aws.amazon.com/lambda/pricing/"),
    "lambda_gb_s": Price(
        0.0000166667,
        "GB-second (x86, first 6 billion GB-s/month)",
        "https://aws.amazon.com/lambda/pricing/",
    ),
    "apigw_ws_message": Price(
        1.00 / 1e6,
        "message (first 1 billion/month, 32 KB increments)",
        "https://aws.amazon.com/api-gateway/pricing/",
    ),
    # A streamed response is billed as one REST API call; see the pricing page for its
    # streaming terms (response data beyond what one call covers is not modelled here).
    "apigw_rest_request": Price(
        3.50 / 1e6,
        "REST API call (first 333 million/month)",
        "https://aws.amazon.com/api-gateway/pricing/",
    ),
    "apigw_ws_connection_minute": Price(
        0.25 / 1e6, "connection minute", "https://aws.amazon.com/api-gateway/pricing/"
    ),
    "appsync_operation": Price(
        4.00 / 1e6, "query or mutation operation", "https://aws.amazon.com/appsync/pricing/"
    ),
    "appsync_realtime_update": Price(
        2.00 / 1e6, "real-time update", "https://aws.amazon.com/appsync/pricing/"
    ),
    "appsync_connection_minute": Price(
        0.08 / 1e6, "connection minute", "https://aws.amazon.com/appsync/pricing/"
    ),
    "sqs_request": Price(
        0.40 / 1e6, "request (standard queue, 64 KB chunks)", "https://aws.amazon.com/sqs/pricing/"
    ),
    "dynamodb_wru": Price(
        0.625 / 1e6,
        "write request unit (on demand)",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    ),
    "dynamodb_rru": Price(
        0.125 / 1e6,
        "read request unit (on demand)",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    ),
}

# As the CDK stack (cdk/stacks/) configures the functions (all x86_64).
LAMBDA_MEMORY_GB = {"function_url": 0.5, "websocket": 0.5, "appsync": 0.5, "rest_stream": 0.5}
# Invocations per stream: the Node.js function; the authorizer, $connect, the stream
# message ($default), the generator and $disconnect; the startStream resolver and the
# worker; the REST API's authorizer (jwt_auth, no cache) and the Node.js function.
LAMBDA_INVOCATIONS = {"function_url": 1, "websocket": 5, "appsync": 2, "rest_stream": 2}
STREAMS = 1000


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else 0.0


def usage_per_stream(
    architecture: str, streams: list[Mapping[str, Any]], recorded: Mapping[str, Any] | None
) -> dict[str, float]:
    """Billable quantities of one stream (means over ``streams``), from measurements;
    without DynamoDB and SQS when ``recorded`` is None."""
    n = len(streams)
    messages = sum(s["messages"] for s in streams) / n
    generating = _mean([s.get("streamSeconds") for s in streams])
    connection_s = _mean(
        [
            s["streamSeconds"] + s["connectSeconds"]
            if s.get("streamSeconds") is not None and s.get("connectSeconds") is not None
            else None
            for s in streams
        ]
    )
    ops = recorded.get("operations", {}) if recorded is not None else {}
    u: dict[str, float] = {"lambda_request": LAMBDA_INVOCATIONS[architecture]}
    if recorded is not None:
        u["dynamodb_wru"] = recorded.get("wru", 0.0) / n
        u["dynamodb_rru"] = recorded.get("rru", 0.0) / n
    gb = LAMBDA_MEMORY_GB[architecture]
    if architecture == "function_url":
        u["lambda_gb_s"] = gb * generating
    elif architecture == "rest_stream":
        # The authorizer's run is inside the time to the first frame; billed as generating.
        u["lambda_gb_s"] = gb * generating
        u["apigw_rest_request"] = 1.0
    elif architecture == "websocket":
        connect = _mean([s.get("connectSeconds") for s in streams])
        # authorizer + $connect, the stream message, $disconnect (each billed the measured
        # handshake round trip), and the generator
        u["lambda_gb_s"] = gb * (3 * connect + generating)
        u["apigw_ws_message"] = messages + 1
        u["apigw_ws_connection_minute"] = connection_s / 60.0
    else:
        resolver = _mean([s.get("startAnsweredMs") for s in streams]) / 1000.0
        u["lambda_gb_s"] = gb * (resolver + generating)
        u["appsync_operation"] = 1 + messages
        u["appsync_realtime_update"] = messages + 2
        u["appsync_connection_minute"] = connection_s / 60.0
        if recorded is not None:
            sends = ops.get("sqs.SendMessage", 0) + ops.get("sqs.SendMessageBatch", 0)
            deletes = ops.get("sqs.DeleteMessage", 0) + ops.get("sqs.DeleteMessageBatch", 0)
            u["sqs_request"] = (sends + deletes) / n + 1
    return u


def cost_per_1000_streams(usage: Mapping[str, float]) -> dict[str, float]:
    """USD per 1,000 streams, by service (lambda, apigw, appsync, sqs, dynamodb) and total."""
    by_service: dict[str, float] = {}
    for key, quantity in usage.items():
        service = key.split("_", 1)[0]
        by_service[service] = by_service.get(service, 0.0) + quantity * PRICES[key].usd * STREAMS
    by_service["total"] = sum(by_service.values())
    return by_service
