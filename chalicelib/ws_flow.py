"""The WebSocket architecture (docs/architecture.md): API Gateway WebSocket → Chalice.

* ``authorize``: the ``$connect`` REQUEST authorizer. The client offers the
  subprotocols ``["llm-stream.v1", "auth.<idToken>"]``, so the token never
  appears in a URL.
* ``connect``: selects ``llm-stream.v1``.
* ``handle_message``: ``stream`` / ``cancel`` / ``resume``. A ``stream`` is
  recorded and handed to the generator Lambda by an asynchronous invoke, so the
  handler returns at once and API Gateway's 29 s integration timeout never
  applies to a generation.
* ``generate``: the generator Lambda. Reads Bedrock, coalesces through the
  ordered sender, stores every frame and posts it to the stream's current
  connection (chalicelib/producer.py, shared with the AppSync worker). The stream
  outlives its socket: a gone connection only stops the posting; ``resume`` from a
  new socket replays what was missed and re-attaches.
* ``generate_failed``: Lambda's on-failure destination of the generator's
  asynchronous invocation (it crashed, ran out of memory or timed out; it is invoked
  with no retries). Ends the stream at once with one error frame after what is
  stored, instead of leaving it to the claim's lease.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from chalice import WebsocketDisconnectedError
from chalice.app import WebsocketAPI

from chalicelib import json_input, stream_store
from chalicelib.bedrock import BedrockStreamer
from chalicelib.endings import ABANDONED, end_if_abandoned, end_with_error
from chalicelib.errors import ErrorCode, StreamError
from chalicelib.frames import (
    WEBSOCKET_FRAME_LIMIT,
    encode,
    parse_after_seq,
    parse_start_request,
    parse_stream_id,
    rejection,
)
from chalicelib.gateway_auth import Unauthorized, claims_context, policy
from chalicelib.jwt_verify import JwtVerifier, TokenError
from chalicelib.producer import StoredDelivery, generate_claimed
from chalicelib.settings import Settings
from chalicelib.stream_store import StreamRecord, StreamStore
from chalicelib.ws_rate import Throttled

log = logging.getLogger(__name__)

PROTOCOL = "llm-stream.v1"
AUTH_PREFIX = "auth."
TRANSPORT = "websocket"
ACTIONS = ("stream", "cancel", "resume")
_REPLAY_PAGE = 500
# Posts refused with LimitExceededException are retried this many times (ordered,
# since the sender waits), then the frame is left to the store for repair.
_LIMIT_RETRIES = 4

Send = Callable[[str, str], None]  # (connection id, text); raises WebsocketDisconnectedError


class WebsocketManagementAPI(WebsocketAPI):
    """Chalice's ``WebsocketAPI`` with the ``@connections`` endpoint from settings.

    Chalice derives the endpoint from the API id (``https://{apiId}.execute-api...``),
    which cannot name a custom domain or a local endpoint, and a Lambda that is not a
    websocket handler (the generator) gets no event to derive it from. Chalice's
    ``configure`` is first-one-wins, so setting it up front makes it authoritative.
    """

    def __init__(self, endpoint_url: str = "") -> None:
        super().__init__()
        if endpoint_url:
            self._endpoint = endpoint_url.rstrip("/")


# -- auth and connect ---------------------------------------------------------------------


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def offered_protocols(headers: Mapping[str, str] | None) -> list[str]:
    raw = _header(headers, "Sec-WebSocket-Protocol") or ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def authorize(event: Mapping[str, Any], verifier: JwtVerifier) -> dict[str, Any]:
    """The ``$connect`` REQUEST authorizer: 401 without a valid ID token."""
    protocols = offered_protocols(event.get("headers"))
    token = next((p[len(AUTH_PREFIX) :] for p in protocols if p.startswith(AUTH_PREFIX)), None)
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        log.info("token rejected", extra={"reason": exc.reason, "entry": "websocket"})
        raise Unauthorized() from None
    return policy(claims["sub"], "Allow", event["methodArn"], claims_context(claims))


def connect(event: Mapping[str, Any]) -> dict[str, Any]:
    """Accept a connection the authorizer let through, selecting our subprotocol."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    if not authorizer.get("sub"):
        return {"statusCode": 401}  # no authorizer ran: never accept anonymously
    if PROTOCOL not in offered_protocols(event.get("headers")):
        return {"statusCode": 400}
    return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": PROTOCOL}}


# -- messages -----------------------------------------------------------------------------


@dataclass
class MessageDeps:
    settings: Settings
    store: StreamStore
    send: Send
    start_generation: Callable[[dict[str, Any]], None]
    # Per-connection message budget (chalicelib/ws_rate.py); None counts nothing.
    rate_limit: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.time


# Actions refused once the connection's token has expired: they start or read a stream.
_NEED_LIVE_TOKEN = ("stream", "resume")


def token_expired_error() -> StreamError:
    """What a client gets for a stream request on a connection whose token has expired: it
    must open a new connection with a fresh token (the client does so on this answer)."""
    return StreamError(
        ErrorCode.UNAUTHORIZED,
        "The connection's token has expired: reconnect with a fresh token.",
        retryable=True,
    )


def _token_expired(authorizer: Mapping[str, Any], settings: Settings, now: float) -> bool:
    """Whether the token the connection was opened with has expired (with the leeway the
    verifier grants, so a token the handshake accepts is accepted here too). A context
    without ``exp`` counts as expired: every connection's authorizer records it."""
    try:
        exp = float(authorizer.get("exp"))  # API Gateway may hand numbers over as strings
    except (TypeError, ValueError):
        return True
    return now > exp + settings.jwt_leeway_s


def _bad(message: str) -> StreamError:
    return StreamError(ErrorCode.BAD_REQUEST, message)


def _send_quietly(send: Send, connection_id: str, frame: dict[str, Any]) -> None:
    with contextlib.suppress(WebsocketDisconnectedError):
        send(connection_id, encode(frame, WEBSOCKET_FRAME_LIMIT))


def handle_message(event: Mapping[str, Any], deps: MessageDeps) -> dict[str, Any]:
    """One client message. Problems become error frames; the connection stays usable."""
    ctx = event.get("requestContext") or {}
    connection_id = ctx["connectionId"]
    authorizer = ctx.get("authorizer") or {}
    owner = authorizer.get("sub")
    stream_id: str | None = None
    try:
        if not owner:
            raise StreamError(ErrorCode.UNAUTHORIZED, "This connection is not authenticated.")
        if deps.rate_limit is not None:
            deps.rate_limit(connection_id)
        body = json_input.loads(event.get("body") or "", "the message")
        if not isinstance(body, dict):
            raise _bad("the message must be a JSON object")
        action = body.get("action")
        if isinstance(body.get("streamId"), str):
            stream_id = body["streamId"]
        if action in _NEED_LIVE_TOKEN and _token_expired(authorizer, deps.settings, deps.clock()):
            raise token_expired_error()
        if action == "stream":
            _start(body, owner, connection_id, deps)
        elif action == "cancel":
            _check_fields(body, {"action", "streamId"})
            deps.store.request_cancel(parse_stream_id(body.get("streamId")), owner)
        elif action == "resume":
            _check_fields(body, {"action", "streamId", "afterSeq"})
            resume(deps, owner, connection_id, body.get("streamId"), body.get("afterSeq", -1))
        elif action is None:
            raise _bad(f"'action' is required: one of {', '.join(ACTIONS)}")
        else:
            raise _bad(f"unknown action {str(action)[:40]!r}; expected one of {', '.join(ACTIONS)}")
    except Throttled as err:
        if err.first:
            _send_quietly(deps.send, connection_id, rejection(err))
    except StreamError as err:
        _send_quietly(deps.send, connection_id, rejection(err, stream_id))
    except WebsocketDisconnectedError:
        pass  # the client left while we answered; a later resume replays from the store
    return {"statusCode": 200}


def _check_fields(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise _bad(f"unknown field {sorted(unknown)[0]!r}")


def _start(body: dict[str, Any], owner: str, connection_id: str, deps: MessageDeps) -> None:
    fields = {k: v for k, v in body.items() if k != "action"}
    req = parse_start_request(fields, deps.settings.limits)
    record, created = deps.store.create(
        req.stream_id, owner, TRANSPORT, connection_id=connection_id, model=deps.settings.model_id
    )
    if not created:
        # The same owner retrying a start: attach this socket and replay, no new generation.
        resume(deps, owner, connection_id, record.stream_id, -1)
        return
    try:
        deps.start_generation(
            {
                "streamId": req.stream_id,
                "owner": owner,
                "generation": record.generation,
                "request": req.to_dict(),
            }
        )
    except Exception:
        log.exception("could not start the generator", extra={"streamId": req.stream_id})
        deps.store.finish(
            req.stream_id, owner, stream_store.ERROR, last_seq=-1, error_code="INTERNAL"
        )
        raise StreamError(ErrorCode.INTERNAL, "The stream could not be started.") from None


def resume(
    deps: MessageDeps, owner: str, connection_id: str, raw_stream_id: Any, after_seq: Any
) -> None:
    """Attach the owner's stream to this connection and replay the frames it missed.

    The replay holds a follower slot (``TOO_MANY_FOLLOWERS`` past the per-stream or
    per-user bound), released when it is done."""
    stream_id = parse_stream_id(raw_stream_id)
    after = parse_after_seq(after_seq)
    end_if_abandoned(deps.store, deps.store.get_owned(stream_id, owner))
    follower = f"ws-{uuid.uuid4()}"
    with deps.store.following(owner, stream_id, follower, deps.settings.claim_lease_s):
        _replay(deps, owner, connection_id, stream_id, after)


def _replay(deps: MessageDeps, owner: str, connection_id: str, stream_id: str, after: int) -> None:
    record = deps.store.attach(stream_id, owner, connection_id)
    if record.terminal:
        # No producer is left: everything stored is final, replay all of it.
        _send_stored(deps, connection_id, record, after, record.last_seq)
        return
    # Frames up to delivered_seq were addressed to the old connection; later ones come
    # here from the producer. Replaying exactly the former loses and repeats nothing.
    _send_stored(deps, connection_id, record, after, record.delivered_seq)
    now = deps.store.replayed(stream_id, connection_id)
    if now is not None and now.terminal and now.connection_id == connection_id:
        # It ended during the replay: the frames before the end came here live, and the
        # terminal frame was left to this replay, so it arrives after all of them.
        last = -1 if now.last_seq is None else now.last_seq
        if last > after:
            _send_stored(deps, connection_id, now, last - 1, last)


def _send_stored(
    deps: MessageDeps, connection_id: str, record: StreamRecord, after: int, last: int | None
) -> None:
    """Send the stored frames after ``after`` up to ``last``."""
    cursor, last = after, -1 if last is None else last
    while cursor < last:
        frames = deps.store.frames_after(record, cursor, limit=_REPLAY_PAGE)
        if not frames:
            break
        for frame in frames:
            if frame["seq"] > last:
                return
            deps.send(connection_id, encode(frame, WEBSOCKET_FRAME_LIMIT))
            cursor = frame["seq"]


# -- the generator --------------------------------------------------------------------------


class WebsocketDelivery(StoredDelivery):
    """Stores each frame, then posts it to the stream's current connection.

    The connection is read in the same write that records the frame as delivered
    (``StreamStore.mark_delivered``, and ``finish`` for the terminal frame), which is
    what lets ``resume`` re-attach a stream without losing or repeating a frame.
    """

    def __init__(
        self,
        store: StreamStore,
        send: Send,
        record: StreamRecord,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(store, record)
        self._send = send
        self._sleep = sleep
        self.connection_id: str | None = record.connection_id
        self.gone: set[str] = set()
        self._left_to_replay = False

    def stored(self, frame: dict[str, Any], finished: StreamRecord | None) -> None:
        self._left_to_replay = False
        if finished is not None:
            self.connection_id = finished.connection_id
            # A resume is replaying to that connection: the replay sends this last frame
            # after the ones before it (StreamStore.attach).
            self._left_to_replay = finished.replaying is not None
        elif frame.get("type") not in ("done", "error"):
            self.connection_id = self.store.mark_delivered(self.record.stream_id, frame["seq"])

    def send(self, frame: dict[str, Any]) -> None:
        conn = self.connection_id
        if not conn or conn in self.gone or self._left_to_replay:
            return
        data = encode(frame, WEBSOCKET_FRAME_LIMIT)
        for attempt in range(_LIMIT_RETRIES + 1):
            try:
                self._send(conn, data)
                return
            except WebsocketDisconnectedError:
                # The client went away; the generation goes on into the store.
                self.gone.add(conn)
                log.info("connection gone", extra={"streamId": self.record.stream_id})
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code != "LimitExceededException" or attempt == _LIMIT_RETRIES:
                    raise
                self._sleep(0.05 * 2**attempt)


@dataclass
class GenerateDeps:
    settings: Settings
    store: StreamStore
    send: Send
    streamer: BedrockStreamer
    remaining_ms: Callable[[], int] = lambda: 15 * 60 * 1000


def generate(payload: Mapping[str, Any], deps: GenerateDeps, worker_id: str) -> str:
    """Produce one stream; returns its final status. Safe to run twice for one stream."""
    stream_id = parse_stream_id(payload.get("streamId"))
    owner = str(payload.get("owner"))
    generation = payload.get("generation")
    # A lease, renewed while the generator runs: if its Lambda dies (out of memory, a
    # crash), the claim lapses and the next reader (resume, REST read, the per-user cap)
    # ends the stream with a terminal error frame; the on-failure destination
    # (generate_failed) does so at once.
    record = deps.store.claim(
        stream_id,
        worker_id,
        deps.settings.claim_lease_s,
        generation=generation if isinstance(generation, str) else None,
    )
    if record is None:
        # A retried async invoke for a stream already produced (or being produced).
        log.info("stream already claimed", extra={"streamId": stream_id})
        return "skipped"
    if record.owner != owner:
        deps.store.release_claim(stream_id, worker_id)
        log.warning("stream of a job not found", extra={"streamId": stream_id})
        return "skipped"
    return generate_claimed(
        record,
        worker_id,
        payload.get("request"),
        settings=deps.settings,
        streamer=deps.streamer,
        delivery=WebsocketDelivery(deps.store, deps.send, record),
        limit_bytes=WEBSOCKET_FRAME_LIMIT,
        remaining_ms=deps.remaining_ms,
    )


def generate_failed(event: Mapping[str, Any], deps: GenerateDeps) -> str:
    """Lambda's on-failure destination record of a failed ``generate`` invocation: end
    its stream with one error frame after what is stored and post it to the stream's
    connection, if any. Returns what was done."""
    payload = event.get("requestPayload")
    condition = (event.get("requestContext") or {}).get("condition")
    if not isinstance(payload, Mapping):
        log.warning("destination record without a payload", extra={"condition": condition})
        return "ignored"
    try:
        stream_id = parse_stream_id(payload.get("streamId"))
    except StreamError:
        log.warning("destination record without a stream", extra={"condition": condition})
        return "ignored"
    record = deps.store.get(stream_id)
    generation = payload.get("generation")
    if (
        record is None
        or record.owner != payload.get("owner")
        or (generation is not None and record.generation != generation)
        or record.terminal
    ):
        return "finished"
    ended = end_with_error(deps.store, record, ABANDONED)
    log.error(
        "generator failed; stream ended",
        extra={
            "streamId": stream_id,
            "condition": condition,
            "functionError": (event.get("responseContext") or {}).get("functionError"),
            "ended": ended is not None,
        },
    )
    if ended is None:
        return "finished"
    frame, finished = ended
    # A resume replaying meanwhile sends the frame itself, after the ones before it.
    if finished.connection_id and finished.replaying is None:
        try:
            deps.send(finished.connection_id, encode(frame, WEBSOCKET_FRAME_LIMIT))
        except Exception as exc:  # stored all the same: a resume replays it
            log.info(
                "terminal frame not posted",
                extra={"streamId": stream_id, "errorType": type(exc).__name__},
            )
    return "ended"
