"""A local Stitch Connect API (v4) speaking the documented shapes, on 127.0.0.1 and a port the OS picks.

- ``GET /v4/{client_id}/extractions[?page=N]`` — the last extraction of each source, sorted by
  ``source_id`` descending, ``page_size`` a page, ``links.next`` while there are more;
- ``GET /v4/sources`` — the source objects;
- ``GET /v4/{client_id}/extractions/{job_name}`` — ``302 Found`` with a ``Location`` on the fake S3
  (``/s3/...``), which serves the log without asking for (and records any) ``Authorization``;
- ``401`` when the bearer token is not ``token``; queued faults (``fail_next(429, retry_after=…)``,
  ``fail_next(500)``) answer the next matching requests.

Every request is recorded (method, path, whether it carried our token) for the tests' assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

CLIENT_ID = 116078
TOKEN = "ac_test_connect_token_0123456789abcdef"


def ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def extraction(
    source_id: int,
    job: str,
    *,
    completed: datetime | None,
    started: datetime | None = None,
    tap_exit: int | None = 0,
    tap_description: str | None = None,
    discovery_exit: int | None = 0,
    discovery_description: str | None = None,
    target_exit: int | None = 0,
    target_description: str | None = None,
    source_type: str = "tap-hubspot",
    client_id: int = CLIENT_ID,
) -> dict[str, Any]:
    """An extraction object as ``GET /v4/{client_id}/extractions`` returns it."""
    return {
        "target_exit_status": target_exit,
        "job_name": f"{client_id}.{source_id}.sync.{job}",
        "start_time": ts(started or completed) if (started or completed) else None,
        "stitch_client_id": client_id,
        "tap_exit_status": tap_exit,
        "source_type": source_type,
        "target_description": target_description,
        "discovery_exit_status": discovery_exit,
        "discovery_description": discovery_description,
        "tap_description": tap_description,
        "completion_time": ts(completed) if completed else None,
        "source_id": source_id,
    }


def source(source_id: int, name: str, display_name: str, type_: str, *, oauth: bool = True,
           client_id: int = CLIENT_ID) -> dict[str, Any]:
    """A source object as ``GET /v4/sources`` returns it (report card trimmed to its step types)."""
    steps = [{"type": "form", "properties": []}]
    if oauth:
        steps.append({"type": "oauth", "properties": []})
    steps += [{"type": "discover_schema", "properties": []}, {"type": "field_selection", "properties": []},
              {"type": "fully_configured", "properties": []}]
    return {
        "properties": {"frequency_in_minutes": "30", "image_version": "1.latest"},
        "updated_at": "2026-11-01T10:00:00Z",
        "schedule": None,
        "name": name,
        "type": type_,
        "deleted_at": None,
        "system_paused_at": None,
        "stitch_client_id": client_id,
        "paused_at": None,
        "id": source_id,
        "display_name": display_name,
        "created_at": "2026-01-07T23:20:22Z",
        "report_card": {"type": type_, "current_step": len(steps), "current_step_type": "fully_configured",
                        "steps": steps},
    }


@dataclass
class Fault:
    status: int
    path_prefix: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class Request:
    method: str
    path: str
    authorized: bool  # carried "Bearer <token>"
    authorization: str | None


class StitchState:
    def __init__(self, client_id: int = CLIENT_ID, token: str = TOKEN) -> None:
        self.client_id = client_id
        self.token = token
        self.extractions: dict[int, dict[str, Any]] = {}  # source_id -> its last extraction
        self.sources: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}
        self.log_origin: str | None = None  # where the redirect to a log points (default: this server)
        self.page_size = 100
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def set_extraction(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.extractions[int(item["source_id"])] = item

    def fail_next(self, status: int, *, path_prefix: str = "/", retry_after: str | int | None = None,
                  times: int = 1) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self.lock:
            self.faults.append(Fault(status, path_prefix, headers, times))

    def calls(self, prefix: str = "/") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        parts = urlsplit(self.path)
        auth = self.headers.get("Authorization")
        with state.lock:
            state.requests.append(Request("GET", parts.path, auth == f"Bearer {state.token}", auth))
            fault = next((f for f in state.faults if parts.path.startswith(f.path_prefix)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    state.faults.remove(fault)
        if fault is not None:
            self._send(fault.status, {"error": {"type": "fault", "message": f"injected {fault.status}"}},
                       fault.headers)
            return
        if parts.path.startswith("/s3/"):  # the pre-signed log URL: no bearer token wanted
            job = unquote(parts.path[len("/s3/"):])
            log = state.logs.get(job)
            if log is None:
                self._send(404, "<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
            else:
                self._send(200, log, content_type="binary/octet-stream")
            return
        if auth != f"Bearer {state.token}":
            self._send(401, {"error": {"type": "not_authorized", "message": "Not authorized"}})
            return
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        if segments == ["v4", "sources"]:
            with state.lock:
                self._send(200, list(state.sources))
            return
        if len(segments) >= 3 and segments[0] == "v4" and segments[2] == "extractions":
            if segments[1] != str(state.client_id):
                self._send(401, {"error": {"type": "not_authorized", "message": "Not authorized"}})
                return
            if len(segments) == 3:
                self._list_extractions(parts.query)
                return
            if len(segments) == 4:
                job = segments[3]
                with state.lock:
                    known = any(e["job_name"] == job for e in state.extractions.values()) or job in state.logs
                if not known:
                    self._send(404, {"error": {"type": "not_found", "message": "extraction job not found"}})
                    return
                origin = state.log_origin or f"http://{self.headers.get('Host', '127.0.0.1')}"
                location = f"{origin}/s3/{quote(job, safe='')}?x-amz-security-token=s3-temporary-credential"
                self._send(302, None, {"Location": location})
                return
        self._send(404, {"error": {"type": "not_found", "message": "not found"}})

    def _list_extractions(self, query: str) -> None:
        state = self.server.state
        page = int(parse_qs(query).get("page", ["1"])[0])
        with state.lock:
            items = [state.extractions[k] for k in sorted(state.extractions, reverse=True)]
            size = state.page_size
        chunk = items[(page - 1) * size: page * size]
        links: dict[str, str] = {}
        if page * size < len(items):
            links["next"] = f"/v4/{state.client_id}/extractions?page={page + 1}"
        if page > 1:
            links["previous"] = f"/v4/{state.client_id}/extractions?page={page - 1}"
        self._send(200, {"data": chunk, "page": page, "total": len(items), "links": links})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: StitchState


@contextmanager
def stitch_server(state: StitchState | None = None) -> Iterator[tuple[str, StitchState]]:
    """``with stitch_server() as (base_url, state): ...`` — a Connect API on a free port."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state or StitchState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
