"""A local HTTP server that speaks the part of Slack's Web API (and incoming webhooks) we use.

Real HTTP on 127.0.0.1, port 0; slack-sdk is pointed at it through ``[slack] base_url``. It records
every request (raw bytes included) and keeps the messages it was asked to post, so tests assert on
what arrived. Scripted answers (429 with ``Retry-After``, ``ok:false`` errors, 5xx, redirects, a
dropped connection, or "apply the call, then fail") are queued per API method with :meth:`script`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-0000000000-test-token"
WEBHOOK_PATH = "/services/T0000/B0000/webhooksecret0000"


@dataclass
class Recorded:
    method: str
    path: str
    api: str | None  # "chat.postMessage" for /api/chat.postMessage; "webhook" for the webhook URL
    headers: dict[str, str]
    body: bytes
    params: dict[str, Any]


@dataclass
class Canned:
    """One scripted answer. ``apply=True`` performs the call first (the message *is* posted)."""

    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    apply: bool = False
    drop: bool = False  # close the connection without an answer
    delay: float = 0.0  # seconds before the call is performed and answered (a slow Slack)
    content_type: str = "application/json; charset=utf-8"


class SlackPeer:
    def __init__(self, *, clock: Callable[[], datetime] | None = None, token: str = TOKEN) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.token = token
        self.requests: list[Recorded] = []
        self.messages: list[dict[str, Any]] = []
        self.unknown_channels: set[str] = set()
        self.channels: set[str] = {"data-alerts", "alerts-test"}  # names conversations.list knows
        self._scripts: dict[str, deque[Canned]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> SlackPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                peer._handle(self)

            def do_POST(self) -> None:
                peer._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def script(self, api: str, *answers: Canned) -> None:
        with self._lock:
            self._scripts.setdefault(api, deque()).extend(answers)

    def unscript(self, api: str) -> None:
        """Forget the answers still scripted for ``api``: it answers normally again."""
        with self._lock:
            self._scripts.pop(api, None)

    def calls(self, api: str) -> list[Recorded]:
        return [r for r in self.requests if r.api == api]

    def channel_id(self, name: str) -> str:
        name = name.lstrip("#")
        if name[:1] in "CGD" and name.isupper():
            return name
        return "C" + hashlib.sha1(name.encode()).hexdigest()[:8].upper()

    def top_level(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if not m.get("thread_ts")]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("thread_ts") == ts]

    # -- the protocol -----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        url = urlsplit(h.path)
        params: dict[str, Any] = dict(parse_qsl(url.query))
        ctype = h.headers.get("Content-Type", "")
        if body:
            if "json" in ctype:
                try:
                    params.update(json.loads(body))
                except ValueError:
                    pass
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace")))
        if url.path == WEBHOOK_PATH:
            api: str | None = "webhook"
        elif url.path.startswith("/api/"):
            api = url.path[5:]
        else:
            api = None
        rec = Recorded(h.command, h.path, api, dict(h.headers.items()), body, params)
        with self._lock:
            self.requests.append(rec)
            queue = self._scripts.get(api or "")
            canned = queue.popleft() if queue else None
        if canned is not None and canned.delay:
            import time

            time.sleep(canned.delay)
        if canned is not None and canned.drop:
            if canned.apply:
                self._apply(rec)
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        if canned is not None and not canned.apply:
            self._send(h, canned.status, canned.body, canned.headers, canned.content_type)
            return
        status, answer, ctype_out = self._apply(rec)
        if canned is not None:
            self._send(h, canned.status, canned.body if canned.body is not None else answer, canned.headers,
                       canned.content_type)
            return
        self._send(h, status, answer, {}, ctype_out)

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str], ctype: str) -> None:
        if isinstance(body, dict | list):
            raw = json.dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body or b""
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if 100 <= status < 200 or status in (204, 304):
            raw = b""
        else:
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        if raw:
            h.wfile.write(raw)
        h.wfile.flush()

    def _next_ts(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{int(self.clock().timestamp())}.{self._seq:06d}"

    def _apply(self, rec: Recorded) -> tuple[int, Any, str]:
        json_ct = "application/json; charset=utf-8"
        p = rec.params
        if rec.api == "webhook":
            msg = {"channel": "webhook", "ts": self._next_ts(), "text": p.get("text"), "blocks": p.get("blocks"),
                   "thread_ts": None, "raw": rec.body}
            self.messages.append(msg)
            return 200, "ok", "text/html"
        if rec.api is None:
            return 404, {"ok": False, "error": "unknown_method"}, json_ct
        if rec.headers.get("Authorization") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, json_ct
        if rec.api == "chat.postMessage":
            channel = str(p.get("channel", ""))
            if not channel or channel.lstrip("#") in self.unknown_channels:
                return 200, {"ok": False, "error": "channel_not_found"}, json_ct
            cid = self.channel_id(channel)
            if channel.startswith("#"):
                self.channels.add(channel[1:])
            ts = self._next_ts()
            msg = {"channel": cid, "ts": ts, "text": p.get("text"), "blocks": p.get("blocks"),
                   "thread_ts": p.get("thread_ts"), "metadata": p.get("metadata"),
                   "reply_broadcast": p.get("reply_broadcast"), "raw": rec.body, "edits": []}
            self.messages.append(msg)
            return 200, {"ok": True, "channel": cid, "ts": ts,
                         "message": {"type": "message", "text": p.get("text"), "ts": ts}}, json_ct
        if rec.api == "chat.update":
            for m in self.messages:
                if m["channel"] == p.get("channel") and m["ts"] == p.get("ts"):
                    m["edits"].append({"text": m["text"], "blocks": m["blocks"]})
                    m["text"], m["blocks"], m["raw_update"] = p.get("text"), p.get("blocks"), rec.body
                    return 200, {"ok": True, "channel": m["channel"], "ts": m["ts"], "text": m["text"]}, json_ct
            return 200, {"ok": False, "error": "message_not_found"}, json_ct
        if rec.api in ("conversations.history", "conversations.replies"):
            cid = str(p.get("channel", ""))
            if not (cid[:1] in "CGD" and cid.isupper()):
                return 200, {"ok": False, "error": "channel_not_found"}, json_ct
            with_meta = str(p.get("include_all_metadata", "")).lower() in ("1", "true")
            if rec.api == "conversations.history":
                oldest = float(p.get("oldest") or 0)
                found = [m for m in self.messages if m["channel"] == cid and not m.get("thread_ts")
                         and float(m["ts"]) > oldest]
                found.reverse()  # newest first, as Slack answers
            else:
                root = str(p.get("ts", ""))
                found = [m for m in self.messages if m["channel"] == cid and (m["ts"] == root or m.get("thread_ts") == root)]
            out = []
            for m in found:
                item = {"type": "message", "ts": m["ts"], "text": m["text"]}
                if m.get("thread_ts"):
                    item["thread_ts"] = m["thread_ts"]
                if with_meta and m.get("metadata"):
                    item["metadata"] = m["metadata"]
                out.append(item)
            return 200, {"ok": True, "messages": out, "has_more": False}, json_ct
        if rec.api == "conversations.list":
            chans = [{"id": self.channel_id(n), "name": n, "is_channel": True} for n in sorted(self.channels)]
            return 200, {"ok": True, "channels": chans, "response_metadata": {"next_cursor": ""}}, json_ct
        if rec.api == "auth.test":
            return 200, {"ok": True, "team_id": "T0000", "user_id": "U0000", "bot_id": "B0000"}, json_ct
        return 200, {"ok": False, "error": "unknown_method"}, json_ct
