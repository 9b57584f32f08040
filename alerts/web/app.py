"""``create_app(settings)``: the receiver, API and (later) dashboard in one FastAPI application.

The lifespan upgrades the database, checks SQLite's pragmas, and runs the delivery worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from alerts import storage
from alerts.catalog import Catalog, load_catalog
from alerts.config import Settings
from alerts.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from alerts.metrics import Metrics
from alerts.render import Renderer
from alerts.stitch_poller import StitchPoller
from alerts.web import browsers, reload
from alerts.web.committer import GroupCommitter
from alerts.web.fastpath import EventsFastPath
from alerts.web.problems import (
    PROBLEM,
    RETRY_AFTER_S,
    UNAVAILABLE_DETAIL,
    BodyLimit,
    BodyTooLarge,
    Problem,
    database_error_text,
    database_unavailable,
    problem_bytes,
)
from alerts.worker import Worker

log = logging.getLogger("alerts.web")
access = logging.getLogger("alerts.access")


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    catalog: Catalog | None = None,
    clock: Callable[[], datetime] | None = None,
    run_worker: bool = True,
    worker: Worker | None = None,
) -> FastAPI:
    engine = engine or storage.make_engine(settings.database_url, synchronous=settings.database.synchronous)
    db_clock = storage.DatabaseClock(engine) if clock is None else None  # every replica on the database's time
    clock = clock or db_clock
    assert clock is not None
    catalog = catalog or load_catalog(settings.catalog.entries, settings.catalog.disable)
    worker = worker or Worker(engine=engine, settings=settings, catalog=catalog, clock=clock)
    metrics = Metrics(engine, clock=clock)
    worker.on_sent = metrics.on_sent
    stitch_poller = StitchPoller(engine=engine, settings=settings, catalog=catalog, clock=clock) \
        if settings.stitch.configured else None
    log_tailer = _log_tailer(engine, settings, catalog, clock)  # None unless a [[log_sources]] has follow = true

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(startup_checks, engine, settings)
        if db_clock is not None:
            await asyncio.to_thread(db_clock.sync)
            db_clock.start()
        task = asyncio.create_task(worker.run(), name="delivery-worker") if run_worker else None
        app.state.worker_task = task
        stitch_task = asyncio.create_task(stitch_poller.run(), name="stitch-poller") \
            if run_worker and stitch_poller else None
        tail_task = asyncio.create_task(log_tailer.run(), name="log-tailer") if run_worker and log_tailer else None
        checkpointer = storage.Checkpointer(engine).start() if run_worker else None
        reload_task = asyncio.create_task(reload.watch(settings), name="config-reload")
        log.info("alerts ready", extra={"settings": settings.redacted_dump()})
        try:
            yield
        finally:
            reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)
            if db_clock is not None:
                await asyncio.to_thread(db_clock.stop)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if stitch_task is not None:
                stitch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stitch_task
            if stitch_poller is not None:
                await stitch_poller.aclose()
            if tail_task is not None:
                tail_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tail_task
            if log_tailer is not None:
                log_tailer.close()
            await worker.aclose()

    app = AlertsApp(
        title="alerts",
        version="0.1.0",
        summary="One clear message when a data integration's authentication breaks.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.catalog = catalog
    app.state.clock = clock
    app.state.worker = worker
    app.state.worker_task = None
    app.state.stitch_poller = stitch_poller
    app.state.log_tailer = log_tailer
    app.state.metrics = metrics
    app.state.committer = GroupCommitter(engine=engine, settings=settings, catalog=catalog, clock=clock,
                                         observe=metrics.on_commit)
    app.state.renderer = Renderer(user_dir=settings.templates.dir)

    def refused(request: Request, status: int) -> None:
        if 400 <= status < 500:
            metrics.refused.labels(_route_path(request), str(status)).inc()

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        refused(request, exc.status)
        return JSONResponse(exc.body(_route_path(request)), status_code=exc.status, media_type=PROBLEM,
                            headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        refused(request, 413)
        p = Problem(413, f"body larger than {settings.server.max_body_bytes} bytes")
        return JSONResponse(p.body(_route_path(request)), status_code=413, media_type=PROBLEM)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        refused(request, exc.status_code)
        p = Problem(exc.status_code, str(exc.detail))
        return JSONResponse(p.body(_route_path(request)), status_code=exc.status_code, media_type=PROBLEM,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused(request, 422)
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"]) or "request"
        p = Problem(422, f"{where}: {first['msg']}", errors=errors)
        return JSONResponse(p.body(_route_path(request)), status_code=422, media_type=PROBLEM)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up before its body arrived: nothing was stored and nobody reads the answer.
        log.info("client disconnected before its request body arrived", extra={"path": _route_path(request)})
        return JSONResponse(Problem(400, "client disconnected").body(), status_code=400, media_type=PROBLEM)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            log.error("database unavailable", extra={"path": _route_path(request), "error": type(exc).__name__,
                                                     "reason": database_error_text(exc)})
            if getattr(request.app.state, "metrics", None) is not None:
                request.app.state.metrics.unavailable.labels(_route_path(request)).inc()
            p = Problem(503, UNAVAILABLE_DETAIL)
            return JSONResponse(p.body(), status_code=503, media_type=PROBLEM,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        log.error("unhandled error", extra={"path": _route_path(request), "error": type(exc).__name__})
        p = Problem(500, "internal error; see the server log")
        return JSONResponse(p.body(), status_code=500, media_type=PROBLEM)

    app.add_middleware(AccessLog)
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes,
                       timeout=settings.server.request_timeout.total_seconds())

    from alerts.web import api, dashboard, silences
    from alerts.web import stats as stats_routes
    from alerts.web import stitch as stitch_routes
    from alerts.web import tokens as token_routes

    app.include_router(api.router)
    from alerts.web.webhooks import install as install_webhooks

    install_webhooks(app)  # /v1/webhooks/…, signed /v1/events, refusal counts, 401 rate limit
    app.include_router(stitch_routes.router)  # /v1/webhooks/stitch/{token}: post-load webhooks
    app.include_router(silences.router)
    app.include_router(stats_routes.router)
    app.include_router(token_routes.router)
    app.include_router(dashboard.router)
    from alerts.web.slack_actions import router as slack_actions_router

    app.include_router(slack_actions_router)  # /v1/slack/actions: Slack buttons (signed, after install_webhooks)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics_endpoint() -> PlainTextResponse:
        """Prometheus metrics, every name prefixed ``alerts_``."""
        return PlainTextResponse(metrics.render(), media_type=METRICS_CONTENT_TYPE)
    return app


class AlertsApp(FastAPI):
    """FastAPI with the events hot path (:mod:`alerts.web.fastpath`) in front of everything FastAPI does
    per request (its telemetry check, its middleware stack); what the hot path does not take goes
    through all of it."""

    _fast: EventsFastPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and getattr(self.state, "settings", None) is not None:
            why = browsers.refusal(scope, self.state.settings)
            if why is not None:
                log.warning("request refused", extra={"path": scope.get("path", "")[:200], "error": why})
                body = problem_bytes(403, why)
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        if self._fast is None:
            self._fast = EventsFastPath(super().__call__, state=self.state)
        await self._fast(scope, receive, send)


class AccessLog:
    """One log line per request with the route *template*, never the raw path: a path can carry a
    secret token (``/v1/webhooks/airbyte/{token}``, R4.4)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            access.info("request", extra={"method": scope.get("method"), "route": getattr(route, "path", "(unmatched)"),
                                          "status": status, "ms": round((time.perf_counter() - start) * 1000, 1)})


