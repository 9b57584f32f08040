"""Retention (R4.5): stored events older than ``[database] keep_events`` (30 days by default) are
deleted by the worker's periodic tick, oldest first, in batches; alerts stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts import ingest, storage
from alerts.catalog import load_catalog
from alerts.config import Settings, load_settings
from alerts.models import as_utc
from alerts.sources.native import parse_native
from tests.helpers import SF, alerts, run_worker_once

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _event_times(engine) -> list[datetime]:
    with engine.connect() as conn:
        return [as_utc(datetime.fromisoformat(r[0]) if isinstance(r[0], str) else r[0])
                for r in conn.exec_driver_sql("select received_at from event order by id").all()]


def test_prune_deletes_the_old_prefix_in_batches(db_url: str) -> None:
    engine = storage.make_engine(db_url)
    storage.upgrade(engine)
    settings, catalog = Settings(), load_catalog()
    try:
        for day in range(10):  # 7 events a day for 10 days
            events = parse_native([{**SF, "integration_id": f"i-{k}"} for k in range(7)], max_batch=100)
            ingest.ingest(events, engine=engine, settings=settings, catalog=catalog, now=T0 + timedelta(days=day))
        cutoff = T0 + timedelta(days=6)
        deleted = [storage.prune_events(engine, before=cutoff, batch=10) for _ in range(6)]
        assert deleted == [10, 10, 10, 10, 2, 0]  # 42 events of days 0-5, ten at a time
        left = _event_times(engine)
        assert len(left) == 28 and min(left) == cutoff
        with engine.connect() as conn:
            assert conn.exec_driver_sql("select count(*) from alert").scalar() == 7
    finally:
        engine.dispose()


def test_the_worker_keeps_events_for_keep_events(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(database={"keep_events": "30d"}))
    engine = client.app.state.engine
    assert client.post("/v1/events", json=SF).status_code == 202
    clock.advance(days=20)
    assert client.post("/v1/events", json=SF).status_code == 202
    run_worker_once(client.app)
    assert len(_event_times(engine)) == 2  # neither is 30 days old yet
    clock.advance(days=11)
    run_worker_once(client.app)
    assert len(_event_times(engine)) == 1  # the first one is gone
    [alert] = alerts(engine)
    assert alert.count == 2  # the alert keeps its history


@pytest.mark.parametrize("value", ["1h", "1d", "95h"])
def test_keep_events_under_the_replay_window_is_refused(tmp_path, value: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nkeep_events = "{value}"\n')
    with pytest.raises(Exception, match="keep_events must be at least 96h"):
        load_settings(cfg)
