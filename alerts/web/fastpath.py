"""The hot path: ``POST /v1/events`` answered without FastAPI's routing, dependencies and middleware.

At thousands of requests a second the framework, not the database, was the bottleneck: every
request crossed ten middleware layers and four thread hops for its dependencies (~1 ms of CPU and,
under load, waits for the GIL). This ASGI layer handles the common case itself — an
``application/json`` body that parses and validates, with a valid signature when ``[webhooks.native]``
has secrets — and hands everything else to the full application with the body replayed: wrong
content types, bodies too large, bad signatures, bodies that do not parse or validate, clients that
are rate limited. So every refusal still has exactly one implementation (the route in
:mod:`alerts.web.api`), and the answer to a good request is the same 202 either way. The only
thread hop left is the group commit's (:mod:`alerts.web.committer`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts import crashpoints
from alerts.sources import signing
from alerts.sources.envelope import BadPayload, decode_json
from alerts.sources.native import EventProblem, parse_native
from alerts.web.problems import (
    PROBLEM,
    RETRY_AFTER_S,
    UNAVAILABLE_DETAIL,
    BodyTooSlow,
    database_error_text,
    database_unavailable,
    deadline_receive,
    problem_bytes,
)
from alerts.web.webhooks import with_delivery_id

log = logging.getLogger("alerts.web")
access = logging.getLogger("alerts.access")

PATH = "/v1/events"
ROUTE = "/v1/events"


class EventsFastPath:
    """Outermost application middleware; see the module docstring. ``state`` is the app's ``state``."""

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or not self._eligible(scope):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        settings = self.state.settings
        limit = settings.server.max_body_bytes
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        timed = deadline_receive(receive, settings.server.request_timeout.total_seconds())
        while True:
            try:
                message = await timed()
            except BodyTooSlow:
                timeout = settings.server.request_timeout.total_seconds()
                await _respond(send, 408, problem_bytes(408, f"the request body did not arrive within {timeout:g} s"),
                               PROBLEM, close=True)
                _access(scope, 408, start)
                return
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: nothing was stored, nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:  # the full app answers 413 (and counts it)
                await self.app(scope, _replay(messages, receive), send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        source = settings.webhooks.native
        try:
            verified = None
            if source.secrets:
                now = self.state.clock()
                verified = signing.verify_standard(Headers(scope=scope), body, signing.candidates(source.secrets, now=now),
                                                   now=now, tolerance=source.tolerance)
            data = decode_json(body)
            events = parse_native(data, max_batch=settings.server.max_batch)
        except (signing.Unauthenticated, BadPayload, EventProblem):
            # The full app refuses it (401/400/422) with the one explanation, count and rate limit there are.
            await self.app(scope, _replay(messages, receive), send)
            return
        if verified is not None:
            self.state.webhook_guard.matched("native", verified.index)
            with_delivery_id(events, verified.message_id, many=isinstance(data, list))
        try:
            result = await self.state.committer.submit(events, hashlib.sha256(body).hexdigest())
        except Exception as exc:  # noqa: BLE001 - the same answer the app gives an unhandled error
            if database_unavailable(exc):
                log.error("database unavailable", extra={"path": ROUTE, "error": type(exc).__name__,
                                                         "reason": database_error_text(exc)})
                if getattr(self.state, "metrics", None) is not None:
                    self.state.metrics.unavailable.labels(ROUTE).inc()
                await _respond(send, 503, problem_bytes(503, UNAVAILABLE_DETAIL), PROBLEM,
                               extra=[(b"retry-after", str(RETRY_AFTER_S).encode())])
                _access(scope, 503, start)
                return
            log.error("unhandled error", extra={"path": ROUTE, "error": type(exc).__name__})
            await _respond(send, 500, problem_bytes(500, "internal error; see the server log"), PROBLEM)
            _access(scope, 500, start)
            return
        crashpoints.hit("after_ingest_commit_before_response")
        if result.wake:
            self.state.worker.wake.set()
        self.state.metrics.count_events("native", accepted=result.accepted, duplicates=result.duplicates)
        payload = b'{"accepted":%d,"duplicates":%d,"alert_ids":[%s]}' % (
            result.accepted, result.duplicates, ",".join(map(str, result.alert_ids)).encode())
        await _respond(send, 202, payload, "application/json")
        _access(scope, 202, start)

    def _eligible(self, scope: Scope) -> bool:
        ctype = b""
        length = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value
            elif name == b"content-length":
                length = value
        if ctype.split(b";", 1)[0].strip().lower() != b"application/json":
            return False
        if length and not (length.isdigit() and int(length) <= self.state.settings.server.max_body_bytes):
            return False  # the full app answers 413 (or 400) before reading a byte (R3.1)
        guard = getattr(self.state, "webhook_guard", None)
        if guard is not None and not guard.limiter.empty:
            client = (scope.get("client") or ("-", 0))[0] or "-"
            if guard.limiter.retry_after(client, guard.now()) is not None:
                return False  # the guard answers 429
        return True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that yields the messages already read, then continues with the real one."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _respond(send: Send, status: int, body: bytes, content_type: str, *, close: bool = False,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _access(scope: Scope, status: int, start: float) -> None:
    if access.isEnabledFor(logging.INFO):
        access.info("request", extra={"method": "POST", "route": ROUTE, "status": status,
                                      "ms": round((time.perf_counter() - start) * 1000, 1)})