def app_from_environment() -> FastAPI:
    """The app of one ``alerts serve --workers N`` process: configuration from ``$ALERTS_CONFIG`` and the
    environment, as the parent process read it."""
    from alerts.config import load_settings
    from alerts.jsonlog import setup_logging

    settings = load_settings()
    setup_logging(settings.log.level, settings.log.format)
    app = create_app(settings)
    tune_gc()
    return app


def tune_gc() -> None:
    """Garbage collection for a serving process (``alerts serve`` calls this once the app is built).

    Ingest allocates some hundred short-lived objects per event and almost no reference cycles, so
    reference counting frees them; the cyclic collector, run every 700 allocations by default, only
    walks the heap — a quarter of ingest's CPU in batches of 100 (63 -> 40 us per event measured).
    ``gc.freeze()`` moves what start-up built (modules, settings, the catalog) out of its sight, and a
    higher first threshold runs it 30 times less often.
    """
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(unmatched)"


def _log_tailer(engine: Engine, settings: Settings, catalog: Catalog, clock: Callable[[], datetime]) -> Any:
    if not any(source.follow for source in settings.log_sources):
        return None
    from alerts.tail import LogTailer

    return LogTailer(engine=engine, settings=settings, catalog=catalog, clock=clock)


def startup_checks(engine: Engine, settings: Settings) -> None:
    """Upgrade the schema and check SQLite's durability settings (R5.1)."""
    path = storage.sqlite_path(settings.database_url)
    if path is not None and not settings.database.allow_network_fs and _on_network_fs(path):
        raise RuntimeError(f"{path} is on a network filesystem; SQLite's locking is not safe there")
    storage.upgrade(engine)
    if path is not None:
        values = storage.check_sqlite(engine)
        want_sync = {"FULL": 2, "NORMAL": 1}[settings.database.synchronous]
        if str(values["journal_mode"]).lower() != "wal" or int(values["synchronous"]) != want_sync \
                or int(values["busy_timeout"]) < 5000 or int(values["foreign_keys"]) != 1:
            raise RuntimeError(f"SQLite pragmas not in effect: {values}")
        if tuple(int(x) for x in str(values["version"]).split(".")[:2]) < (3, 35):
            raise RuntimeError(f"SQLite {values['version']} is too old (RETURNING needs 3.35)")


def _on_network_fs(path: Any) -> bool:
    try:
        target = str(path.resolve().parent)
        best, fstype = "", ""
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
        return fstype in {"nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "fuse.sshfs", "afs", "glusterfs", "ceph"}
    except OSError:
        return False
