"""The floor for bench_ingest.py: the least a durable Python ingest endpoint can do per event.

A bare ASGI app on the same uvicorn (uvloop, httptools) and the same SQLite settings as `alerts serve`
(WAL, synchronous=FULL, one writer at a time across processes on an flock, group commit on a thread):
it parses the JSON body and, per event, upserts a counter row and inserts an event row, then answers
202. No validation, no classification, no lifecycle, no outbox. What `alerts` does beyond that is the
difference between its row and this one.

    DB=/tmp/floor.db uvicorn bench.floor_app:app --workers 2
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DB = os.environ.get("DB", "floor.db")


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(DB, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


_conn = _connect()
_conn.executescript("""
CREATE TABLE IF NOT EXISTS alert (id INTEGER PRIMARY KEY, fingerprint TEXT UNIQUE, count INT, last_seen TEXT,
                                  last_error TEXT);
CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY, integration_id TEXT, error TEXT, received_at TEXT);
""")
_lock_fd = os.open(DB + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
_mutex = threading.Lock()
_executor = ThreadPoolExecutor(1)
_pending: list[tuple[list[dict[str, Any]], asyncio.Future[int]]] = []
_draining: asyncio.Task[None] | None = None


def _commit(events: list[dict[str, Any]]) -> None:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    with _mutex:
        fcntl.flock(_lock_fd, fcntl.LOCK_EX)
        try:
            _conn.execute("BEGIN IMMEDIATE")
            for i in range(0, len(events), 300):
                chunk = events[i : i + 300]
                _conn.execute(
                    "INSERT INTO alert (fingerprint, count, last_seen, last_error) VALUES "
                    + ", ".join(["(?, 1, ?, ?)"] * len(chunk))
                    + " ON CONFLICT (fingerprint) DO UPDATE SET count = count + 1, last_seen = excluded.last_seen,"
                      " last_error = excluded.last_error",
                    [v for e in chunk for v in (e["integration_id"], now, e["error"])])
                _conn.execute("INSERT INTO event (integration_id, error, received_at) VALUES "
                              + ", ".join(["(?, ?, ?)"] * len(chunk)),
                              [v for e in chunk for v in (e["integration_id"], e["error"], now)])
            _conn.execute("COMMIT")
        finally:
            fcntl.flock(_lock_fd, fcntl.LOCK_UN)


async def _drain() -> None:
    loop = asyncio.get_running_loop()
    while _pending:
        batch = _pending[:]
        _pending.clear()
        await loop.run_in_executor(_executor, _commit, [e for events, _ in batch for e in events])
        for events, future in batch:
            future.set_result(len(events))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _draining
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] != "/v1/events":  # the benchmark's readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    data = json.loads(body)
    events = data if isinstance(data, list) else [data]
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    _pending.append((events, future))
    if _draining is None or _draining.done():
        _draining = asyncio.create_task(_drain())
    out = b'{"accepted":%d}' % await future
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
