"""The ingest hot path (issue 11): the raw ASGI route, raw bulk SQL, the writers' lock, and waking
the delivery worker only when something is due."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from alerts import ingest, outbox, storage
from alerts.fastsql import Raw
from alerts.models import AuthErrorEvent, EventStatus
from alerts.routing import Target
from alerts.storage import Alert, Event, Notification, session_scope

SF = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant: expired access/refresh token"}


def _event(**kw) -> AuthErrorEvent:
    return AuthErrorEvent(**{"source": "native", "status": EventStatus.failed, **SF, **kw})


# -- raw bulk SQL reads and writes exactly what the ORM does ------------------------------------------


def test_raw_rows_read_back_through_the_orm_unchanged(db_url, make_settings, catalog) -> None:
    settings = make_settings(database={"url": db_url}, alerting={"group_wait": "5m"})
    engine = storage.make_engine(settings.database_url)
    storage.upgrade(engine)
    on_the_second = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)  # microsecond 0: the format must still match
    first = ingest.ingest([_event(labels={"team": "data", "env": "prod"}, occurred_at=on_the_second)],
                          engine=engine, settings=settings, catalog=catalog, now=on_the_second)
    later = on_the_second + timedelta(minutes=1, microseconds=250)
    again = ingest.ingest([_event(occurred_at=later, error="invalid_grant: Token has been expired or revoked.")],
                          engine=engine, settings=settings, catalog=catalog, now=later)
    assert first.alert_ids == again.alert_ids == [1]
    with session_scope(engine) as s:
        alert = s.get(Alert, 1)
        assert (alert.count, alert.state, alert.silenced) == (2, "firing", False)
        assert alert.labels == {"team": "data", "env": "prod"}
        assert alert.first_seen == on_the_second and alert.last_seen == later
        assert alert.last_error == "invalid_grant: Token has been expired or revoked."
        events = s.exec(select(Event).order_by(Event.id)).all()
        assert [e.occurred_at for e in events] == [on_the_second, later]
        assert [e.alert_id for e in events] == [1, 1]
        [note] = s.exec(select(Notification)).all()  # the firing message, due after group_wait
        assert note.next_attempt_at == on_the_second + timedelta(minutes=5) and note.target == {}
        assert note.kind == "firing" and note.status == "pending"
    # range queries compare stored text/timestamps correctly: the due row is found at the right moment
    assert outbox.claim(engine, now=on_the_second + timedelta(minutes=4), lease=timedelta(minutes=1), limit=5) == []
    [claimed] = outbox.claim(engine, now=on_the_second + timedelta(minutes=5), lease=timedelta(minutes=1), limit=5)
    assert claimed.id == note.id
    engine.dispose()


def test_raw_outbox_insert_ignores_a_repeated_idempotency_key(db_url, make_settings) -> None:
    settings = make_settings(database={"url": db_url})
    engine = storage.make_engine(settings.database_url)
    storage.upgrade(engine)
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    row = outbox.notification_row(alert_id=None, kind="firing", seq=1, target=Target("team", "email", {"to": "a@b"}),
                                  due=now, now=now)
    for _ in range(2):
        with session_scope(engine) as s:
            outbox.insert_many(Raw.of(s), [row])
    with session_scope(engine) as s:
        [stored] = s.exec(select(Notification)).all()
        assert stored.target == {"to": "a@b"} and stored.next_attempt_at == now and stored.payload is None
    engine.dispose()


# -- one writer at a time, across processes ----------------------------------------------------------------


def test_write_lock_excludes_another_holder_and_is_reentrant(tmp_path) -> None:
    path = tmp_path / "db.lock"
    ours, theirs = storage.WriteLock(path), storage.WriteLock(path)  # two open files: like two processes
    order: list[str] = []
    with ours:
        with ours:  # re-entrant in the holding thread
            t = threading.Thread(target=lambda: (theirs.__enter__(), order.append("theirs"), theirs.__exit__()))
            t.start()
            time.sleep(0.2)
            order.append("ours")
    t.join(5)
    assert order == ["ours", "theirs"]


# -- the delivery worker is woken only when a message is due now -------------------------------------


def test_ingest_wakes_the_worker_only_when_a_message_is_due(make_settings, catalog) -> None:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    waiting = make_settings(alerting={"group_wait": "5m"})
    engine = storage.make_engine(waiting.database_url)
    storage.upgrade(engine)
    assert ingest.ingest([_event()], engine=engine, settings=waiting, catalog=catalog, now=now).wake is False
    assert ingest.ingest([_event()], engine=engine, settings=waiting, catalog=catalog, now=now).wake is False
    ok = AuthErrorEvent(source="native", status=EventStatus.succeeded, integration_id="sf-prod")
    assert ingest.ingest([ok], engine=engine, settings=waiting, catalog=catalog, now=now).wake is True
    at_once = waiting.model_copy(update={"alerting": waiting.alerting.model_copy(update={"group_wait": timedelta(0)})})
    assert ingest.ingest([_event(integration_id="hs")], engine=engine, settings=at_once, catalog=catalog,
                         now=now).wake is True
    engine.dispose()


# -- the raw ASGI route --------------------------------------------------------------------------------


def _call(app, body_chunks: list[bytes], *, end_with_disconnect: bool = False,
          headers: list[tuple[bytes, bytes]] | None = None, path: str = "/v1/events") -> list[dict]:
    """Drive the ASGI app directly, as a server would: the body in chunks, then maybe a disconnect."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1 or end_with_disconnect}
                for i, c in enumerate(body_chunks)]
    if end_with_disconnect:
        messages.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers if headers is not None else [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return sent


def _stored_events(client) -> int:
    with session_scope(client.app.state.engine) as s:
        return len(s.exec(select(Event)).all())


def test_a_body_in_chunks_is_stored_once(client) -> None:
    body = json.dumps([SF, {**SF, "integration_id": "hs"}]).encode()
    sent = _call(client.app, [body[:10], body[10:30], body[30:]])
    assert sent[0]["status"] == 202
    assert json.loads(sent[1]["body"]) == {"accepted": 2, "duplicates": 0, "alert_ids": [1, 2]}
    assert _stored_events(client) == 2


def test_a_client_that_hangs_up_mid_body_stores_nothing_and_logs_no_error(client, caplog) -> None:
    body = json.dumps(SF).encode()
    with caplog.at_level(logging.INFO):
        assert _call(client.app, [body[:20]], end_with_disconnect=True) == []  # nobody to answer
        # the same on a route the full app serves: a quiet log line, not an "unhandled error"
        _call(client.app, [b'{"x":'], end_with_disconnect=True, path="/v1/webhooks/alertmanager")
    assert _stored_events(client) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_streamed_body_over_the_limit_gets_413_and_stores_nothing(make_settings, make_client) -> None:
    client = make_client(make_settings(server={"max_body_bytes": 2048}))
    chunk = b'[' + b" " * 1500
    sent = _call(client.app, [chunk, chunk, b"]"])  # no Content-Length: the limit is found while reading
    assert sent[0]["status"] == 413
    problem = json.loads(sent[1]["body"])
    assert problem["status"] == 413 and "2048" in problem["detail"]
    assert _stored_events(client) == 0


def test_refusals_are_the_full_apps_answers(client) -> None:
    """Bad bodies are handed to the route with the body replayed: the same problem+json as ever."""
    assert client.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"}).json()["status"] \
        == 400
    r = client.post("/v1/events", json={"provider": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["integration_id"]
    assert client.post("/v1/events", content=json.dumps(SF), headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/v1/events", json=SF).status_code == 202
    assert _stored_events(client) == 1
