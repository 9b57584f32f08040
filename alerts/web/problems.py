"""Errors as ``application/problem+json`` (RFC 9457) and the limits that produce them (R3.1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM = "application/problem+json"

TITLES = {
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    def __init__(self, status: int, detail: str, *, type_: str = "about:blank",
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.headers = headers
        self.status = status
        self.detail = detail
        self.type = type_
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out = {"type": self.type, "title": TITLES.get(self.status, "Error"), "status": self.status,
               "detail": self.detail}
        if instance:
            out["instance"] = instance
        out.update(self.extra)
        return out


def problem_bytes(status: int, detail: str, **extra: Any) -> bytes:
    return json.dumps(Problem(status, detail, **extra).body()).encode()


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    """The client did not send the whole body within ``server.request_timeout`` (slowloris, R3.1)."""


def deadline_receive(receive: Receive, seconds: float) -> Receive:
    """``receive`` that raises :class:`BodyTooSlow` once ``seconds`` have passed since its first call
    without the body's last chunk (the clock starts when the app first asks for the body)."""
    deadline: float | None = None
    done = False
    # uvicorn's receive() returns at once when its cycle has body bytes buffered (the usual case for a
    # small request): then no timer is needed, and the hot path does not pay for one.
    arrived = getattr(getattr(receive, "__self__", None), "message_event", None)

    async def timed() -> Message:
        nonlocal deadline, done
        if done:  # the body is complete: later calls wait for a disconnect, as long as they like
            return await receive()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + seconds
        if arrived is not None and arrived.is_set():
            message = await receive()
        else:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow() from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message

    return timed


class BodyLimit:
    """Refuse bodies over ``max_bytes``: by ``Content-Length`` before reading, or while streaming (413)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout  # seconds for the whole body to arrive (408 after), None: no limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_problem(send, 400, "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await _send_problem(send, 413, f"body larger than {self.max_bytes} bytes")
                    return
        seen = 0
        started = False
        timed = deadline_receive(receive, self.timeout) if self.timeout else receive

        async def limited_receive() -> Message:
            nonlocal seen
            message = await timed()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_problem(send, 413, f"body larger than {self.max_bytes} bytes")
        except BodyTooSlow:
            if not started:
                await _send_problem(send, 408, f"the request body did not arrive within {self.timeout:g} s")


async def _send_problem(send: Send, status: int, detail: str) -> None:
    body = problem_bytes(status, detail)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or used *right now* — a 503 to retry, not a
    500 to investigate: a connection refused or cut, the pool empty, SQLite's lock held past
    ``busy_timeout``, PostgreSQL out of connections or shutting down. A missing table, a syntax error
    or a constraint are bugs (500), although drivers raise some of them as ``OperationalError`` too."""
    import sqlite3

    import psycopg
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.TimeoutError):  # the pool had no connection to give
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig: BaseException = exc.orig  # type: ignore[assignment]
        no_code = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    elif isinstance(exc, sqlite3.Error | psycopg.Error):
        # the driver's own error, not wrapped: the hot path's raw connections (engine.raw_connection())
        orig = exc
        no_code = isinstance(exc, sqlite3.OperationalError | psycopg.OperationalError | psycopg.InterfaceError)
    else:
        return False
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN"))
    state = getattr(orig, "sqlstate", None) or ""
    if state:
        return state.startswith(("08", "53", "57P")) or state in ("40001", "40P01")  # connection, resources, shutdown
    return no_code  # no code: connection refused or cut


def database_error_text(exc: BaseException) -> str:
    """What the driver said, first line only and redacted (a DSN in it loses its password): the log line
    of a 503 says "database or disk is full" or "connection refused", not only the exception's class."""
    from alerts.redact import redact

    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return redact(text)[:300]


UNAVAILABLE_DETAIL = "the database is unavailable; nothing was stored, retry later"
RETRY_AFTER_S = 5
