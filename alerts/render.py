"""Render messages from Jinja2 templates: one data model, three environments.

* Slack (Block Kit JSON): ``finalize`` escapes ``&``, ``<``, ``>`` in every interpolated value and
  JSON-escapes it, so templates write ``"text": "{{ value }}"`` and event text can never become
  ``<!channel>``, a mention or a link (R3.4). Only :func:`slack_link` builds ``<url|label>``.
* Email HTML: ``autoescape=True`` and ``StrictUndefined`` (R3.5).
* Email text and subject: not escaped, but every value was sanitised at ingest; the subject is
  collapsed to one line of at most 200 characters.

Templates load from the user's ``[templates] dir`` first, then the built-in ``templates/``.
Event data is only ever a template *value*, never compiled as a template.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from alerts.durations import humanize
from alerts.models import CatalogEntry, Kind, as_utc
from alerts.redact import sanitize

BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"

SLACK_SECTION_MAX = 3000
SLACK_TEXT_MAX = 40000
SUBJECT_MAX = 200
ERROR_MAX = 2000  # raw characters of error text shown; escaping can only grow it, so stay well under 3000


class SlackSafe(str):
    """Text our own code built for Slack (links); finalize JSON-escapes it but does not entity-escape it."""


def _slack_entities(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Slack's mrkdwn has no escape for its formatting characters: text from an event could close our
# `code` span or open a *bold* line of its own ("*What to do* sign in at …"). They are shown as
# look-alikes that format nothing (an underscore, inside words in ids and codes, is left alone).
_SLACK_FORMATTING = str.maketrans({"*": "\u2217", "`": "\u02cb", "~": "\u223c"})


def slack_escape(value: str) -> str:
    """Untrusted text for mrkdwn: entities escaped (no ``<!channel>``, mentions or links), formatting inert."""
    return _slack_entities(value).translate(_SLACK_FORMATTING)


def _slack_finalize(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SlackSafe):
        text = str(value)
    else:
        text = slack_escape(str(value))
    return json.dumps(text, ensure_ascii=False)[1:-1]


def slack_link(url: str | None, label: str) -> SlackSafe:
    """``<url|label>`` for a URL our code chose; the label is escaped, the URL percent-encoded."""
    if not url:
        return SlackSafe(slack_escape(label))
    safe_url = quote(url, safe=":/?#[]@!$&'()*+,;=%-._~")
    safe_url = safe_url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return SlackSafe(f"<{safe_url}|{slack_escape(label).replace('|', '¦')}>")


def slack_url(url: str | None) -> SlackSafe:
    """A URL field (button ``url``): our validated URL, percent-encoded, not entity-escaped."""
    if not url:
        return SlackSafe("")
    return SlackSafe(quote(url, safe=":/?#[]@!$&'()*+,;=%-._~"))


def _cut_escaped(text: str, limit: int) -> str:
    """Cut already-escaped Slack text to ``limit`` characters without leaving half an entity or link."""
    if len(text) <= limit:
        return text
    text = text[: max(0, limit - 1)]
    amp = text.rfind("&")
    if amp != -1 and ";" not in text[amp:]:
        text = text[:amp]  # never leave half an entity
    lt = text.rfind("<")
    if lt != -1 and ">" not in text[lt:]:
        text = text[:lt]  # never leave half a link
    return text + "…"


def slack_code(value: Any, limit: int = SLACK_SECTION_MAX - 400) -> SlackSafe:
    """Untrusted text as a Slack code block: escaped, clipped (after escaping) and unable to close the block."""
    text = _slack_entities("" if value is None else str(value)).replace("```", "`\u200b``")  # as written
    return SlackSafe("```" + _cut_escaped(text, limit) + "```") if text else SlackSafe("")


# Words that keep their capital at the start of a subject fragment (proper nouns we know of).
_KEEP_CAPITAL = {"I", "Google", "Microsoft", "Salesforce", "HubSpot", "Meta", "Facebook", "GitHub", "Slack",
                 "Shopify", "Stripe", "Zendesk", "Intercom", "Xero", "QuickBooks", "Snowflake", "PostgreSQL",
                 "MySQL", "Stitch", "Fivetran", "Airbyte", "Airflow", "Entra", "Azure"}


def fragment(value: Any) -> str:
    """A sentence as a clause: ``"The OAuth grant expired."`` -> ``"the OAuth grant expired"``.

    The first letter is lower-cased only when the first word is an ordinary capitalised word
    (``OAuth``, ``API``, ``Salesforce`` stay as they are); one trailing period is dropped.
    """
    text = ("" if value is None else str(value)).strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    word = re.split(r"[\s,;:(]", text, maxsplit=1)[0] if text else ""
    if word and word[0].isupper() and not any(c.isupper() for c in word[1:]) and word not in _KEEP_CAPITAL:
        text = text[0].lower() + text[1:]
    return text


def clip(value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def one_line(value: Any, limit: int = SUBJECT_MAX) -> str:
    text = sanitize("" if value is None else str(value), limit=10 * limit) or ""
    text = re.sub(r"\s+", " ", text).strip()
    return clip(text, limit)


def _clean(value: Any, limit: int) -> str:
    return sanitize("" if value is None else str(value), limit=limit) or ""


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def _loader(user_dir: str | None) -> jinja2.BaseLoader:
    loaders: list[jinja2.BaseLoader] = []
    if user_dir:
        loaders.append(jinja2.FileSystemLoader(user_dir))
    loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
    return jinja2.ChoiceLoader(loaders)


def _common(env: jinja2.Environment) -> jinja2.Environment:
    env.filters["clip"] = clip
    env.filters["one_line"] = one_line
    env.filters["time"] = _fmt_time
    env.filters["humanize"] = humanize
    env.filters["fragment"] = fragment
    return env


@dataclass
class Rendered:
    """Everything one notification needs on any channel."""

    kind: str
    slack: dict[str, Any]
    subject: str
    text: str
    html: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Renderer:
    """``interactive``: Slack alert messages carry the Acknowledge / Silence 24 h buttons (only when a
    signing secret lets ``POST /v1/slack/actions`` verify the clicks)."""

    def __init__(self, *, user_dir: str | None = None, interactive: bool = False) -> None:
        self.slack_env = _common(
            jinja2.Environment(
                loader=_loader(user_dir),
                autoescape=False,
                undefined=jinja2.StrictUndefined,
                finalize=_slack_finalize,
                trim_blocks=True,
                lstrip_blocks=True,
            )
        )
        self.slack_env.globals["link"] = slack_link
        self.slack_env.globals["url"] = slack_url
        self.slack_env.globals["interactive"] = interactive
        self.slack_env.filters["code"] = slack_code
        self.html_env = _common(
            jinja2.Environment(loader=_loader(user_dir), autoescape=True, undefined=jinja2.StrictUndefined)
        )
        self.text_env = _common(
            jinja2.Environment(
                loader=_loader(user_dir),
                autoescape=False,
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
            )
        )

    def slack(self, template: str, data: dict[str, Any]) -> dict[str, Any]:
        raw = self.slack_env.get_template(template).render(**data)
        payload: dict[str, Any] = json.loads(raw)
        return enforce_slack_limits(payload)

    def text(self, template: str, data: dict[str, Any]) -> str:
        return self.text_env.get_template(template).render(**data)

    def html(self, template: str, data: dict[str, Any]) -> str:
        return self.html_env.get_template(template).render(**data)

    def subject(self, template: str, data: dict[str, Any]) -> str:
        return one_line(self.text_env.get_template(template).render(**data), SUBJECT_MAX)

    def alert(self, data: dict[str, Any]) -> Rendered:
        return Rendered(
            kind=data["kind"],
            slack=self.slack("slack/alert.json.j2", data),
            subject=self.subject("email/alert.subject.j2", data),
            text=self.text("email/alert.txt.j2", data),
            html=self.html("email/alert.html.j2", data),
        )

    def summary(self, data: dict[str, Any]) -> Rendered:
        """A Slack channel's backlog in one message (R2.6); Slack only."""
        slack = self.slack("slack/summary.json.j2", data)
        return Rendered(kind="summary", slack=slack, subject=one_line(slack.get("text", ""), SUBJECT_MAX),
                        text=str(slack.get("text", "")), html="")

    def digest(self, data: dict[str, Any]) -> Rendered:
        """An email digest (HTML + text); digests have no Slack form."""
        return Rendered(
            kind="digest",
            slack={},
            subject=self.subject("email/digest.subject.j2", data),
            text=self.text("email/digest.txt.j2", data),
            html=self.html("email/digest.html.j2", data),
        )


