"""Small helpers shared by tests: read rows, run the worker once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import Session, select

from alerts.storage import Alert, Event, Notification


def rows(engine: Any, table: Any, *where: Any) -> list[Any]:
    with Session(engine) as s:
        stmt = select(table)
        for w in where:
            stmt = stmt.where(w)
        return list(s.exec(stmt.order_by(table.id)).all())


def alerts(engine: Any) -> list[Alert]:
    return rows(engine, Alert)


def events(engine: Any) -> list[Event]:
    return rows(engine, Event)


def notifications(engine: Any, **eq: Any) -> list[Notification]:
    out = rows(engine, Notification)
    return [n for n in out if all(getattr(n, k) == v for k, v in eq.items())]


def run_worker_once(app: Any) -> int:
    """One delivery tick of the app's worker (reminders, then every due row)."""
    return asyncio.run(app.state.worker.tick())


SF = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant: expired access/refresh token"}
