"""Log files in, events out: ``alerts scan``'s ingestion and the tailers inside ``alerts serve``.

:class:`LogTailer` follows every ``[[log_sources]]`` entry with ``follow = true`` like ``tail -F``:

* the globs are expanded on every poll, so files that appear later are picked up (from their start);
* a file is known by (device, inode), not by name: a *rename* rotation (``app.log`` ->
  ``app.log.1``, a new ``app.log``) keeps reading the old file through its open descriptor to its
  very end, last partial line included, then starts the new file at 0;
* *copytruncate* (the file shrinks below what was read, or its first bytes change) restarts at 0;
* a last line without its newline is held until the newline arrives or the file rotates;
* lines over 64 KiB are cut and flagged; memory stays bounded even on a 1 GB file without newlines;
* the ``log_offset`` row (device, inode, offset, the integration named last, a fingerprint of the
  file's head) is written in the *same transaction* as the events found before that offset, so a
  restart neither misses nor repeats a line (R3.7).

Why polling and not inotify/``watchfiles``: a ``stat`` per file per second is negligible next to an
authentication alert's timescale (``group_wait`` defaults to 5 s), works the same on NFS, bind mounts
and container volumes where inotify is silent, cannot overflow an event queue, and sees rename and
truncation directly in the (device, inode, size) it reads. The interval is ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import fcntl
import glob
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select

from alerts.catalog import Catalog
from alerts.config import LogSource, Settings
from alerts.ingest import IngestResult, apply_event
from alerts.models import utcnow
from alerts.scan import CHUNK, Finding, LineScanner, ScanPlan, build_plan, registry_of
from alerts.sources.logs import Ident, LineRules
from alerts.storage import LogOffset, session_scope

log = logging.getLogger("alerts.tail")

Clock = Callable[[], datetime]
HEAD = 1024  # bytes of a file's start that identify it across restarts
IDLE_CLOSE = 300  # polls without growth after which a file's descriptor is closed (reopened on growth)


@dataclass
class OffsetState:
    """What ``log_offset`` records for one file."""

    path: str
    device: int
    inode: int
    offset: int
    context: Ident | None = None
    fingerprint: str | None = None
    fingerprint_len: int = 0


def ingest_findings(
    engine: Engine,
    findings: Iterable[Finding],
    *,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    event_ids: Iterable[str | None] | None = None,
    offsets: Iterable[OffsetState] = (),
    forget: Iterable[str] = (),
) -> IngestResult:
    """Ingest findings like webhook events and record file offsets — in one transaction."""
    result = IngestResult()
    findings = list(findings)
    ids = list(event_ids) if event_ids is not None else [None] * len(findings)
    with session_scope(engine) as session:
        for finding, event_id in zip(findings, ids, strict=True):
            event = finding.event(event_id=event_id)
            if event.occurred_at is not None and event.occurred_at > now:
                event.occurred_at = now  # a clock ahead of ours, or a naive time read in the wrong zone
            apply_event(session, event, settings=settings, catalog=catalog, now=now, result=result)
        for path in forget:
            session.exec(delete(LogOffset).where(col(LogOffset.path) == path))  # type: ignore[call-overload]
        for state in offsets:
            save_offset(session, state, now=now)
    return result


def save_offset(session: Session, state: OffsetState, *, now: datetime) -> None:
    # The same file under another name (it was renamed) gives its row up to this one.
    session.exec(delete(LogOffset).where(  # type: ignore[call-overload]
        col(LogOffset.device) == state.device, col(LogOffset.inode) == state.inode, col(LogOffset.path) != state.path))
    row = session.exec(select(LogOffset).where(LogOffset.path == state.path)).first()
    if row is None:
        row = LogOffset(path=state.path)
    row.device, row.inode, row.offset = state.device, state.inode, state.offset
    row.context = json.dumps(asdict(state.context)) if state.context else None
    row.fingerprint, row.fingerprint_len = state.fingerprint, state.fingerprint_len
    row.updated_at = now
    session.add(row)


def _ident(text: str | None) -> Ident | None:
    if not text:
        return None
    try:
        return Ident(**json.loads(text))
    except (TypeError, ValueError):
        return None


def _head(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()


@dataclass
class _File:
    """A followed file: its descriptor, where reading stopped, and the scanner holding its partial line."""

    source: LogSource
    path: str
    device: int
    inode: int
    scanner: LineScanner
    read_pos: int
    fd: int | None = None
    fingerprint: str | None = None
    fingerprint_len: int = 0
    idle: int = 0
    moved: bool = False
    saved: tuple[int, str | None] = field(default=(-1, None))
    committed: tuple[int, int, Ident | None] = (0, 0, None)  # offset, line number, context in the database

    @property
    def key(self) -> tuple[int, int]:
        return (self.device, self.inode)

    def state(self) -> OffsetState:
        return OffsetState(self.path, self.device, self.inode, self.scanner.offset, self.scanner.context,
                           self.fingerprint, self.fingerprint_len)


class LogTailer:
    """Follows the ``follow = true`` log sources; :meth:`poll_once` is one round, :meth:`run` the loop."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        catalog: Catalog,
        clock: Clock = utcnow,
        sources: Iterable[LogSource] | None = None,
        scan_engine: str = "auto",
        chunk: int = CHUNK,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.sources = [s for s in (settings.log_sources if sources is None else sources) if s.follow]
        self.chunk = chunk
        registry = registry_of(settings)
        self._plans: dict[str, ScanPlan] = {
            s.name: build_plan(catalog, LineRules.from_source(s), engine=scan_engine, registry=registry)
            for s in self.sources
        }
        self._files: dict[str, dict[tuple[int, int], _File]] = {s.name: {} for s in self.sources}
        self._started: set[str] = set()
        self.last_poll: datetime | None = None
        self.findings = 0
        self._lock_fd: int | None = None

    # -- the loop ----------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return min((s.poll_interval.total_seconds() for s in self.sources), default=1.0) or 0.1

    async def run(self) -> None:
        """Poll forever — while this process holds the tailer lock (``alerts serve --workers N`` starts
        N processes on one host; only one of them may follow a file, or each line would count N times)."""
        while True:
            try:
                if self._lock():
                    await asyncio.to_thread(self.poll_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("log tailer poll failed")
            await asyncio.sleep(self.interval)

    def _lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        db = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
        where = os.path.abspath(db) if db and db != ":memory:" else str(self.engine.url)
        key = hashlib.sha256(repr((where, sorted(os.path.abspath(p) for s in self.sources for p in s.paths))).encode())
        path = os.path.join(tempfile.gettempdir(), f"alerts-tail-{key.hexdigest()[:16]}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        log.info("log tailer started", extra={"sources": [s.name for s in self.sources]})
        return True

    def close(self) -> None:
        for files in self._files.values():
            for f in files.values():
                self._close(f)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def poll_once(self) -> int:
        """One round over every source; returns the number of findings ingested."""
        before = self.findings
        for source in self.sources:
            self._poll_source(source)
            self._started.add(source.name)
        self.last_poll = self.clock()
        return self.findings - before

    # -- one source --------------------------------------------------------------------------

    def _poll_source(self, source: LogSource) -> None:
        files = self._files[source.name]
        current = self._expand(source)
        by_path = {path: key for key, (path, _) in current.items()}
        failed: Exception | None = None
        # Files that left the glob (deleted, or renamed to a name it does not match): read to the end.
        for key in [k for k in files if k not in current]:
            f = files[key]
            handover = None
            if f.path in by_path:  # rotated by rename: the new file takes over the row, from offset 0
                new_key = by_path[f.path]
                handover = OffsetState(f.path, new_key[0], new_key[1], 0)
            try:
                self._read(f, final=True, handover=handover)
            except Exception as exc:
                failed = failed or self._rewind(f, exc)
                continue  # still open: drained again on the next poll
            files.pop(key)
            self._close(f)
        # Renamed within the glob first, so their rows move before a new file claims the old name.
        for key, (path, _st) in current.items():
            if key in files and files[key].path != path:
                files[key].path, files[key].moved = path, True
        order = sorted(current.items(), key=lambda kv: not (kv[0] in files and files[kv[0]].moved))
        for key, (path, st) in order:
            f = files.get(key)  # type: ignore[assignment]
            try:
                if f is None:
                    f = files[key] = self._discover(source, path, st)
                self._read(f, st)
            except OSError as exc:
                log.warning("cannot follow log file", extra={"path": path, "error": exc.strerror or str(exc)})
                if f is not None:
                    self._rewind(f, exc)
            except Exception as exc:  # the database, most likely
                if f is None:
                    failed = failed or exc
                else:
                    failed = failed or self._rewind(f, exc)
        if failed is not None:
            raise failed

    def _rewind(self, f: _File, exc: Exception) -> Exception:
        """Forget what was read but not committed: the next poll reads it again."""
        log.error("log file not ingested; reading it again from the last committed offset",
                  extra={"path": f.path, "error": type(exc).__name__})
        offset, line_no, context = f.committed
        f.scanner = LineScanner(self._plans[f.source.name], path=f.path, offset=offset, line_no=line_no, context=context)
        f.read_pos = offset
        f.saved = (-1, None)
        return exc

    def _expand(self, source: LogSource) -> dict[tuple[int, int], tuple[str, os.stat_result]]:
        found: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
        for pattern in source.paths:
            for path in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
                if path.endswith(".gz"):
                    continue  # compressed rotations are finished files; the tailer reads live text
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), (os.path.abspath(path), st))
        return found

    def _discover(self, source: LogSource, path: str, st: os.stat_result) -> _File:
        """A file we are not following yet: resume from its saved offset if it is the same file."""
        fd = os.open(path, os.O_RDONLY)
        try:
            return self._resume(source, path, st, fd)
        except BaseException:
            os.close(fd)
            raise

    def _resume(self, source: LogSource, path: str, st: os.stat_result, fd: int) -> _File:
        plan = self._plans[source.name]
        start, context, skip = 0, None, False
        with Session(self.engine) as session:
            rows = session.exec(select(LogOffset).where(
                (LogOffset.path == path) | ((LogOffset.device == st.st_dev) & (LogOffset.inode == st.st_ino))
            )).all()
        rows = sorted(rows, key=lambda r: (r.device, r.inode) != (st.st_dev, st.st_ino))
        resumed = False
        for row in rows:
            if (row.device, row.inode) != (st.st_dev, st.st_ino):
                continue  # the name now holds another file: it is new
            size = os.fstat(fd).st_size
            same_head = row.fingerprint_len == 0 or (
                size >= row.fingerprint_len and _head(fd, row.fingerprint_len) == row.fingerprint)
            if same_head and size >= row.offset:
                start, context, resumed = row.offset, _ident(row.context), True
            break
        if not resumed and not rows and source.name not in self._started and source.read_from == "end":
            start = os.fstat(fd).st_size
            skip = start > 0 and os.pread(fd, 1, start - 1) != b"\n"
        scanner = LineScanner(plan, path=path, offset=start, context=context, skip_partial=skip)
        f = _File(source=source, path=path, device=st.st_dev, inode=st.st_ino, scanner=scanner, read_pos=start, fd=fd,
                  committed=(start, 0, context))
        log.info("following log file", extra={"source": source.name, "path": path, "offset": start,
                                              "resumed": resumed})
        return f

    # -- reading -------------------------------------------------------------------------------

    def _reopen(self, f: _File) -> bool:
        if f.fd is not None:
            return True
        try:
            fd = os.open(f.path, os.O_RDONLY)
        except OSError:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != f.key:
            os.close(fd)
            return False
        f.fd = fd
        return True

    def _close(self, f: _File) -> None:
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None

    def _read(self, f: _File, st: os.stat_result | None = None, *, final: bool = False,
              handover: OffsetState | None = None) -> None:
        """Read what was appended; ``final``: the file is gone from the glob, so read it to its end,
        let its last partial line go, and hand its row over to the file now at its name (or drop it)."""
        idle = st is not None and f.fd is None and st.st_size == f.read_pos and not f.moved
        if not idle and self._reopen(f):
            assert f.fd is not None
            size = os.fstat(f.fd).st_size
            changed = size != f.read_pos
            if changed and (size < f.read_pos or (
                    f.fingerprint_len and size >= f.fingerprint_len and _head(f.fd, f.fingerprint_len) != f.fingerprint)):
                # copytruncate, or rewritten in place: what is there now is a new file
                log.info("log file truncated; reading from its start", extra={"path": f.path})
                findings = f.scanner.finish()
                f.scanner = LineScanner(self._plans[f.source.name], path=f.path)
                f.read_pos, f.fingerprint, f.fingerprint_len = 0, None, 0
                self._commit(f, findings)
            while f.read_pos < size:
                data = os.pread(f.fd, min(self.chunk, size - f.read_pos), f.read_pos)
                if not data:
                    break
                f.read_pos += len(data)
                findings = f.scanner.feed(data)
                self._fingerprint(f)
                self._commit(f, findings)
            f.idle = 0 if changed else f.idle + 1
        if final:
            self._commit(f, f.scanner.finish(), handover=handover, forget=handover is None)
            return
        if f.moved:
            self._commit(f, [])
        if f.idle >= IDLE_CLOSE:
            self._close(f)

    def _fingerprint(self, f: _File) -> None:
        if f.fingerprint_len < HEAD and f.fd is not None:
            length = min(HEAD, f.read_pos)
            if length > f.fingerprint_len:
                f.fingerprint, f.fingerprint_len = _head(f.fd, length), length

    def _commit(self, f: _File, findings: list[Finding], *, handover: OffsetState | None = None,
                forget: bool = False) -> None:
        state = f.state()
        key = (state.offset, json.dumps(asdict(state.context)) if state.context else None)
        if not findings and key == f.saved and not f.moved and handover is None and not forget:
            return
        offsets = [handover] if handover is not None else [] if forget else [state]
        ingest_findings(self.engine, findings, settings=self.settings, catalog=self.catalog, now=self.clock(),
                        offsets=offsets, forget=[f.path] if forget else [])
        f.saved, f.moved = key, False
        f.committed = (state.offset, f.scanner.line_no, state.context)
        self.findings += len(findings)
        for finding in findings:
            log.info("authentication failure in log", extra={
                "path": finding.path, "line_no": finding.line_no, "integration_id": finding.integration_id,
                "code": finding.code})
