"""Stitch notification emails (``.eml`` files and mbox folders) as a source of events.

For teams that cannot create a Connect API token: Stitch emails every user when an integration
fails ("Stitch Notification - Integration Error", or "We're encountering some errors with your
`<integration display name>` integration"). The email names the integration, explains the issue and,
unless plain-text errors are suppressed in Stitch, quotes the raw error from the source. From each
such email this module takes:

- the integration's name (subject, else body);
- the raw error: the lines after "Here's the error we received" (or similar), else the first body line
  that the catalog classifies as an authentication failure;
- the client id and source id from a link to the integration's page in Stitch's web app, when there
  is one (then the event's integration is that source, as the Connect API poller would name it);
- the ``Date`` header as the time, and the ``Message-ID`` for the idempotency key (re-reading the
  same mailbox counts each email once).

Parsing uses only the standard library (:mod:`email`, :mod:`mailbox`); nothing here touches the
database — :func:`alerts.ingest.ingest` stores the events.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.models import AuthErrorEvent, EventStatus
from alerts.redact import MAX_TEXT, sanitize
from alerts.sources.vendor import guess_provider

__all__ = ["EmailFileError", "StitchEmail", "parse_notification", "read_messages", "to_event"]

MAX_MESSAGE_BYTES = 10 * 1024 * 1024

_NAME = re.compile(
    r"errors? with your\s+[`'\"“‘*]?(?P<name>[^`'\"”’*\r\n]{1,200}?)[`'\"”’*]?\s+integration", re.IGNORECASE
)
# "Here's the error we received:", "Error message:", "Raw error:" — the error follows the colon.
_ERROR_INTRO = re.compile(
    r"(?:(?:here(?:'|’)?s|here is) the (?:raw )?error|error (?:we received|message)|raw error|the error was)[^:\n]{0,40}:",
    re.IGNORECASE,
)
_LINK = re.compile(
    r"https://app(?:\.[a-z0-9-]+)?\.stitchdata\.com/client/(?P<client>\d{1,18})/pipeline/"
    r"(?:v2/sources|connections)/(?P<source>\d{1,18})(?:/[A-Za-z0-9_-]+)*/?",
    re.IGNORECASE,
)
_STITCH_SUBJECT = re.compile(r"^\s*stitch notification\b|errors? with your .{1,200} integration", re.IGNORECASE)
_INTEGRATION_ERROR = re.compile(r"integration error|errors? with your .{1,200} integration", re.IGNORECASE)


class EmailFileError(Exception):
    """A file that cannot be read as an email or a mailbox; the message names the file."""


@dataclass(frozen=True)
class StitchEmail:
    """What one Stitch "Integration Error" email says."""

    subject: str
    integration_name: str | None
    error: str | None
    client_id: str | None = None
    source_id: str | None = None
    link: str | None = None
    occurred_at: datetime | None = None
    message_id: str | None = None
    digest: str = ""  # sha256 of the raw message, for an id when there is no Message-ID


# -- reading files -------------------------------------------------------------------------------


def _parse_bytes(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def read_messages(path: str | Path) -> Iterator[tuple[EmailMessage, bytes]]:
    """Each message of an ``.eml`` file or an mbox (detected by its ``From `` first line or ``.mbox``)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise EmailFileError(f"{p}: {exc.strerror or exc}") from None
    if head == b"From " or p.suffix.lower() in (".mbox", ".mbx"):
        try:
            box = mailbox.mbox(str(p), create=False)
            keys = box.keys()
        except (OSError, mailbox.Error) as exc:
            raise EmailFileError(f"{p}: not a readable mbox ({exc})") from None
        try:
            for key in keys:
                raw = box.get_bytes(key)[:MAX_MESSAGE_BYTES]
                yield _parse_bytes(raw), raw
        finally:
            box.close()
        return
    try:
        raw = p.read_bytes()[:MAX_MESSAGE_BYTES]
    except OSError as exc:
        raise EmailFileError(f"{p}: {exc.strerror or exc}") from None
    yield _parse_bytes(raw), raw


# -- understanding one message -----------------------------------------------------------------


