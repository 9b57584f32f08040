"""Time to fix: how long alerts stay broken, per provider and per code (median and 90th percentile).

Each alert records when it was opened (``first_seen``), first notified, acknowledged and resolved;
time to fix is ``resolved_at - first_seen``, time to acknowledge ``acknowledged_at - first_seen``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts.models import as_utc
from alerts.storage import Alert, session_scope


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"count": len(values), "median_seconds": percentile(values, 50), "p90_seconds": percentile(values, 90)}


def time_to_fix(engine: Engine, *, now: datetime, window: timedelta = timedelta(days=30)) -> dict[str, Any]:
    """Statistics over alerts resolved within ``window`` before ``now``."""
    since = now - window
    with session_scope(engine) as s:
        resolved = s.exec(select(Alert).where(Alert.state == "resolved", Alert.resolved_at >= since)).all()
        by_state = dict(s.execute(sa.select(Alert.state, sa.func.count()).group_by(Alert.state)).all())
    fix_all: list[float] = []
    ack_all: list[float] = []
    notify_all: list[float] = []
    by_provider: dict[str, list[float]] = defaultdict(list)
    by_code: dict[str, list[float]] = defaultdict(list)
    for a in resolved:
        seconds = (as_utc(a.resolved_at) - as_utc(a.first_seen)).total_seconds()
        fix_all.append(seconds)
        by_provider[a.provider or "unknown"].append(seconds)
        by_code[a.code].append(seconds)
        if a.acknowledged_at:
            ack_all.append((as_utc(a.acknowledged_at) - as_utc(a.first_seen)).total_seconds())
        if a.first_notified_at:
            notify_all.append((as_utc(a.first_notified_at) - as_utc(a.first_seen)).total_seconds())
    return {
        "window_days": window.days,
        "alerts": {state: by_state.get(state, 0) for state in ("firing", "acknowledged", "resolved")},
        "time_to_fix": {
            "overall": summary(fix_all),
            "by_provider": {k: summary(v) for k, v in sorted(by_provider.items())},
            "by_code": {k: summary(v) for k, v in sorted(by_code.items())},
        },
        "time_to_acknowledge": summary(ack_all),
        "time_to_first_message": summary(notify_all),
    }
