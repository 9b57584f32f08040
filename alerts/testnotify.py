"""``alerts test-notify RECEIVER``: render a sample alert and send it through the receiver's real channels.

It goes straight to the channels (not through the outbox): an operator checking the setup wants the
outcome now, with the reason when it fails, and a sample is not an alert anybody must be told about.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.catalog import Catalog
from alerts.channels import DeliveryError, Outgoing
from alerts.channels.mime import message_domain
from alerts.config import Settings
from alerts.links import reauthorize_url
from alerts.render import Renderer, SampleAlert, alert_data
from alerts.routing import FILE_RECEIVER, receiver_targets
from alerts.worker import build_channels


@dataclass
class Outcome:
    receiver: str
    channel: str
    address: str
    ok: bool
    detail: str  # the external reference, or why it failed


class UnknownReceiver(LookupError):
    pass


def sample_outgoing(settings: Settings, catalog: Catalog, *, now: datetime, address: dict) -> Outgoing:
    entry = catalog.get("invalid_grant")
    assert entry is not None
    url, _ = reauthorize_url(links=settings.links, integration_id="sf-prod", provider="salesforce")
    alert = SampleAlert(first_seen=now - timedelta(minutes=12), last_seen=now, count=3, reauthorize_url=url,
                        integration_name="Salesforce (prod)")
    data = alert_data(kind="firing", alert=alert, entry=entry, dashboard_url=settings.server.base_url(), now=now,
                      state_label="TEST")
    rendered = Renderer(user_dir=settings.templates.dir).alert(data)
    key = uuid.uuid4().hex
    return Outgoing(notification_id=0, idempotency_key=key, kind="firing", alert_id=None, address=address,
                    rendered=rendered, message_id=f"<test-{key[:24]}@{message_domain(settings.email.from_addr)}>")


async def send_test(settings: Settings, catalog: Catalog, receiver_name: str, *, now: datetime) -> list[Outcome]:
    """Send one sample message to each target of ``receiver_name``; report each outcome."""
    receivers = {r.name: r for r in settings.receivers}
    if not receivers:
        receivers[FILE_RECEIVER.name] = FILE_RECEIVER
    receiver = receivers.get(receiver_name)
    if receiver is None:
        raise UnknownReceiver(f"no receiver {receiver_name!r} (configured: {', '.join(sorted(receivers))})")
    channels = build_channels(settings)
    out: list[Outcome] = []
    try:
        for target in receiver_targets(receiver):
            shown = target.address.get("channel") or ", ".join(target.address.get("to", [])) or settings.outbox.dir
            channel = channels.get(target.channel)
            if channel is None:
                out.append(Outcome(receiver.name, target.channel, shown, False, "channel not configured"))
                continue
            message = sample_outgoing(settings, catalog, now=now, address=dict(target.address))
            try:
                ref = await channel.send(message)
            except DeliveryError as exc:
                retry = "temporary, would be retried" if exc.retryable else "permanent"
                out.append(Outcome(receiver.name, target.channel, shown, False, f"{exc.reason} ({retry})"))
            else:
                out.append(Outcome(receiver.name, target.channel, shown, True, ref or "sent"))
    finally:
        for ch in channels.values():
            await ch.aclose()
    return out