class _Text(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "pre", "h1", "h2", "h3", "h4", "table", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        if tag in self._BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self.links.extend(v for k, v in attrs if k == "href" and v)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _body_text(msg: EmailMessage) -> str:
    """The plain-text body, else the HTML body as text (links kept at the end)."""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except (KeyError, LookupError):
        part = None
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        parser = _Text()
        try:
            parser.feed(content)
            parser.close()
        except Exception:  # HTMLParser is lenient; anything odd just ends the text early
            pass
        return "".join(parser.parts) + "\n" + "\n".join(parser.links)
    return content


def is_stitch(msg: EmailMessage) -> bool:
    subject = str(msg.get("subject", "") or "")
    sender = email.utils.parseaddr(str(msg.get("from", "") or ""))[1].lower()
    return sender.endswith("stitchdata.com") or bool(_STITCH_SUBJECT.search(subject))


def _error_of(lines: list[str], catalog: Catalog, provider: str | None) -> str | None:
    for i, line in enumerate(lines):
        intro = _ERROR_INTRO.search(line)
        if intro:
            rest = line[intro.end():].strip()
            found: list[str] = [rest] if rest else []
            for nxt in lines[i + 1:]:
                if not nxt.strip():
                    if found:
                        break
                    continue
                found.append(nxt.strip())
                if len(found) >= 20:
                    break
            if found:
                return "\n".join(found)
    for line in lines:
        if catalog.classify(line, provider) is not None:
            return line.strip()
    return None


def parse_notification(msg: EmailMessage, raw: bytes, catalog: Catalog) -> StitchEmail | None:
    """A Stitch integration-error email's content, or ``None`` for any other email."""
    if not is_stitch(msg):
        return None
    subject = (sanitize(str(msg.get("subject", "") or ""), limit=300) or "").strip()
    body = _body_text(msg)
    if not (_INTEGRATION_ERROR.search(subject) or _NAME.search(body)):
        return None  # a Stitch email about something else (row limits, invoices …)
    match = _NAME.search(subject) or _NAME.search(body)
    name = sanitize(match.group("name").strip(), limit=200) if match else None
    link = _LINK.search(body)
    lines = body.splitlines()
    error = _error_of(lines, catalog, guess_provider(name, catalog.aliases, passthrough=False))
    date = None
    try:
        parsed = email.utils.parsedate_to_datetime(str(msg.get("date", "") or ""))
        if parsed.tzinfo is not None:
            date = parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        pass
    message_id = sanitize(str(msg.get("message-id", "") or "").strip(), limit=300) or None
    return StitchEmail(
        subject=subject,
        integration_name=name,
        error=sanitize(error, limit=MAX_TEXT, keep_newlines=True) if error else None,  # cut once redacted
        client_id=link.group("client") if link else None,
        source_id=link.group("source") if link else None,
        link=link.group(0) if link else None,
        occurred_at=date,
        message_id=message_id,
        digest=hashlib.sha256(raw).hexdigest(),
    )


def to_event(note: StitchEmail, *, settings: Settings, catalog: Catalog) -> AuthErrorEvent:
    """The email as an event: the Stitch source when the email links to it, else the integration named
    in ``[[integrations]]`` with that name, else the name itself."""
    integration_id = note.source_id
    if integration_id is None and note.integration_name:
        wanted = note.integration_name.casefold()
        reg = next((i for i in settings.integrations if (i.name or "").casefold() == wanted), None)
        integration_id = reg.id if reg else note.integration_name
    key = note.message_id or note.digest
    error = note.error or f"{note.subject} (the email quotes no error message)"
    return AuthErrorEvent(
        integration_id=integration_id or "stitch-unknown-integration",
        status=EventStatus.failed,
        error=error,
        source="stitch-email",
        integration_name=note.integration_name,
        provider=guess_provider(note.integration_name, catalog.aliases, passthrough=False),
        occurred_at=note.occurred_at,
        account_id=note.client_id,
        event_id="stitch-email-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40],
        labels={"pipeline": "stitch"},
        reauthorize_url=note.link,
    )
