"""Email over SMTP with aiosmtplib: STARTTLS or implicit TLS, optional AUTH, timeouts.

Messages are built by :func:`alerts.channels.mime.build_email` (``EmailMessage(policy=default)``,
never concatenated headers). Each notification has its own deterministic ``Message-ID``; the first
message of an alert is the thread root and later ones carry ``In-Reply-To``/``References`` to it.

Outcomes (R2.4), per recipient::

    accepted                              delivered
    4xx (RCPT, MAIL, DATA)                retry with backoff
    5xx                                   dead for that recipient (the rest are delivered or retried)
    connect error, timeout, disconnect    retry; after DATA too, with the same Message-ID

A message some recipients accepted and others refused raises :class:`PartialDelivery`, which the
worker turns into one outbox row per outcome (R2.4: per recipient, never ignored).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import datetime

import aiosmtplib

from alerts.channels.base import DeliveryError, Outgoing
from alerts.channels.mime import POLICY, build_email
from alerts.config import EmailSettings
from alerts.models import utcnow


class PartialDelivery(DeliveryError):
    """Some recipients accepted the message, others refused it (temporarily or for good).

    ``delivered`` lists who has it; ``retry`` and ``dead`` map the others to the server's answer.
    """

    def __init__(self, *, ref: str, delivered: list[str], retry: dict[str, str], dead: dict[str, str]) -> None:
        parts = [f"{a}: {e}" for a, e in {**retry, **dead}.items()]
        super().__init__("smtp: refused " + "; ".join(parts), retryable=bool(retry))
        self.ref = ref
        self.delivered = delivered
        self.retry = retry
        self.dead = dead


def smtp_error(code: int | None, message: str, *, stage: str) -> DeliveryError:
    """``code // 100 == 4`` retries; ``== 5`` is permanent; anything else (no code) retries."""
    text = " ".join(str(message).split())[:300]
    if code is not None and code // 100 == 5:
        return DeliveryError(f"smtp {stage}: {code} {text}", retryable=False)
    return DeliveryError(f"smtp {stage}: {code or ''} {text}".replace("  ", " "), retryable=True)


class EmailChannel:
    name = "email"

    def __init__(self, settings: EmailSettings, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock

    def _tls_context(self) -> ssl.SSLContext | None:
        if not (self.settings.starttls or self.settings.use_tls):
            return None
        ctx = ssl.create_default_context()
        if self.settings.ca_file:
            ctx.load_verify_locations(cafile=self.settings.ca_file)
        return ctx

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            use_tls=s.use_tls,
            start_tls=True if s.starttls else False,
            tls_context=self._tls_context(),
            timeout=s.timeout.total_seconds(),
        )

    async def send(self, message: Outgoing) -> str | None:
        to = [str(a) for a in message.address.get("to", [])]
        if not to:
            raise DeliveryError("smtp: no recipients", retryable=False)
        msg = build_email(
            message.rendered,
            from_addr=self.settings.from_addr,
            to=to,
            message_id=message.message_id,
            in_reply_to=message.thread_root_id,
        )
        # Flattened with our policy (CRLF, no folding of our one-line subjects); aiosmtplib's own
        # send_message would re-fold every header at 78 characters.
        data = msg.as_bytes(policy=POLICY.clone(linesep="\r\n"))
        try:
            async with self._client() as smtp:
                refused, _ = await smtp.sendmail(self.settings.from_addr, to, data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Nobody accepted it. Per recipient: 4xx retries, 5xx is dead.
            answers = {r.recipient: (r.code, r.message) for r in exc.recipients}
            retry = {a: f"{c} {m}" for a, (c, m) in answers.items() if c // 100 != 5}
            dead = {a: f"{c} {m}" for a, (c, m) in answers.items() if c // 100 == 5}
            if retry and dead:
                raise PartialDelivery(ref=message.message_id, delivered=[], retry=retry, dead=dead) from None
            if dead:
                raise DeliveryError("smtp: refused " + "; ".join(f"{a}: {e}" for a, e in dead.items()),
                                    retryable=False) from None
            raise DeliveryError("smtp: refused " + "; ".join(f"{a}: {e}" for a, e in retry.items()),
                                retryable=True) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise smtp_error(exc.code, f"authentication failed: {exc.message}", stage="auth") from None
        except aiosmtplib.SMTPSenderRefused as exc:
            raise smtp_error(exc.code, exc.message, stage="MAIL FROM") from None
        except aiosmtplib.SMTPDataError as exc:
            raise smtp_error(exc.code, exc.message, stage="DATA") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise DeliveryError(f"smtp: {exc.message} (check [email] starttls/use_tls)", retryable=False) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise smtp_error(exc.code, exc.message, stage="session") from None
        except aiosmtplib.SMTPException as exc:
            if "extension not supported" in str(exc):  # e.g. STARTTLS required but not offered
                raise DeliveryError(f"smtp: {exc} (check [email] starttls/use_tls)", retryable=False) from None
            _raise_if_tls_mismatch(exc)
            raise DeliveryError(f"smtp: {type(exc).__name__}: {str(exc)[:200]}", retryable=True) from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            # Connect errors, timeouts, a disconnect (also after DATA): retry with the same Message-ID.
            _raise_if_tls_mismatch(exc)
            raise DeliveryError(f"smtp: {type(exc).__name__}: {str(exc)[:200]}", retryable=True) from None
        if refused:
            answers = {a: (r.code, r.message) for a, r in refused.items()}
            retry = {a: f"{c} {m}" for a, (c, m) in answers.items() if c // 100 != 5}
            dead = {a: f"{c} {m}" for a, (c, m) in answers.items() if c // 100 == 5}
            delivered = [a for a in to if a not in refused]
            raise PartialDelivery(ref=message.message_id, delivered=delivered, retry=retry, dead=dead)
        return message.message_id

    async def aclose(self) -> None:
        return None


# TLS spoken to a plain-text port (use_tls = true on 587/25) or the reverse: the same answer every time,
# a configuration to fix — dead at once with the hint, as "STARTTLS not offered" is (found by a fault
# review: it was retried 12 times, logging only "[SSL: WRONG_VERSION_NUMBER]").
_TLS_MISMATCH = ("wrong version number", "wrong_version_number", "unknown protocol", "record layer failure",
                 "packet length too long", "http request")


def _raise_if_tls_mismatch(exc: BaseException) -> None:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    if any(marker in text for marker in _TLS_MISMATCH):
        raise DeliveryError(f"smtp: {type(exc).__name__}: {str(exc)[:200]} (the server does not speak TLS on this "
                            "port: check [email] use_tls (port 465) and starttls (port 587))", retryable=False) from None
