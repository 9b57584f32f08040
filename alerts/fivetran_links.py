"""Fresh Fivetran reauthorize links, minted at send time through the Connect Card API.

A Connect Card link (``https://fivetran.com/connect-card/setup?auth=<JWT>…``) lets the owner
re-authorize a connector directly, but it is valid for one day and its token is a credential. So it
is never stored: the outbox payload keeps the fallback link (the connector's Fivetran page, or the
configured ``[links]`` one), and just before a message about a Fivetran connector is sent,
:meth:`FreshLinks.apply` asks Fivetran for a new link and puts it in place of the fallback in the
copy that is sent. Digests, sent long after an alert opened, call :meth:`FreshLinks.link_for`.

``POST {base_url}/v1/connections/{connector_id}/connect-card`` with HTTP Basic auth
(``[fivetran] api_key`` / ``api_secret``), ``Accept: application/json;version=2``, a timeout, no
redirects. Any failure (network, status, odd answer) falls back to the stored link and is logged
without the credentials or the minted token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from markupsafe import escape
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts.config import Settings
from alerts.models import Kind, utcnow
from alerts.netguard import NonPublicAddress, guarded_sync_transport
from alerts.render import Rendered, slack_url
from alerts.storage import FIVETRAN, Alert, Event, session_scope

log = logging.getLogger("alerts.fivetran")

CACHE_FOR = timedelta(hours=1)  # Fivetran's links last a day; a message sent an hour later still works
LINK_KINDS = {Kind.firing.value, Kind.reminder.value, Kind.updated.value, Kind.digest.value}


def is_connect_card_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host == "fivetran.com" or host.endswith(".fivetran.com")) \
        and not parts.username and not any(c in url for c in "\\ \t\r\n<>\"'`|")


class FreshLinks:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self._cache: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.fivetran.configured

    # -- minting ------------------------------------------------------------------------------

    def link_for(self, connector_id: str) -> str | None:
        """A Connect Card link for ``connector_id`` (cached for an hour), or ``None`` when it cannot be had."""
        if not self.enabled or not connector_id:
            return None
        now = self.clock()
        with self._lock:
            hit = self._cache.get(connector_id)
            if hit is not None and now - hit[1] < CACHE_FOR:
                return hit[0]
        link = self._mint(connector_id)
        if link is not None:
            with self._lock:
                self._cache[connector_id] = (link, now)
        return link

    def _mint(self, connector_id: str) -> str | None:
        cfg = self.settings.fivetran
        assert cfg.api_key is not None and cfg.api_secret is not None
        url = f"{cfg.base_url}/v1/connections/{quote(connector_id, safe='')}/connect-card"
        redirect = cfg.redirect_uri or self.settings.server.base_url()
        try:
            # Only to public addresses, as Slack (R3.6); loopback only where the base URL may be (tests).
            transport = self.transport or guarded_sync_transport(allow_loopback=cfg.allow_loopback_base_url)
            with httpx.Client(timeout=cfg.timeout.total_seconds(), follow_redirects=False,
                              transport=transport) as client:
                resp = client.post(
                    url,
                    auth=(cfg.api_key.get_secret_value(), cfg.api_secret.get_secret_value()),
                    headers={"Accept": "application/json;version=2"},
                    json={"connect_card_config": {"redirect_uri": redirect, "hide_setup_guide": True}},
                )
        except (httpx.HTTPError, NonPublicAddress) as exc:
            log.warning("Connect Card link not minted", extra={"integration_id": connector_id,
                                                               "error": type(exc).__name__})
            return None
        if resp.status_code != 200:
            log.warning("Connect Card link not minted", extra={"integration_id": connector_id,
                                                               "status": resp.status_code})
            return None
        try:
            link = resp.json()["data"]["connect_card"]["uri"]
        except (ValueError, KeyError, TypeError):
            link = None
        if not isinstance(link, str) or len(link) > 8192 or not is_connect_card_url(link):
            log.warning("Connect Card answer had no usable link", extra={"integration_id": connector_id})
            return None
        return link

    # -- send time ------------------------------------------------------------------------------

    def fivetran_alert(self, alert_id: int) -> tuple[str, str] | None:
        """``(connector_id, stored link)`` when ``alert_id`` is about a Fivetran connector and has a link."""
        with session_scope(self.engine) as session:
            alert = session.get(Alert, alert_id)
            if alert is None or not alert.reauthorize_url:
                return None
            seen = session.exec(
                select(Event.id).where(Event.alert_id == alert_id, FIVETRAN).limit(1)
            ).first()
            if seen is None:
                return None
            return alert.integration_id, alert.reauthorize_url

    def apply(self, alert_id: int | None, rendered: Rendered) -> Rendered:
        """``rendered`` with the alert's stored link replaced by a fresh Connect Card link, when one can be had."""
        if not self.enabled or alert_id is None or rendered.kind not in LINK_KINDS:
            return rendered
        found = self.fivetran_alert(alert_id)
        if found is None:
            return rendered
        connector_id, old = found
        new = self.link_for(connector_id)
        if new is None or new == old:
            return rendered
        return substitute(rendered, old, new)


def substitute(rendered: Rendered, old: str, new: str) -> Rendered:
    """Replace the link ``old`` by ``new`` in every part of a rendered message, in each part's encoding."""
    pairs_text = [(old, new)]
    pairs_html = [(str(escape(old)), str(escape(new))), (old, new)]
    pairs_slack = [(str(slack_url(old)), str(slack_url(new))), (old, new)]

    def swap(value: str, pairs: list[tuple[str, str]]) -> str:
        for a, b in pairs:
            if a:
                value = value.replace(a, b)
        return value

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return swap(value, pairs_slack)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return replace(rendered, slack=walk(rendered.slack), subject=swap(rendered.subject, pairs_text),
                   text=swap(rendered.text, pairs_text), html=swap(rendered.html, pairs_html))
