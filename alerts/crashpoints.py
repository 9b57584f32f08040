"""Crash points for the crash harness (R5.3) — test builds only.

With ``ALERTS_TEST_BUILD=1`` and ``ALERTS_CRASHPOINT=<name>:<n>`` in the environment, the process
SIGKILLs itself the n-th time it passes the named point. Without ``ALERTS_TEST_BUILD=1`` this is a
no-op, so a stray variable in production cannot kill the service. The points::

    after_ingest_commit_before_response   the events are committed; the 2xx is not yet sent
    after_claim_commit                    outbox rows are leased to this process
    after_send_before_mark                the message went out; the row still says pending
    mid_digest_claim                      a digest period is claimed, its transaction not committed
    during_checkpoint                     a SQLite WAL checkpoint is under way: killed by a watcher
                                          thread the moment the checkpoint writes the database file
                                          (or, with nothing to copy, as it returns)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POINTS = (
    "after_ingest_commit_before_response",
    "after_claim_commit",
    "after_send_before_mark",
    "mid_digest_claim",
    "during_checkpoint",
)

_lock = threading.Lock()
_passes: dict[str, int] = {}
_UNREAD = ("", 0)
_spec: tuple[str, int] | None = _UNREAD  # read from the environment once per process (the hot path passes here)


def _armed() -> tuple[str, int] | None:
    global _spec
    if _spec is _UNREAD:
        _spec = _read()
    return _spec


def _read() -> tuple[str, int] | None:
    if os.environ.get("ALERTS_TEST_BUILD") != "1":
        return None
    spec = os.environ.get("ALERTS_CRASHPOINT", "")
    name, _, count = spec.partition(":")
    if name not in POINTS:
        return None
    try:
        return name, max(1, int(count or "1"))
    except ValueError:
        return None


def _due(name: str) -> bool:
    """Count a pass through ``name``; whether it is the armed point's n-th pass."""
    armed = _armed()
    if armed is None or armed[0] != name:
        return False
    with _lock:
        _passes[name] = _passes.get(name, 0) + 1
        return _passes[name] == armed[1]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hit(name: str) -> None:
    """Count a pass through ``name``; die here if this is the armed point's n-th pass."""
    if _due(name):
        _die()


@contextmanager
def during(name: str, *, writes: Path) -> Iterator[None]:
    """Die while the block runs, the moment it changes the file ``writes`` (its size or mtime), if this is
    the armed point's n-th pass; at the block's end at the latest. The block must release the GIL while
    it works (a SQLite statement does): a watcher thread polls the file meanwhile."""
    if not _due(name):
        yield
        return

    def stat() -> tuple[int, int]:
        try:
            st = os.stat(writes)
        except OSError:
            return (-1, -1)
        return (st.st_size, st.st_mtime_ns)

    before = stat()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.0002):
            if stat() != before:
                print(f"crashpoint {name}: killed while {writes.name} is being written", file=sys.stderr, flush=True)
                _die()

    watcher = threading.Thread(target=watch, name=f"crashpoint-{name}", daemon=True)
    watcher.start()
    try:
        yield
    finally:  # returned or raised: the armed pass dies either way
        done.set()
        print(f"crashpoint {name}: killed as it returned ({writes.name} unchanged)", file=sys.stderr, flush=True)
        _die()
