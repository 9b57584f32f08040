"""Group commit: concurrent requests share one ingest transaction (and one fsync).

While a transaction is being committed, new requests queue up; the next transaction takes all of
them (up to ``max_events``). Nobody waits for a timer: a lone request is committed at once. Each
request still gets its own result, and answers only after the transaction that holds its events
has committed. If a shared transaction fails, each request is retried alone, so one bad request
cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from alerts.ingest import IngestResult, ingest_groups
from alerts.models import AuthErrorEvent
from alerts.web.problems import database_error_text, database_unavailable

log = logging.getLogger("alerts.ingest")
COMMIT_DEADLINE_S = 15.0  # a request waits this long for its commit, then gets a 503


class GroupCommitter:
    def __init__(self, *, engine: Any, settings: Any, catalog: Any, clock: Callable[[], datetime],
                 max_events: int = 2000,
                 observe: Callable[[int, int, dict[str, float]], None] | None = None) -> None:
        self.engine = engine
        self.observe = observe  # (requests, events, phases) of each committed transaction: the metrics
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.max_events = max_events
        # One thread of its own: transactions run one at a time anyway, and a dedicated executor
        # skips to_thread's context copy and never queues behind the delivery worker's calls.
        self._executor = _CommitThread()
        self._pending: list[tuple[list[AuthErrorEvent], str | None, asyncio.Future[IngestResult]]] = []
        self._draining: asyncio.Task[None] | None = None
        # Since when commits fail because the database cannot be used, and what it said (for /readyz).
        self.failing_since: datetime | None = None
        self.failure: str | None = None

    async def submit(self, events: list[AuthErrorEvent], body_sha256: str | None = None) -> IngestResult:
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._pending.append((events, body_sha256, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        # A cancelled request leaves its events in the transaction; _settle skips it. A database that takes
        # the statements and never answers (a stalled server: no timeout of the driver's sees it) holds the
        # commit thread: past the deadline the request gets its 503 — its events may still be stored when
        # the server wakes up, which a retry with the same event_id finds as a duplicate.
        # (a timer, not wait_for + shield: those cost ~12 µs a request on the hot path, this ~2)
        deadline = asyncio.get_running_loop().call_later(COMMIT_DEADLINE_S, self._late, future)
        try:
            return await future
        finally:
            deadline.cancel()

    def _late(self, future: asyncio.Future[IngestResult]) -> None:
        if future.done():
            return
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.failure = f"no answer from the database within {COMMIT_DEADLINE_S:.0f} s"
        future.set_exception(sa.exc.TimeoutError(self.failure))  # its commit, if it ever ends, finds it done

    def _take(self) -> list[tuple[list[AuthErrorEvent], str | None, asyncio.Future[IngestResult]]]:
        batch, size = [], 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_events):
            item = self._pending.pop(0)
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self, batch: list[tuple[list[AuthErrorEvent], str | None, Any]]) -> list[IngestResult]:
        phases: dict[str, float] = {}
        call = functools.partial(
            ingest_groups, [b[0] for b in batch], engine=self.engine, settings=self.settings, catalog=self.catalog,
            now=self.clock(), body_sha256s=[b[1] for b in batch], phases=phases,
        )
        results = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        if self.observe is not None and phases:
            self.observe(len(batch), sum(len(b[0]) for b in batch), phases)
        return results

    async def _drain(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                results = await self._run(batch)
            except Exception as exc:
                if database_unavailable(exc):
                    # The database, not a request, is the problem: every request of the batch gets its 503
                    # now (one by one, each would wait out the same outage: minutes behind a hung server).
                    if self.failing_since is None:
                        self.failing_since = self.clock()
                    self.failure = database_error_text(exc)
                    for item in batch:
                        _settle(item[2], exc=exc)
                    continue
                if len(batch) == 1:
                    _settle(batch[0][2], exc=exc)
                    continue
                log.warning("group commit failed; committing its requests one by one",
                            extra={"requests": len(batch), "error": type(exc).__name__})
                for item in batch:
                    try:
                        [result] = await self._run([item])
                    except Exception as one:  # noqa: BLE001 - handed to that request
                        _settle(item[2], exc=one)
                    else:
                        _settle(item[2], result=result)
                continue
            self.failing_since = self.failure = None
            for item, result in zip(batch, results, strict=True):
                _settle(item[2], result=result)


def _settle(future: asyncio.Future[IngestResult], *, result: IngestResult | None = None,
            exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


class _CommitThread(Executor):
    """One daemon thread running the commits in order. Not a ThreadPoolExecutor: the interpreter joins
    those at exit, and a commit stuck on a stalled database server would then keep the process from
    ever exiting (a stopped service must stop)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="group-commit", daemon=True).start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:  # type: ignore[override]
        future: Future[Any] = Future()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
