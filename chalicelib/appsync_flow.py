"""The AppSync + SQS architecture (docs/architecture.md): AppSync → resolver → SQS → worker
→
AppSync publish → subscription.

* ``resolve``: the Lambda behind ``startStream``, ``cancelStream`` and ``streamFrames``
  (cdk/appsync/stream_operation.js builds its event). ``startStream`` records the stream
  and queues it; the client has subscribed before, so no frame is published before
  anyone listens.
* ``handle_batch``: the SQS worker. For each message it claims the stream with a
  conditional write (renewed as a lease while it runs), reads Bedrock through the
  ordered coalescing sender, stores every frame and publishes it with the IAM-only
  ``publishFrames`` mutation. Failed records are reported as partial batch failures.

Redelivery never produces a second generation or a duplicate frame:

* a finished stream's message is acknowledged and nothing is published;
* a stream claimed under a live lease (SQS delivered the message twice) is left to its
  producer;
* a stream claimed under a lapsed lease lost its producer (the Lambda crashed or timed
  out): it is ended with a terminal ``error`` frame after the frames stored so far;
* if the ``start`` frame cannot be published, the claim is released before any model
  call and the message fails, so a retry starts cleanly;
* a message failing on its last receive (``WORKER_MAX_RECEIVE_COUNT``) ends the stream
  with an ``error`` frame before it fails into the DLQ, so no client waits forever.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.appsync_publish import PublishError
from chalicelib.bedrock import BedrockStreamer
from chalicelib.endings import ABANDONED, UNDELIVERABLE, end_with_error
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import (
    APPSYNC_PAYLOAD_LIMIT,
    encode,
    parse_start_request,
    parse_stream_id,
)
from chalicelib.producer import StoredDelivery, generate_claimed
from chalicelib.rest_api import snapshot
from chalicelib.settings import Settings
from chalicelib.stream_store import ERROR, StreamRecord, StreamStore

log = logging.getLogger(__name__)

TRANSPORT = "appsync"
FIELDS = ("startStream", "cancelStream", "streamFrames")
MESSAGE_VERSION = 1

Publish = Callable[[str, str, Sequence[dict[str, Any]]], None]  # (streamId, owner, frames)

# -- resolvers ------------------------------------------------------------------------------


@dataclass
class ResolverDeps:
    settings: Settings
    store: StreamStore
    enqueue: Callable[[dict[str, Any]], None]


def _bad(message: str) -> StreamError:
    return StreamError(ErrorCode.BAD_REQUEST, message)


def _caller(identity: Any) -> str:
    """The caller's ``sub``. ID tokens only, as on every entry point (docs/security.md):
    AppSync itself would also let a Cognito access token through."""
    if not isinstance(identity, Mapping) or not identity.get("sub"):
        raise StreamError(ErrorCode.UNAUTHORIZED, "Sign in to use this API.")
    if identity.get("tokenUse") != "id":
        raise StreamError(ErrorCode.UNAUTHORIZED, "Use an ID token, not an access token.")
    return str(identity["sub"])


def resolve(event: Mapping[str, Any], deps: ResolverDeps) -> dict[str, Any]:
    """One GraphQL field; ``{"data": ...}`` or ``{"error": {code, message, retryable}}``."""
    field = event.get("field")
    args = event.get("arguments") or {}
    try:
        owner = _caller(event.get("identity"))
        if field == "startStream":
            data = start_stream(args.get("input"), owner, deps)
        elif field == "cancelStream":
            stream_id = parse_stream_id(args.get("streamId"))
            data = deps.store.request_cancel(stream_id, owner).public()
        elif field == "streamFrames":
            after = args.get("afterSeq")  # an explicit null means "from the start"
            # Holds a follower slot while it reads: bounded per stream and per user.
            record, frames, has_more = snapshot(
                deps.store,
                owner,
                args.get("streamId"),
                -1 if after is None else after,
                follower=(f"gql-{uuid.uuid4()}", deps.settings.claim_lease_s),
            )
            data = {
                "stream": record.public(),
                "frames": [encode(f) for f in frames],
                "hasMore": has_more,
            }
        else:
            raise _bad(f"unknown field {str(field)[:40]!r}; expected one of {', '.join(FIELDS)}")
    except StreamError as err:
        return {"error": err.to_dict()}
    except Exception:
        log.exception("resolver failed", extra={"field": str(field)[:40]})
        return {"error": StreamError(ErrorCode.INTERNAL, "Internal error.").to_dict()}
    return {"data": data}


def start_stream(raw_input: Any, owner: str, deps: ResolverDeps) -> dict[str, Any]:
    """Record the stream and queue it for the worker; returns at once."""
    if not isinstance(raw_input, Mapping):
        raise _bad("input is required")
    # GraphQL hands over explicit nulls for optional fields; they mean "not given".
    fields = {k: v for k, v in raw_input.items() if v is not None}
    if "streamId" not in fields:
        raise _bad("input.streamId is required: subscribe to onStreamFrame(streamId) first")
    req = parse_start_request(fields, deps.settings.limits)
    record, created = deps.store.create(
        req.stream_id, owner, TRANSPORT, model=deps.settings.model_id
    )
    if created:
        message = {
            "v": MESSAGE_VERSION,
            "streamId": req.stream_id,
            "owner": owner,
            "generation": record.generation,
            "request": req.to_dict(),
        }
        try:
            deps.enqueue(message)
        except Exception:
            log.exception("could not queue the stream", extra={"streamId": req.stream_id})
            deps.store.finish(req.stream_id, owner, ERROR, last_seq=-1, error_code="INTERNAL")
            raise StreamError(ErrorCode.INTERNAL, "The stream could not be started.") from None
    # created=False: the same owner retried; the stream runs (or ran) once.
    return {"streamId": record.stream_id, "status": record.status, "created": created}


# -- the worker -----------------------------------------------------------------------------


@dataclass
class WorkerDeps:
    settings: Settings
    store: StreamStore
    publish: Publish
    streamer: BedrockStreamer
    remaining_ms: Callable[[], int] = lambda: 15 * 60 * 1000


@dataclass(frozen=True)
class Job:
    stream_id: str
    owner: str
    request: dict[str, Any]
    # The stream's generation when it was queued (absent in older messages).
    generation: str | None = None


class PoisonMessage(ValueError):
    """A message no retry can process (it goes to the DLQ)."""


def parse_job(body: str | None) -> Job:
    try:
        message = json.loads(body or "")
    except ValueError:
        raise PoisonMessage("the message is not JSON") from None
    if not isinstance(message, dict) or message.get("v") != MESSAGE_VERSION:
        raise PoisonMessage(f"the message is not a version {MESSAGE_VERSION} job")
    try:
        stream_id = parse_stream_id(message.get("streamId"))
    except StreamError:
        raise PoisonMessage("the message has no valid streamId") from None
    owner, request = message.get("owner"), message.get("request")
    if not isinstance(owner, str) or not owner or not isinstance(request, dict):
        raise PoisonMessage("the message has no owner or request")
    generation = message.get("generation")
    return Job(stream_id, owner, request, generation if isinstance(generation, str) else None)


class AppSyncDelivery(StoredDelivery):
    """Stores each transcript frame, then publishes it (heartbeats are only published).

    Stored first, so a frame whose publish fails is still there for the client's gap
    repair (``streamFrames``); the sender records the failure and goes on. The ``start``
    frame alone must arrive: if AppSync cannot be reached, the message fails before any
    model call (see ``producer.generate_claimed``).
    """

    start_must_arrive = True

    def __init__(self, store: StreamStore, publish: Publish, record: StreamRecord) -> None:
        super().__init__(store, record)
        self._publish = publish

    def send(self, frame: dict[str, Any]) -> None:
        self._publish(self.record.stream_id, self.record.owner, [frame])


def handle_batch(event: Mapping[str, Any], deps: WorkerDeps) -> dict[str, Any]:
    """An SQS batch; ``{"batchItemFailures": [...]}`` names the records to retry.

    Records run one after another, in the invocation's thread. A record is a whole
    generation, so the event source's batch size is 1 (``WORKER_BATCH_SIZE``): each
    stream gets its own invocation and Lambda's concurrency is the parallelism.
    """
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=dict(event),
        record_handler=lambda record: process_record(record, deps),
        processor=processor,
    )


def process_record(record: SQSRecord, deps: WorkerDeps) -> str:
    """One message; returns what was done, raises when the message should be retried."""
    receive_count = int(record.attributes.approximate_receive_count or 1)
    job: Job | None = None
    try:
        job = parse_job(record.body)
        return process_job(job, f"{record.message_id}#{receive_count}", deps)
    except Exception as exc:
        last = receive_count >= deps.settings.worker_max_receive_count
        log.error(
            "stream job failed",
            extra={
                "messageId": record.message_id,
                "streamId": job.stream_id if job else None,
                "receiveCount": receive_count,
                "lastAttempt": last,
                "errorType": type(exc).__name__,
            },
        )
        if last and job is not None:
            give_up(job, deps)
        raise


def process_job(job: Job, worker_id: str, deps: WorkerDeps) -> str:
    store = deps.store
    record = store.get(job.stream_id)
    if (
        record is None
        or record.owner != job.owner
        or (job.generation is not None and record.generation != job.generation)
    ):
        log.warning("stream of a job not found", extra={"streamId": job.stream_id})
        return "missing"
    if record.terminal:
        return "finished"  # a redelivery after the stream ended: nothing more to publish
    if record.claimed_by is not None:
        if not store.claim_lapsed(record):
            return "running"  # a duplicate delivery; the producer is alive
        _end_and_publish(record, deps, ABANDONED)
        return "abandoned"
    claimed = store.claim(
        job.stream_id, worker_id, deps.settings.claim_lease_s, generation=record.generation
    )
    if claimed is None:
        return "running"  # another delivery claimed it first
    return generate_claimed(
        claimed,
        worker_id,
        job.request,
        settings=deps.settings,
        streamer=deps.streamer,
        delivery=AppSyncDelivery(store, deps.publish, claimed),
        limit_bytes=APPSYNC_PAYLOAD_LIMIT,
        remaining_ms=deps.remaining_ms,
    )


def give_up(job: Job, deps: WorkerDeps) -> None:
    """The message's last attempt failed: end the stream so no client waits forever."""
    try:
        record = deps.store.get(job.stream_id)
        if record is not None and record.owner == job.owner and not record.terminal:
            _end_and_publish(record, deps, UNDELIVERABLE)
    except Exception:
        log.exception("could not end the stream", extra={"streamId": job.stream_id})


def _end_and_publish(record: StreamRecord, deps: WorkerDeps, err: StreamError) -> None:
    ended = end_with_error(deps.store, record, err)
    if ended is None:
        return  # someone else ended it (and published its frame)
    frame, _ = ended
    log.info("stream ended after its worker stopped", extra={"streamId": record.stream_id})
    _publish_quietly(record.stream_id, record.owner, frame, deps)


def _publish_quietly(stream_id: str, owner: str, frame: dict[str, Any], deps: WorkerDeps) -> None:
    try:
        deps.publish(stream_id, owner, [frame])
    except PublishError as exc:
        # Stored all the same: the client finds it with streamFrames.
        log.warning(
            "terminal frame not published",
            extra={"streamId": stream_id, "reason": exc.reason},
        )
