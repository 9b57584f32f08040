"""An in-process SMTP server (aiosmtpd) on 127.0.0.1, port 0, in its own event-loop thread.

It records every accepted message with its envelope and raw bytes. Tests script answers per
recipient (``rcpt["a@x"] = ["451 4.7.1 try later"]``) or for DATA (``data.append("451 ...")`` or
``data.append(DROP)`` to hang up after the message was received), and can require STARTTLS + AUTH.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

DROP = "<drop the connection>"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=default)  # type: ignore[return-value]


class SmtpPeer:
    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        login: tuple[str, str] | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.implicit_tls = implicit_tls
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.login = login
        self.messages: list[Received] = []
        self.dropped: list[Received] = []  # received, then the connection was dropped before "250"
        self.rcpt: dict[str, deque[str]] = {}
        self.data: deque[str] = deque()
        self.mail: deque[str] = deque()  # answers to MAIL FROM
        self.sessions = 0
        self.delay = 0.0  # seconds each DATA takes before its answer: a slow server
        self.auth_attempts: list[tuple[str, bool]] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def script_rcpt(self, addr: str, *answers: str) -> None:
        self.rcpt.setdefault(addr.lower(), deque()).extend(answers)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SmtpPeer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        handler = _Handler(self)

        def factory() -> SMTP:
            self.sessions += 1
            kw: dict[str, Any] = {}
            if self.login is not None:
                kw.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
            if self.implicit_tls is not None:
                kw["auth_require_tls"] = False  # the whole connection is TLS already
            return SMTP(handler, hostname="peer.test", tls_context=self.tls_context,
                        require_starttls=self.require_starttls, **kw)

        self._server = await self._loop.create_server(factory, "127.0.0.1", 0, ssl=self.implicit_tls)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.login is not None
            and auth_data.login.decode() == self.login[0]
            and auth_data.password.decode() == self.login[1]
        )
        self.auth_attempts.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]


class _Handler:
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.peer.mail:
            answer = self.peer.mail.popleft()
            if not answer.startswith("2"):
                return answer
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        queue = self.peer.rcpt.get(address.lower())
        if queue:
            answer = queue.popleft()
            if not answer.startswith("2"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.peer.delay:
            await asyncio.sleep(self.peer.delay)
        got = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content or b""))
        if self.peer.data:
            answer = self.peer.data.popleft()
            if answer == DROP:
                self.peer.dropped.append(got)
                server.transport.close()
                return "421 closing"
            if not answer.startswith("2"):
                return answer
        self.peer.messages.append(got)
        return "250 2.0.0 queued"
