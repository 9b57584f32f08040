"""Build multipart email with the standard library's ``EmailMessage`` (never by concatenating headers)."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime

from alerts.models import utcnow
from alerts.render import Rendered, one_line

# The standard policy, allowed RFC 5322's 998-character lines instead of folding at 78: our subjects
# (at most 200 characters) then stay on one line. Python's folding otherwise moves a subject of
# 70-77 characters whole onto a continuation line (read back as " [FIRING] …") and drops or doubles
# the space beside an encoded word such as the "—" in our subjects.
POLICY = default.clone(max_line_length=998)


def build_email(
    rendered: Rendered,
    *,
    from_addr: str,
    to: list[str],
    message_id: str,
    in_reply_to: str | None = None,
) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = subject_header(rendered.subject)
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


# RFC 2047 encoded words ("=?utf-8?b?…?=") in a header value are decoded by the header parser, and the
# standard library before 3.11.10 / 3.12.5 (CVE-2024-6923) then writes a CR/LF decoded from one out as
# it is: an integration name could add its own Reply-To, Bcc or body. Text from an event never starts an
# encoded word here ("=?" gets a blank), and a header that still holds a line break is refused.
_ENCODED_WORD_START = "=?"


def subject_header(subject: str) -> str:
    """The subject as one line that no encoded word in it can turn into several."""
    text = one_line(subject).replace(_ENCODED_WORD_START, "= ?")
    probe = EmailMessage(policy=POLICY)
    probe["Subject"] = text
    if any(c in str(probe["Subject"]) for c in "\r\n"):  # never reached: "=?" is gone; a backstop all the same
        raise ValueError("email subject would hold a line break")
    return text


def message_domain(from_addr: str) -> str:
    return from_addr.rpartition("@")[2] or "localhost"