# Block Kit limits we render within (https://api.slack.com/reference/block-kit/blocks).
HEADER_MAX = 150
FIELD_MAX = 2000
BUTTON_TEXT_MAX = 75
MAX_BLOCKS = 50


def enforce_slack_limits(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep a rendered payload inside Slack's limits, cutting escaped text at a safe boundary.

    Values are clipped before escaping (templates use ``clip``); escaping can still grow them
    (``<`` is four characters as ``&lt;``), so every text is checked again here.
    """
    blocks = payload.get("blocks")
    if isinstance(blocks, list):
        blocks[:] = [part for block in blocks for part in _split_section(block)]
        del blocks[MAX_BLOCKS:]
        for block in blocks:
            _verbatim(block)
            t = block.get("text")
            if isinstance(t, dict) and isinstance(t.get("text"), str):
                limit = HEADER_MAX if block.get("type") == "header" else SLACK_SECTION_MAX
                t["text"] = _cut_escaped(t["text"], limit)
            for f in block.get("fields", []) or []:
                if isinstance(f.get("text"), str):
                    f["text"] = _cut_escaped(f["text"], FIELD_MAX)
            for el in block.get("elements", []) or []:
                if isinstance(el.get("text"), str):
                    el["text"] = _cut_escaped(el["text"], SLACK_SECTION_MAX)
                elif isinstance(el.get("text"), dict) and isinstance(el["text"].get("text"), str):
                    el["text"]["text"] = _cut_escaped(el["text"]["text"], BUTTON_TEXT_MAX)
    if isinstance(payload.get("text"), str):
        payload["text"] = _cut_escaped(payload["text"], SLACK_TEXT_MAX)
    return payload


def _verbatim(block: Any) -> None:
    """Every mrkdwn text of a block as ``verbatim``: Slack then links only the ``<url|label>`` our code built,
    not a bare URL, channel name or mention inside an event's text (those would be live in our message)."""
    if not isinstance(block, dict):
        return
    texts = [block.get("text"), *(block.get("fields") or []), *(block.get("elements") or [])]
    for t in texts:
        if isinstance(t, dict) and t.get("type") == "mrkdwn":
            t["verbatim"] = True


def _split_section(block: Any) -> list[Any]:
    """A section of lines (a group's members, a summary's alerts) too long for one block becomes several,
    split between lines: cut as one, a long line (a long link) would take every line after it along."""
    t = block.get("text") if isinstance(block, dict) and block.get("type") == "section" else None
    if not (isinstance(t, dict) and isinstance(t.get("text"), str) and len(t["text"]) > SLACK_SECTION_MAX):
        return [block]
    parts: list[str] = []
    for line in t["text"].split("\n"):
        line = _cut_escaped(line, SLACK_SECTION_MAX)
        if parts and len(parts[-1]) + 1 + len(line) <= SLACK_SECTION_MAX:
            parts[-1] += "\n" + line
        else:
            parts.append(line)
    return [{**block, "text": {**t, "text": part}} for part in parts if part.strip()]


_STATE_LABEL = {
    Kind.firing: "FIRING",
    Kind.reminder: "STILL FIRING",
    Kind.updated: "UPDATED",
    Kind.resolved: "RESOLVED",
}
# A refresh token about to expire (alerts.tokens) is a warning ahead of a failure, not a failure.
EXPIRING = "token_expiring"
_EXPIRING_LABEL = {Kind.firing: "EXPIRING SOON", Kind.reminder: "STILL EXPIRING", Kind.updated: "EXPIRING SOON"}


def alert_data(
    *,
    kind: str,
    alert: Any,
    entry: CatalogEntry,
    dashboard_url: str,
    now: datetime,
    reason: str = "",
    state_label: str | None = None,
    owner: str | None = None,
    usual_auth: str | None = None,
) -> dict[str, Any]:
    """The one template data model for alert messages (every channel renders from this).

    ``owner`` is the integration's ``[[integrations]] owner``: the person to act, named in the message.
    ``usual_auth`` is the provider's usual auth method (``Catalog.default_auth``): the fix and its button
    are written for it when the alert does not say (the alert keeps what was reported: it is matched,
    grouped and routed on)."""
    auth = alert.auth_method or usual_auth
    first_seen = as_utc(alert.first_seen)
    resolved_at = as_utc(alert.resolved_at) if alert.resolved_at else None
    # Ingest sanitised these already; once more here so no caller can put a CR/LF or control into a message.
    integration_id = _clean(alert.integration_id, 200)
    integration_name = _clean(alert.integration_name, 200) or None
    name = integration_name or integration_id
    label = provider_label(alert.provider)
    expiring = alert.code == EXPIRING
    labels = _EXPIRING_LABEL if expiring and Kind(kind) in _EXPIRING_LABEL else _STATE_LABEL
    return {
        "kind": str(kind),
        "state_label": state_label or labels.get(Kind(kind), str(kind).upper()),
        "reason": reason,
        "alert": {
            "id": alert.id,
            "integration_id": integration_id,
            "integration_name": integration_name,
            "display_name": name,
            "provider": alert.provider or "",
            "provider_label": label,
            "provider_in_name": bool(label) and label.lower() in name.lower(),
            "auth_method": alert.auth_method or "",
            "expiring": expiring,
            "account_id": alert.account_id or "",
            "code": alert.code,
            "severity": alert.severity,
            "state": alert.state,
            "count": alert.count,
            "first_seen": first_seen,
            "last_seen": as_utc(alert.last_seen),
            "resolved_at": resolved_at,
            "open_for": humanize((resolved_at or as_utc(now)) - first_seen),
            "last_error": clip(_clean(alert.last_error, 4096), ERROR_MAX),
            "labels": {_clean(k, 200): _clean(v, 200) for k, v in (alert.labels or {}).items()},
            "reauthorize_url": alert.reauthorize_url,
            "silenced": alert.silenced,
            "acknowledged_by": _clean(alert.acknowledged_by, 200),
            "owner": _clean(owner, 320),
            "authorized_by": _clean(getattr(alert, "authorized_by", None), 320),
            "resolution": resolution(_clean(getattr(alert, "resolved_by", None), 200)),
        },
        "entry": {
            "code": entry.code,
            "base_code": entry.base_code,
            "title": entry.title,
            "cause": entry.cause,
            "solution": entry.solution_for(auth),
            "action": entry.action_for(auth),
            "causes": list(entry.causes),
            # Slack's "Why": the cause, or where the cause only repeats the title, the usual causes
            "why": "; ".join(entry.causes[:2]) if entry.causes and entry.cause.strip(". ").lower()
                   == entry.title.strip(". ").lower() else entry.cause,
            "docs": entry.docs or "",
        },
        "action_label": ACTION_LABEL.get(entry.action_for(auth), "Fix it"),
        "dashboard_url": dashboard_url,
        "alert_url": f"{dashboard_url}/alerts/{alert.id}" if alert.id else dashboard_url,  # a test message's has none
        "now": as_utc(now),
        "group": None,  # set by the worker when this alert leads several failing together
        "still_failing": None,  # set by the worker for a resolved alert whose group still fails
    }


ACTION_LABEL = {
    "reauthorize": "Reauthorize",
    "restore_permissions": "Review permissions",
    "new_token": "Reauthorize",
    "update_api_key": "Update API key",
    "update_credentials": "Update credentials",
}

_PROVIDER_LABELS = {
    "google": "Google",
    "microsoft": "Microsoft",
    "salesforce": "Salesforce",
    "hubspot": "HubSpot",
    "facebook": "Meta",
    "github": "GitHub",
    "quickbooks": "QuickBooks",
    "postgres": "PostgreSQL",
    "mysql": "MySQL",
}


def summary_data(items: list[dict[str, Any]], *, catalog: Any, dashboard_url: str) -> dict[str, Any]:
    """Template data of a Slack backlog summary (R2.6): one line per merged message, names and providers
    cleaned as ``alert_data`` cleans them, and the messages counted by kind."""
    lines = []
    for item in items:
        entry = catalog.get(item["code"]) if item.get("code") else None
        lines.append({
            "kind": str(item["kind"]),
            "name": _clean(item.get("integration_name"), 200) or _clean(item.get("integration_id"), 200),
            "provider": provider_label(item.get("provider")),
            "title": entry.title if entry else (item.get("code") or ""),
            "reauthorize_url": item.get("reauthorize_url"),
        })
    return {
        "kind": "summary",
        "count": len(lines),
        "kinds": dict(Counter(line["kind"] for line in lines)),
        "lines": lines,
        "dashboard_url": dashboard_url,
        "action_label": ACTION_LABEL["reauthorize"],
    }


_ALERTING_SOURCES = frozenset(("alertmanager", "pagerduty"))  # they forward alerts, not sync results
SOURCE_LABEL = {"fivetran": "Fivetran", "airbyte": "Airbyte", "stitch": "Stitch", "alertmanager": "Alertmanager",
                "pagerduty": "PagerDuty", "log": "log"}


def resolution(resolved_by: str) -> str:
    """How an alert was resolved, as a message says it: confirmed by the pipeline, or someone's word."""
    if not resolved_by:
        return ""
    if resolved_by.startswith("reauthorized"):  # alerts.tokens: a newer issued_at
        return "Reauthorized: the refresh token was issued anew."
    if resolved_by.endswith(" success event"):
        source = resolved_by.removesuffix(" success event")
        label = SOURCE_LABEL.get(source)
        if source in _ALERTING_SOURCES:  # an alert that stopped firing: its rule no longer matches, no sync seen
            return f"{label} reports it resolved (its alert stopped firing; no sync was seen here)."
        return f"Confirmed by a successful {label} sync." if label else "Confirmed by a successful sync."
    return f"Marked resolved by {resolved_by}; no successful sync has confirmed it yet."


def provider_label(provider: str | None) -> str:
    if not provider:
        return ""
    return _PROVIDER_LABELS.get(provider, provider.replace("_", " ").title())


@dataclass
class SampleAlert:
    """An alert that never happened, for ``alerts test-notify`` and the README/golden examples."""

    id: int = 0
    integration_id: str = "sf-prod"
    integration_name: str | None = "Salesforce (prod)"
    provider: str | None = "salesforce"
    auth_method: str | None = "oauth2"
    account_id: str | None = None
    code: str = "invalid_grant"
    severity: str = "critical"
    state: str = "firing"
    count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    resolved_at: datetime | None = None
    last_error: str | None = "invalid_grant: expired access/refresh token"
    labels: dict[str, str] | None = None
    reauthorize_url: str | None = None
    silenced: bool = False
    acknowledged_by: str | None = None
    authorized_by: str | None = None
    resolved_by: str | None = None


def with_delivery_note(payload: dict[str, Any], note: str) -> dict[str, Any]:
    """A rendered payload with a one-line note on top (for the admin fallback of a dead letter).

    ``note`` is our own sentence but may quote untrusted text: it is sanitised and escaped here.
    """
    import html as _html

    line = one_line(note, 500)
    out = dict(payload)
    out["subject"] = one_line(f"[UNDELIVERED] {payload.get('subject', '')}", SUBJECT_MAX)
    out["text"] = f"{line}\n\n{payload.get('text', '')}"
    body = str(payload.get("html", ""))
    note_html = (f'<p style="margin:0;padding:12px 16px;background:#fff8c5;border:1px solid #d4a72c;'
                 f'font-family:sans-serif;font-size:14px;">{_html.escape(line)}</p>')
    at = body.find("<body")
    at = body.find(">", at) + 1 if at != -1 else 0
    out["html"] = body[:at] + note_html + body[at:]
    return out
