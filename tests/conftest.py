"""Shared fixtures: a settings factory, a fresh SQLite database per test, an injectable clock,
and the app wired to them. Real peers (SMTP, Slack, PostgreSQL, chromium) live in ``tests/peers``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alerts import storage
from alerts.catalog import Catalog, load_catalog
from alerts.config import Settings, load_settings

IN_CI = os.environ.get("CI", "").lower() == "true"


class Clock:
    """A clock tests move by hand: ``clock.advance(minutes=5)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file under ``tmp_path``; keyword sections override defaults."""

    def make(**sections: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": f"sqlite:///{tmp_path}/alerts.db"},
            "outbox": {"dir": str(tmp_path / "outbox")},
            "alerting": {"group_wait": "0s"},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return load_settings(None, **data)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Any]:
    eng = storage.make_engine(settings.database_url)
    storage.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test once on a fresh SQLite file and once in a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/db.sqlite"
    else:
        from tests.peers.postgres import fresh_schema

        with fresh_schema() as url:
            yield url


@pytest.fixture
def make_client(clock: Clock) -> Iterator[Callable[..., TestClient]]:
    """A TestClient over ``create_app(settings)`` with the test clock; the worker runs only if asked."""
    from alerts.web import create_app

    clients: list[TestClient] = []

    def make(settings: Settings, *, run_worker: bool = False, **kw: Any) -> TestClient:
        app = create_app(settings, clock=clock, run_worker=run_worker, **kw)
        client = TestClient(app, base_url="http://127.0.0.1:8080")  # a loopback name, as a browser would send
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings)
