"""``alerts serve`` as a real process: the README's demo, and kill -9 after a 202 loses nothing."""

from __future__ import annotations

import json
import sqlite3

from tests.peers.server import ServerProcess

SF = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant: expired access/refresh token"}


def db_rows(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_readme_demo_one_alert_one_notification(tmp_path) -> None:
    server = ServerProcess(cwd=tmp_path, env={"ALERTS_ALERTING__GROUP_WAIT": "0s"}).start()
    try:
        with server.client() as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            assert http.get("/readyz").status_code == 200
            for _ in range(50):
                assert http.post("/v1/events", json=SF).status_code == 202
            [alert] = http.get("/v1/alerts").json()["alerts"]
            assert (alert["count"], alert["state"]) == (50, "firing")
            outbox = tmp_path / "var" / "outbox"
            server.wait_for(lambda: len(list(outbox.glob("*.eml"))) == 1)
            assert sorted(p.suffix for p in outbox.iterdir()) == [".eml", ".json"]
            http.post("/v1/events", json={"integration_id": "sf-prod", "status": "succeeded"})
            server.wait_for(lambda: len(list(outbox.glob("*.eml"))) == 2)
            assert http.get(f"/v1/alerts/{alert['id']}").json()["state"] == "resolved"
            texts = [json.loads(p.read_text())["text"] for p in sorted(outbox.glob("*.json"))]
            assert texts[0].startswith("FIRING") and texts[1].startswith("RESOLVED")
    finally:
        server.stop()
    assert all(r.get("logger") != "alerts.web" or r.get("level") != "error" for r in server.log_records())


def test_kill_9_after_202_loses_no_event(tmp_path) -> None:
    server = ServerProcess(cwd=tmp_path).start()
    acked = 0
    with server.client() as http:
        for i in range(40):
            r = http.post("/v1/events", json={**SF, "integration_id": f"int-{i % 7}", "event_id": f"e{i}"})
            assert r.status_code == 202
            acked += 1
    server.kill9()
    db = tmp_path / "var" / "alerts.db"
    assert db_rows(db, "select count(*) from event")[0][0] == acked
    assert db_rows(db, "select count(*) from alert where state = 'firing'")[0][0] == 7
    assert db_rows(db, "pragma integrity_check")[0][0] == "ok"
    server = ServerProcess(cwd=tmp_path).start()  # and it comes back on the same database
    try:
        with server.client() as http:
            r = http.post("/v1/events", json={**SF, "integration_id": "int-0", "event_id": "e0"})
            assert r.json()["duplicates"] == 1
            assert sum(a["count"] for a in http.get("/v1/alerts").json()["alerts"]) == acked
    finally:
        server.stop()


def test_a_body_that_trickles_in_gets_408(tmp_path) -> None:
    """R3.1: the whole body must arrive within server.request_timeout (slowloris); the server stays up."""
    import socket
    import time

    import httpx

    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nrequest_timeout = "1s"\n[webhooks.fivetran]\nsecrets = ["%s"]\n' % ("s" * 32))
    server = ServerProcess(cwd=tmp_path, config=cfg).start()
    try:
        for path in ("/v1/events", "/v1/webhooks/fivetran"):  # the fast path; the full app (reads to verify)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: 100\r\n\r\n{\"integration_id\":".encode())
                start = time.monotonic()
                answer = sock.recv(4096).decode()
                waited = time.monotonic() - start
            assert answer.startswith("HTTP/1.1 408"), answer
            assert "application/problem+json" in answer and 0.5 < waited < 5
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/v1/alerts").json()["alerts"] == []  # nothing stored
    finally:
        server.stop()


def test_a_declared_length_over_the_cap_gets_413_before_any_read(tmp_path) -> None:
    """R3.1: /v1/events (the fast path) answers 413 from the Content-Length alone, without the body."""
    import socket

    server = ServerProcess(cwd=tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 52428800\r\n\r\n")  # 50 MB declared, not a byte sent
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 413"), answer
        assert "application/problem+json" in answer
    finally:
        server.stop()
