"""The dashboard at ``/``: what is broken now, with the fix and the link; what was fixed; what was sent.

Server-rendered Jinja2 (autoescaped), a little hand-written CSS, a few lines of plain JS to refresh.
When ``server.api_tokens`` is set, people log in with a token, kept in a signed, HttpOnly,
SameSite=Strict cookie; every POST carries a CSRF token derived from that cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import select

from alerts import ingest, stats
from alerts.durations import humanize
from alerts.models import AlertState, Severity, as_utc
from alerts.post_edits import owe_updates_elsewhere
from alerts.render import ACTION_LABEL
from alerts.silences import glob_escape
from alerts.storage import Alert, Notification, get_row, session_scope
from alerts.web.api import alert_public, notification_public, require_content_type, token_matches
from alerts.web.problems import Problem
from alerts.web.silences import SilenceCreate, create_silence

router = APIRouter(include_in_schema=False)

COOKIE = "alerts_session"
SESSION_TTL = 12 * 3600


def _key(request: Request) -> bytes:
    settings = request.app.state.settings
    if settings.server.session_secret is not None:
        material = settings.server.session_secret.get_secret_value()
    else:  # shared by every replica of one deployment, rotated when the tokens change
        material = settings.database_url + "|" + "|".join(t.get_secret_value() for t in settings.server.api_tokens)
    return hashlib.sha256(("alerts-session|" + material).encode()).digest()


def _sign(key: bytes, data: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, data.encode(), hashlib.sha256).digest()).decode().rstrip("=")


def _make_session(request: Request, subject: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(
        {"sub": subject, "exp": int(time.time()) + SESSION_TTL, "n": secrets.token_hex(8)}).encode()).decode()
    return payload + "." + _sign(_key(request), payload)


def _session(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(COOKIE, "")
    payload, _, sig = raw.partition(".")
    if not payload or not hmac.compare_digest(sig.encode(), _sign(_key(request), payload).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("exp", 0)) < time.time():
        return None
    return data


def _csrf(request: Request, cookie: str) -> str:
    return _sign(_key(request), "csrf|" + cookie)[:32]


def _needs_login(request: Request) -> bool:
    return bool(request.app.state.settings.server.api_tokens)


def _page(request: Request, template: str, data: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    cookie = request.cookies.get(COOKIE)
    new_cookie = None
    if not cookie or _session(request) is None:
        if _needs_login(request) and template != "dashboard/login.html":
            raise _login_redirect()
        new_cookie = cookie = _make_session(request, "anonymous")
    data = {**data, "csrf": _csrf(request, cookie), "login_required": _needs_login(request),
            "on_login_page": template == "dashboard/login.html"}
    html = request.app.state.renderer.html(template, data)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if new_cookie and template != "dashboard/login.html":
        _set_cookie(response, request, new_cookie)
    return response


def _set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=SESSION_TTL, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def _login_redirect() -> Problem:
    return Problem(303, "log in first", headers={"Location": "/login"})


def _check_post(request: Request, csrf: str) -> None:
    session = _session(request)
    cookie = request.cookies.get(COOKIE, "")
    if session is None or (_needs_login(request) and session.get("sub") == "anonymous"):
        raise Problem(401, "log in first")
    if not hmac.compare_digest(csrf.encode(), _csrf(request, cookie).encode()):
        raise Problem(403, "invalid CSRF token; reload the page and try again")


# -- data ---------------------------------------------------------------------------------------


def _view(alert: Alert, catalog: Any, now: datetime) -> dict[str, Any]:
    data = alert_public(alert, catalog)
    data["since"] = humanize(now - as_utc(alert.first_seen))
    data["last_seen_ago"] = humanize(now - as_utc(alert.last_seen))
    if alert.resolved_at:
        data["time_to_fix"] = humanize(as_utc(alert.resolved_at) - as_utc(alert.first_seen))
        data["resolved_ago"] = humanize(now - as_utc(alert.resolved_at))
    for key in ("first_seen", "last_seen", "acknowledged_at", "resolved_at"):
        value = getattr(alert, key)
        data[f"{key}_text"] = as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else None
    data["authorized_by"] = alert.authorized_by
    data["display_name"] = alert.integration_name or alert.integration_id
    data["action_label"] = ACTION_LABEL.get(data["remediation"]["action"], "Fix it") if data["remediation"] else "Fix it"
    return data


def time_to_fix_rows(engine: Any, now: datetime) -> list[dict[str, Any]]:
    """Median and p90 time to fix per provider and per code over 30 days, humanized for the page."""
    data = stats.time_to_fix(engine, now=now)["time_to_fix"]
    rows = []
    for kind in ("by_provider", "by_code"):
        for name, v in data[kind].items():
            if v["count"]:
                rows.append({"kind": "provider" if kind == "by_provider" else "code", "name": name,
                             "count": v["count"], "median": humanize(timedelta(seconds=v["median_seconds"])),
                             "p90": humanize(timedelta(seconds=v["p90_seconds"]))})
    return rows


def dashboard_data(engine: Any, catalog: Any, now: datetime) -> dict[str, Any]:
    with session_scope(engine) as s:
        open_alerts = list(s.exec(select(Alert).where(Alert.state != AlertState.resolved.value)).all())
        resolved = list(s.exec(select(Alert).where(
            Alert.state == AlertState.resolved.value, Alert.resolved_at >= now - timedelta(days=7)
        ).order_by(sa.desc(Alert.resolved_at)).limit(50)).all())
        recent = list(s.exec(select(Notification).order_by(sa.desc(Notification.id)).limit(50)).all())
        problems = list(s.exec(select(Notification).where(Notification.status.in_(["failed", "dead"]))
                               .order_by(sa.desc(Notification.id)).limit(50)).all())
        names = {a.id: (a.integration_name or a.integration_id) for a in open_alerts + resolved}
        missing = {n.alert_id for n in recent + problems if n.alert_id and n.alert_id not in names}
        if missing:
            for a in s.exec(select(Alert).where(Alert.id.in_(missing))).all():
                names[a.id] = a.integration_name or a.integration_id

    def rank(a: Alert) -> tuple:
        return (-Severity(a.severity).rank, as_utc(a.first_seen))

    needs_action = sorted((a for a in open_alerts if a.state == AlertState.firing and not a.silenced), key=rank)
    quiet = sorted((a for a in open_alerts if a.state != AlertState.firing or a.silenced), key=rank)

    def note(n: Notification) -> dict[str, Any]:
        d = notification_public(n)
        d["integration"] = names.get(n.alert_id, "digest" if n.alert_id is None else f"alert {n.alert_id}")
        d["alert_id"] = n.alert_id
        d["when"] = humanize(now - as_utc(n.sent_at or n.created_at)) + " ago"
        return d

    return {
        "now": now,
        "time_to_fix": time_to_fix_rows(engine, now),
        "needs_action": [_view(a, catalog, now) for a in needs_action],
        "quiet": [_view(a, catalog, now) for a in quiet],
        "resolved": [_view(a, catalog, now) for a in resolved],
        "deliveries": [note(n) for n in recent],
        "delivery_problems": [note(n) for n in problems],
        "counts": {
            "needs_action": len(needs_action),
            "quiet": len(quiet),
            "resolved": len(resolved),
            "dead": sum(1 for n in problems if n.status == "dead"),
        },
    }


# -- routes -------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    state = request.app.state
    data = await run_in_threadpool(dashboard_data, state.engine, state.catalog, state.clock())
    return _page(request, "dashboard/index.html", data)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_page(alert_id: int, request: Request) -> HTMLResponse:
    state = request.app.state

    def load() -> tuple[Alert | None, list[Notification]]:
        with session_scope(state.engine) as s:
            alert = get_row(s, Alert, alert_id)
            notes = list(s.exec(select(Notification).where(Notification.alert_id == alert_id)
                                .order_by(Notification.id)).all()) if alert is not None else []
        return alert, notes

    alert, notes = await run_in_threadpool(load)
    if alert is None:
        raise Problem(404, f"no alert {alert_id}")
    now = state.clock()
    view = _view(alert, state.catalog, now)
    reg = state.settings.integration(alert.integration_id)
    view["owner"] = reg.owner if reg else None
    notifications = [{**notification_public(n), "sent_text": as_utc(n.sent_at).strftime("%Y-%m-%d %H:%M:%S UTC")
                      if n.sent_at else None} for n in notes]
    return _page(request, "dashboard/alert.html", {"a": view, "notifications": notifications, "now": now})


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "dashboard/login.html", {"error": None})


async def form_fields(request: Request) -> dict[str, str]:
    """A small ``application/x-www-form-urlencoded`` body (no multipart: nothing here uploads files)."""
    require_content_type(request, "application/x-www-form-urlencoded")
    body = await request.body()
    try:
        parsed = parse_qs(body.decode("utf-8", errors="strict"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "malformed form body") from None
    return {k: v[0] for k, v in parsed.items()}


@router.post("/login")
async def login(request: Request) -> Response:
    token = (await form_fields(request)).get("token", "")[:1000]
    tokens = request.app.state.settings.server.api_tokens
    ok = token_matches(token, tokens)
    if tokens and not ok:
        return _page(request, "dashboard/login.html", {"error": "That token is not valid."}, status=401)
    subject = hashlib.sha256(token.encode()).hexdigest()[:16] if tokens else "anonymous"
    response = RedirectResponse("/", status_code=303)
    _set_cookie(response, request, _make_session(request, subject))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    _check_post(request, (await form_fields(request)).get("csrf", ""))
    response = RedirectResponse("/login" if _needs_login(request) else "/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/ui/alerts/{alert_id}/{action}")
async def act(alert_id: int, action: str, request: Request) -> Response:
    _check_post(request, (await form_fields(request)).get("csrf", ""))
    return await run_in_threadpool(_act, alert_id, action, request)


def _act(alert_id: int, action: str, request: Request) -> Response:
    state = request.app.state
    now = state.clock()
    who = "dashboard"
    with session_scope(state.engine) as s:
        alert = get_row(s, Alert, alert_id)
        if alert is None:
            raise Problem(404, f"no alert {alert_id}")
        if action == "ack":
            if ingest.acknowledge_alert(s, alert, now=now, by=who):
                s.flush()
                owe_updates_elsewhere(s, alert, how="ack", by=who, settings=state.settings, catalog=state.catalog,
                                      renderer=state.renderer, now=now)
        elif action == "resolve":
            ingest.resolve_alert(s, alert, now=now, by=who, settings=state.settings, catalog=state.catalog)
        elif action == "silence":
            integration = glob_escape(alert.integration_id)  # this one integration, even if its id is "*"
        else:
            raise Problem(404, f"unknown action {action!r}")
    if action == "silence":
        create_silence(state.engine, body=SilenceCreate(integration=integration, duration="24h", author=who,
                                                         comment=f"silenced from the dashboard (alert {alert_id})"),
                       now=now, settings=state.settings, catalog=state.catalog)
        with session_scope(state.engine) as s:  # its Slack messages say so, and lose their buttons
            alert = get_row(s, Alert, alert_id)
            if alert is not None and alert.silenced:
                owe_updates_elsewhere(s, alert, how="silence", by=who, settings=state.settings,
                                      catalog=state.catalog, renderer=state.renderer, now=now)
    state.worker.wake.set()
    back = request.headers.get("referer", "")
    target = f"/alerts/{alert_id}" if back.endswith(f"/alerts/{alert_id}") else "/"
    return RedirectResponse(target, status_code=303)
