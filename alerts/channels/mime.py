"""Build multipart email with the standard library's ``EmailMessage`` (never by concatenating headers)."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime

from alerts.models import utcnow
from alerts.render import Rendered, one_line


def build_email(
    rendered: Rendered,
    *,
    from_addr: str,
    to: list[str],
    message_id: str,
    in_reply_to: str | None = None,
) -> EmailMessage:
    msg = EmailMessage(policy=default)
    msg["Subject"] = one_line(rendered.subject)
    msg["From"] = Address(addr_spec=from_addr)
    msg["To"] = [Address(addr_spec=a) for a in to] if to else [Address(addr_spec="undisclosed-recipients@invalid")]
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    if in_reply_to and in_reply_to != message_id:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Alerts-Kind"] = rendered.kind
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def message_domain(from_addr: str) -> str:
    return from_addr.rpartition("@")[2] or "localhost"
