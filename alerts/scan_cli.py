"""``alerts scan PATH...``: the command's body (its options are declared in ``alerts/cli.py``).

Exit status: 0 when every file was scanned, whatever was found; 1 when a file cannot be read
(checked for all files before anything is scanned, so nothing is half-ingested because of a typo;
a file that turns out corrupt halfway, e.g. a broken gzip, stops the scan with its name);
2 for a bad option or configuration.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from alerts.scan import (
    CHUNK,
    Finding,
    InputError,
    ScanPlan,
    build_plan,
    check_readable,
    event_id_for,
    file_identity,
    open_input,
    registry_of,
    scan_stream,
)
from alerts.sources.logs import LineRules, rules_for

BATCH = 500  # findings per ingest transaction


def _sniff_json(stream: Any) -> bool:
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    return head.lstrip()[:1] == b"{"


def run(
    paths: list[str],
    *,
    fmt: str | None,
    as_json: bool,
    dry_run: bool,
    source_name: str | None,
    integration: str | None,
    provider: str | None,
    auth_method: str | None,
    engine_name: str,
    config: Any,
    show_progress: bool | None,
) -> None:
    from alerts import cli
    from alerts.scan import resolve_engine

    settings = cli.settings_from(config)
    catalog = cli.catalog_from(settings)
    if paths.count("-") > 1:
        cli.fail("stdin (-) can be scanned once")
    for path in paths:
        try:
            check_readable(path)
        except InputError as exc:
            cli.fail(str(exc), 1)
    try:
        engine_name = resolve_engine(engine_name)
    except ValueError as exc:
        cli.fail(str(exc))
    source = None
    if source_name:
        source = next((s for s in settings.log_sources if s.name == source_name), None)
        if source is None:
            cli.fail(f"--source: no [[log_sources]] entry named {source_name!r}")
    db = None if dry_run else cli.engine_from(settings)
    registry = registry_of(settings)
    plans: dict[tuple[str, str], ScanPlan] = {}
    overrides: dict[str, Any] = {}
    if integration:
        overrides = {"regexes": [], "integration_field": [], "filename_pattern": None, "integration_id": integration}
    if provider:
        overrides["provider"] = provider
    if auth_method:
        overrides["auth_method"] = auth_method

    def plan_for(path: str, stream: Any) -> ScanPlan:
        src = source or rules_for(path, settings.log_sources)
        form = fmt or (src.format if src else ("json" if _sniff_json(stream) else "text"))
        key = (src.name if src else "", form)
        if key not in plans:
            rules = LineRules.from_source(src, format=form) if src else LineRules.default(form)  # type: ignore[arg-type]
            for k, v in overrides.items():
                setattr(rules, k, v)
            rules.__post_init__()
            plans[key] = build_plan(catalog, rules, engine=engine_name, registry=registry)
        return plans[key]

    out = sys.stdout
    totals = {"bytes": 0, "lines": 0, "findings": 0, "accepted": 0, "duplicates": 0}
    alert_ids: set[int] = set()
    started = time.perf_counter()
    progress = _Progress(enabled=sys.stderr.isatty() if show_progress is None else show_progress)

    def emit(f: Finding) -> None:
        if as_json:
            out.write(json.dumps(f.public(), ensure_ascii=False) + "\n")
        else:
            public = f.public()
            text = public["text"] if len(public["text"]) <= 300 else public["text"][:299] + "…"
            out.write(f"{f.path}:{f.line_no}: {f.integration_id} {f.code}: {text}\n")

    def flush(batch: list[Finding], identity: str | None) -> None:
        if db is None or not batch:
            batch.clear()
            return
        from alerts.tail import ingest_findings

        ids = [event_id_for(identity, f) for f in batch]
        result = ingest_findings(db, batch, settings=settings, catalog=catalog, now=cli._now(), event_ids=ids)
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        alert_ids.update(result.alert_ids)
        batch.clear()

    with progress:
        for path in paths:
            try:
                stream = open_input(path)
            except InputError as exc:
                cli.fail(str(exc), 1)
            identity = file_identity(path)
            batch: list[Finding] = []
            task = progress.start(path, _size(path))
            try:
                with stream:
                    plan = plan_for(path, stream)
                    for f in scan_stream(stream, plan, path=path, progress=task, chunk=CHUNK):
                        totals["findings"] += 1
                        emit(f)
                        batch.append(f)
                        if len(batch) >= BATCH:
                            out.flush()
                            flush(batch, identity)
                    totals["bytes"] += progress.last_bytes
                    totals["lines"] += progress.last_lines
            except (OSError, EOFError, zlib.error) as exc:
                out.flush()
                flush(batch, identity)
                cli.fail(f"{path}: {_reason(exc)}", 1)
            out.flush()
            flush(batch, identity)
    elapsed = max(time.perf_counter() - started, 1e-9)
    summary = (f"scanned {len(paths)} file{'s' if len(paths) != 1 else ''}: {_human(totals['bytes'])}, "
               f"{totals['lines']:,} lines in {elapsed:.2f} s ({totals['bytes'] / elapsed / 1e6:,.0f} MB/s, "
               f"{plans and next(iter(plans.values())).engine}); {totals['findings']:,} "
               f"finding{'s' if totals['findings'] != 1 else ''}")
    if db is not None:
        summary += (f"; ingested {totals['accepted']:,} event{'s' if totals['accepted'] != 1 else ''}"
                    f" ({totals['duplicates']:,} already seen), {len(alert_ids)} alert{'s' if len(alert_ids) != 1 else ''}")
    cli.err.print(summary, markup=False, highlight=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "unexpected end of compressed data"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _size(path: str) -> int | None:
    if path == "-" or path.endswith(".gz"):
        return None
    try:
        import os

        return os.path.getsize(path)
    except OSError:
        return None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


class _Progress:
    """A rich progress bar on a terminal (bytes, lines/s, findings); silent otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.last_bytes = self.last_lines = 0
        self._bar: Any = None
        self._started = 0.0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TextColumn("{task.fields[lines]:,} lines ({task.fields[rate]:,.0f}/s), {task.fields[found]:,} findings"),
                console=Console(stderr=True), transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, path: str, total: int | None) -> Callable[[int, int, int], None]:
        self.last_bytes = self.last_lines = 0
        started = time.perf_counter()
        task = self._bar.add_task(path, total=total, lines=0, rate=0.0, found=0) if self._bar else None

        def update(done: int, lines: int, found: int) -> None:
            self.last_bytes, self.last_lines = done, lines
            if task is not None:
                rate = lines / max(time.perf_counter() - started, 1e-9)
                self._bar.update(task, completed=done, lines=lines, rate=rate, found=found)

        return update
