"""The doorman of ``/v1/events`` and ``/v1/webhooks/…``: refusals, their counts and the 401 rate limit.

- :class:`Refusal` is raised by the routes for every refused request and becomes a problem+json
  response *without* an ``instance`` (the path may carry an Airbyte/Stitch token) and with the same
  body for every authentication failure, so "unknown source" and "bad signature" look alike (R1.8).
  Only ``timestamp_out_of_tolerance`` is named (R1.3).
- :class:`GuardMiddleware` counts every 4xx on those paths as
  ``alerts_webhook_refusals_total{source, reason}`` (413s from the body limit too), and rate-limits
  401s per client IP: after ``[webhooks] max_unauthorized_per_minute`` of them in a minute, every
  request from that IP to those paths gets 429 until the minute is over, before any body is read
  or any HMAC computed.
- ``alerts_webhook_secret_matches_total{source, index}`` records *which* configured secret matched
  (its index, never its value), so an operator can tell when an old secret is no longer used (R1.4).

Metric labels never carry request data: ``source`` is one of the known kinds (or ``unknown``) and
``reason`` a fixed word.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.web.problems import PROBLEM, TITLES, problem_bytes

log = logging.getLogger("alerts.webhooks")

KINDS = ("fivetran", "airbyte", "alertmanager", "pagerduty", "stitch")
UNAUTHORIZED = "missing or invalid credentials"
STATUS_REASONS = {
    400: "bad_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_payload",
    429: "rate_limited",
}


class Refusal(Exception):
    """A refused webhook/event request. ``reason`` is a fixed word for metrics; ``detail`` is for people."""

    def __init__(self, status: int, detail: str, *, reason: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = headers
        self.extra = extra

    @classmethod
    def unauthorized(cls, reason: str) -> Refusal:
        """The one 401 every authentication failure gets (R1.8), except a stale timestamp."""
        if reason == "timestamp_out_of_tolerance":
            return cls(401, "the request's timestamp is outside the accepted window", reason=reason,
                       code="timestamp_out_of_tolerance")
        return cls(401, UNAUTHORIZED, reason=reason)

    def body(self) -> dict[str, Any]:
        out = {"type": "about:blank", "title": TITLES.get(self.status, "Error"), "status": self.status,
               "detail": self.detail}
        out.update(self.extra)
        return out


def refusal_response(request: Request, exc: Refusal) -> JSONResponse:
    request.state.refusal_reason = exc.reason
    metrics = getattr(request.app.state, "metrics", None)
    refused = getattr(metrics, "refused", None)
    if refused is not None:  # the app-wide "requests refused" counter, when the app has one
        route = getattr(request.scope.get("route"), "path", None) or "(unmatched)"
        refused.labels(route, str(exc.status)).inc()
    return JSONResponse(exc.body(), status_code=exc.status, media_type=PROBLEM, headers=exc.headers)


class FailureLimiter:
    """Fixed one-minute windows of 401s per client address (bounded memory)."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: Callable[[], int], *, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, tuple[float, int]] = {}

    @property
    def empty(self) -> bool:
        """No client has failed lately (nobody can be blocked)."""
        return not self._hits

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until ``client`` may try again, or ``None`` when it is not blocked."""
        entry = self._hits.get(client)
        if entry is None:
            return None
        start, count = entry
        if now - start >= self.window or count < self.limit():
            return None
        return max(1, math.ceil(self.window - (now - start)))

    def record(self, client: str, now: float) -> None:
        entry = self._hits.get(client)
        if entry is None or now - entry[0] >= self.window:
            if len(self._hits) >= self.MAX_CLIENTS:
                self._prune(now)
            self._hits[client] = (now, 1)
        else:
            self._hits[client] = (entry[0], entry[1] + 1)

    def _prune(self, now: float) -> None:
        self._hits = {k: v for k, v in self._hits.items() if now - v[0] < self.window}
        if len(self._hits) >= self.MAX_CLIENTS:  # a flood of distinct addresses: forget the oldest half
            keep = sorted(self._hits.items(), key=lambda kv: kv[1][0])[len(self._hits) // 2:]
            self._hits = dict(keep)


class Guard:
    """Per-app refusal counters and the 401 limiter (one per :func:`~alerts.web.webhooks.install`)."""

    def __init__(self, *, clock: Callable[[], datetime], limit: Callable[[], int],
                 registry: CollectorRegistry | None = None) -> None:
        self.clock = clock
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.refusals = Counter(
            "alerts_webhook_refusals_total", "Event and webhook requests refused, by source and reason.",
            ["source", "reason"], registry=self.registry,
        )
        self.matches = Counter(
            "alerts_webhook_secret_matches_total",
            "Authenticated webhook requests by source and the index of the configured secret that matched.",
            ["source", "index"], registry=self.registry,
        )
        self.limiter = FailureLimiter(limit)
        self._warned: dict[str, float] = {}

    def now(self) -> float:
        return self.clock().timestamp()

    def refused(self, source: str, reason: str) -> None:
        self.refusals.labels(source, reason).inc()

    def matched(self, source: str, index: int) -> None:
        self.matches.labels(source, str(index)).inc()

    def refusal_count(self, source: str | None = None, reason: str | None = None) -> int:
        """How many refusals were counted (optionally for one source and/or reason)."""
        total = 0.0
        for metric in self.refusals.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                if source is not None and sample.labels.get("source") != source:
                    continue
                if reason is not None and sample.labels.get("reason") != reason:
                    continue
                total += sample.value
        return int(total)

    def warn_once_a_minute(self, key: str, message: str, **extra: Any) -> None:
        """Operator hints (an endpoint refused because it has no secrets) without flooding the log."""
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= 60:
            self._warned[key] = now
            log.warning(message, extra=extra)


def source_of(path: str) -> str | None:
    """``native`` for ``/v1/events``, the kind for ``/v1/webhooks/<kind>…`` (``unknown`` if not one), else ``None``."""
    if path == "/v1/events":
        return "native"
    if path.startswith("/v1/webhooks/"):
        kind = path.split("/", 4)[3]
        return kind if kind in KINDS else "unknown"
    return None


class GuardMiddleware:
    """Counts refusals on event/webhook paths and answers 429 to clients with too many 401s."""

    def __init__(self, app: ASGIApp, *, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        source = source_of(scope.get("path", ""))
        if source is None:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("-", 0))[0] or "-"
        now = self.guard.now()
        wait = self.guard.limiter.retry_after(client, now)
        if wait is not None:
            self.guard.refused(source, "rate_limited")
            body = problem_bytes(429, "too many unauthorized requests from this address; try again later")
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode()),
                                    (b"retry-after", str(wait).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        state = scope.setdefault("state", {})
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if 400 <= status < 500:
                reason = state.get("refusal_reason") if isinstance(state, dict) else None
                self.guard.refused(source, reason or STATUS_REASONS.get(status, str(status)))
                if status == 401:
                    self.guard.limiter.record(client, self.guard.now())
