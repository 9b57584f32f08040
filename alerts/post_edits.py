"""In-place edits of posted Slack messages after an acknowledgement or a silence (``action`` outbox rows).

A click on a message's button, or an acknowledgement made elsewhere (the dashboard, the API, the CLI, a
PagerDuty webhook), owes an edit of the alert's posts that carry our buttons, so that none offers an
Acknowledge that was done and each says who is on it. Used by the Slack actions route, the other
entry points and the worker (a post that went out while it was being acknowledged)."""

from __future__ import annotations

import hashlib
import html
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from alerts import outbox, silences
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.models import AlertState, DeliveryStatus, Kind, as_utc
from alerts.render import Renderer, alert_data, one_line
from alerts.routing import Target
from alerts.storage import Alert, Notification, Silence

log = logging.getLogger("alerts.slack_actions")

SILENCE_FOR = timedelta(hours=24)
# action_id -> what it does (None: a link button; Slack reports the click, we only answer it)
ACTIONS: dict[str, str | None] = {"alerts_ack": "ack", "alerts_silence_24h": "silence", "reauthorize": None}
# Message kinds that carry the buttons, i.e. the messages a click can come from.
UPDATABLE = (Kind.firing.value, Kind.reminder.value, Kind.updated.value)


def owe_updates(s: Session, alert: Alert, *, message_ref: str | None, key: str, settings: Settings,
                catalog: Catalog, renderer: Renderer, now: datetime, clicked: bool = True) -> int:
    """Outbox rows updating, in place, the clicked message (``message_ref``) and the alert's first message in
    its channel; or, for an acknowledgement made elsewhere (``clicked=False``: the dashboard, the API, the
    CLI), every message of the alert that carries our buttons — so none offers an Acknowledge that was done."""
    if clicked and message_ref is None:
        return 0
    entry = catalog.get(alert.code)
    if entry is None:
        log.warning("slack action: unknown catalog code, message not updated",
                    extra={"alert_id": alert.id, "integration_id": alert.integration_id})
        return 0
    channel = (message_ref or "").partition(":")[0]
    sent = s.exec(select(Notification).where(
        Notification.alert_id == alert.id, Notification.channel == "slack",
        Notification.status == DeliveryStatus.sent.value, Notification.kind.in_(UPDATABLE),
    ).order_by(Notification.id)).all()
    targets: dict[str, Notification] = {}
    for n in sent:
        ref = n.external_ref or ""
        if not _has_buttons(n.payload):
            continue  # a message without our buttons (a grouped one, a custom template) is left as it was
        if not clicked or ref == message_ref or (n.kind == Kind.firing.value and ref.startswith(channel + ":")):
            targets.setdefault(ref, n)
    if not targets:
        return 0
    _cancel_older(s, alert.id, set(targets))  # type: ignore[arg-type]
    notes = action_notes(alert, silences.active(s, now=now), now=now)
    rows = []
    for ref, n in targets.items():
        reg = settings.integration(alert.integration_id)
        data = alert_data(kind=n.kind, alert=alert, entry=entry, dashboard_url=settings.server.base_url(), now=now,
                          owner=reg.owner if reg else None, usual_auth=catalog.default_auth.get(alert.provider or ""))
        data["slack_notes"] = [f"{icon} {text}" for icon, text in notes]
        payload = _payload(renderer.slack("slack/alert.json.j2", data), [t for _, t in notes], data)
        rows.append(outbox.notification_row(
            alert_id=alert.id, kind=Kind.action, seq=f"{key}:{n.id}",
            target=Target(n.receiver, "slack", {**dict(n.target or {}), "update_ref": ref}),
            due=now, now=now, payload=payload))
    return len(outbox.insert_rows(s, rows))


def owe_updates_elsewhere(s: Session, alert: Alert, *, how: str, by: str, settings: Settings, catalog: Catalog,
                          renderer: Renderer, now: datetime) -> int:
    """:func:`owe_updates` for an acknowledgement or silence made outside Slack (``how``: "ack", "silence")."""
    key = f"{how}:{hashlib.sha256(f'{alert.id}|{how}|{by}|{now.isoformat()}'.encode()).hexdigest()[:32]}"
    return owe_updates(s, alert, message_ref=None, clicked=False, key=key, settings=settings, catalog=catalog,
                       renderer=renderer, now=now)


def _has_buttons(payload: dict[str, Any] | None) -> bool:
    """Whether a stored message carried an Acknowledge or Silence button."""
    return has_buttons((payload or {}).get("slack"))


def _cancel_older(s: Session, alert_id: int, refs: set[str]) -> None:
    """Updates of the same messages not yet sent are superseded by the newer ones (rendered later)."""
    pending = s.exec(select(Notification).where(
        Notification.alert_id == alert_id, Notification.kind == Kind.action.value,
        Notification.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value]),
        Notification.lease_until.is_(None),
    )).all()
    for n in pending:
        if (n.target or {}).get("update_ref") in refs:
            n.status = DeliveryStatus.cancelled
            n.last_error = "superseded by a newer update"
            s.add(n)


def action_notes(alert: Alert, active: list[Silence], *, now: datetime) -> list[tuple[str, str]]:
    """(emoji, sentence) lines saying who is on it: "Acknowledged by @alice", "Silenced for 24 h by @bob"."""
    out: list[tuple[str, str]] = []
    if alert.state == AlertState.acknowledged:
        out.append((":white_check_mark:", f"Acknowledged by {alert.acknowledged_by or 'someone'}"))
    for sil in [x for x in active if silences.matches(x, alert)][:2]:
        who = sil.author or "someone"
        if as_utc(sil.ends_at) - as_utc(sil.starts_at) == SILENCE_FOR:
            out.append((":no_bell:", f"Silenced for 24 h by {who}"))
        else:
            out.append((":no_bell:", f"Silenced until {as_utc(sil.ends_at):%Y-%m-%d %H:%M} UTC by {who}"))
    return out


def _payload(slack: dict[str, Any], notes: list[str], data: dict[str, Any]) -> dict[str, Any]:
    """A stored outbox payload: the Slack update, and an email form for the dead-letter fallback."""
    what = "; ".join(notes) or "Updated"
    name = data["alert"]["display_name"]
    return {
        "kind": Kind.action.value,
        "slack": slack,
        "subject": one_line(f"{what}: {name}"),
        "text": f"{what}: {name}\n{data['alert_url']}\n",
        "html": f"<p>{html.escape(what)}: {html.escape(name)}<br>"
                f"<a href=\"{html.escape(data['alert_url'])}\">{html.escape(data['alert_url'])}</a></p>",
    }


def has_buttons(slack: dict[str, Any] | None) -> bool:
    """Whether a rendered Slack message carries an Acknowledge or Silence button."""
    return bool(offered(slack))


def offered(slack: dict[str, Any] | None) -> set[str]:
    """What a rendered Slack message's buttons do: "ack", "silence"."""
    blocks = (slack or {}).get("blocks") or []
    return {ACTIONS[str(e.get("action_id"))] or "" for b in blocks if isinstance(b, dict) and b.get("type") == "actions"
            for e in b.get("elements") or [] if isinstance(e, dict) and ACTIONS.get(str(e.get("action_id")))}
