"""The email channel against an in-process aiosmtpd server: codes, per-recipient outcomes, TLS, AUTH."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.channels import DeliveryError, Outgoing
from alerts.channels.email import EmailChannel, PartialDelivery
from alerts.config import EmailSettings
from alerts.models import CatalogEntry, Severity
from alerts.render import Renderer, SampleAlert, alert_data
from tests.conftest import IN_CI
from tests.peers.smtp import DROP, SmtpPeer

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ENTRY = CatalogEntry(code="invalid_grant", title="Authorization expired or revoked", cause="Token expired.",
                     solution="Reauthorize.", action="reauthorize", severity=Severity.critical)
RENDERER = Renderer()


@pytest.fixture
def smtp() -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


def channel(peer: SmtpPeer, **kw) -> EmailChannel:
    settings = {"host": "127.0.0.1", "port": peer.port, "starttls": False, "from_addr": "alerts@example.com",
                "timeout": "5s", **kw}
    return EmailChannel(EmailSettings(**settings))


def outgoing(to: list[str], **alert) -> Outgoing:
    a = SampleAlert(first_seen=NOW, last_seen=NOW, reauthorize_url="https://etl.example.com/r", **alert)
    rendered = RENDERER.alert(alert_data(kind="firing", alert=a, entry=ENTRY, dashboard_url="https://a.example",
                                         now=NOW))
    return Outgoing(notification_id=1, idempotency_key="k" * 64, kind="firing", alert_id=7, address={"to": to},
                    rendered=rendered, message_id="<alert-7.abc@example.com>")


def send(ch: EmailChannel, msg: Outgoing) -> str | None:
    return asyncio.run(ch.send(msg))


def fails(ch: EmailChannel, msg: Outgoing) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(ch, msg)
    return info.value


def test_a_message_arrives_multipart_with_its_message_id(smtp: SmtpPeer) -> None:
    ref = send(channel(smtp), outgoing(["oncall@example.com"]))
    [got] = smtp.messages
    msg = got.message
    assert ref == "<alert-7.abc@example.com>" == msg["Message-ID"]
    assert got.mail_from == "alerts@example.com" and got.rcpt_tos == ["oncall@example.com"]
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert "https://etl.example.com/r" in msg.get_body(("plain",)).get_content()


@pytest.mark.parametrize("name", ["Salesforce (prod)", "x" * 40, "y" * 47, "Zürich CRM 日本語の統合", "z" * 150])
def test_the_subject_arrives_exactly_as_rendered(smtp: SmtpPeer, name: str) -> None:
    msg = outgoing(["a@example.com"], integration_name=name)
    send(channel(smtp), msg)
    assert smtp.messages[0].message["Subject"] == msg.rendered.subject  # no folding artefacts


def test_smtp_codes_table_at_rcpt(smtp: SmtpPeer) -> None:
    """Every reply code 400–599 to RCPT TO: 4xx retries, 5xx is dead."""
    ch = channel(smtp)

    async def run() -> dict[int, bool]:
        got = {}
        for code in range(400, 600):
            smtp.script_rcpt("a@example.com", f"{code} scripted")
            try:
                await ch.send(outgoing(["a@example.com"]))
                got[code] = None
            except DeliveryError as exc:
                assert f"{code} scripted" in exc.reason
                got[code] = exc.retryable
        return got

    assert asyncio.run(run()) == {c: c // 100 == 4 for c in range(400, 600)}
    assert smtp.messages == []


@pytest.mark.parametrize(("stage", "answer", "retryable"), [
    ("data", "451 4.3.0 try again later", True),
    ("data", "452 4.3.1 insufficient storage", True),
    ("data", "552 5.3.4 message too big", False),
    ("data", "554 5.7.1 rejected as spam", False),
    ("mail", "451 4.7.1 greylisted", True),
    ("mail", "553 5.1.8 sender domain does not exist", False),
])
def test_smtp_codes_at_mail_and_data(smtp: SmtpPeer, stage: str, answer: str, retryable: bool) -> None:
    getattr(smtp, stage).append(answer)
    err = fails(channel(smtp), outgoing(["a@example.com"]))
    assert err.retryable is retryable and answer.split()[0] in err.reason
    assert smtp.messages == []


def test_partial_refusal_is_reported_per_recipient(smtp: SmtpPeer) -> None:
    smtp.script_rcpt("later@example.com", "451 4.2.0 mailbox busy")
    smtp.script_rcpt("gone@example.com", "550 5.1.1 no such user")
    with pytest.raises(PartialDelivery) as info:
        send(channel(smtp), outgoing(["ok@example.com", "later@example.com", "gone@example.com"]))
    exc = info.value
    assert exc.delivered == ["ok@example.com"]
    assert list(exc.retry) == ["later@example.com"] and "451" in exc.retry["later@example.com"]
    assert list(exc.dead) == ["gone@example.com"] and "550" in exc.dead["gone@example.com"]
    assert smtp.recipients() == ["ok@example.com"]


def test_everyone_refused_with_mixed_codes_is_partial_too(smtp: SmtpPeer) -> None:
    smtp.script_rcpt("later@example.com", "452 4.2.2 over quota")
    smtp.script_rcpt("gone@example.com", "550 5.1.1 no such user")
    with pytest.raises(PartialDelivery) as info:
        send(channel(smtp), outgoing(["later@example.com", "gone@example.com"]))
    assert info.value.delivered == [] and list(info.value.retry) == ["later@example.com"]


def test_disconnect_after_data_retries(smtp: SmtpPeer) -> None:
    smtp.data.append(DROP)
    err = fails(channel(smtp), outgoing(["a@example.com"]))
    assert err.retryable and len(smtp.dropped) == 1 and smtp.messages == []


def test_unreachable_and_silent_servers_retry(smtp: SmtpPeer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert fails(channel(smtp, port=port), outgoing(["a@example.com"])).retryable

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    conns: list[socket.socket] = []
    t = threading.Thread(target=lambda: conns.append(silent.accept()[0]), daemon=True)
    t.start()
    try:
        err = fails(channel(smtp, port=silent.getsockname()[1], timeout="300ms"), outgoing(["a@example.com"]))
        assert err.retryable and "Timeout" in err.reason
    finally:
        for c in conns:
            c.close()
        silent.close()


OUR_HEADERS = sorted(["Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "X-Alerts-Kind",
                      "MIME-Version", "Content-Type"])


def only_our_headers(data: bytes) -> str:
    """The header block of a message as received, after checking it holds our headers and no others."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
    assert sorted(names) == OUR_HEADERS
    return head


def test_hostile_text_never_reaches_a_header(smtp: SmtpPeer) -> None:
    send(channel(smtp), outgoing(["a@example.com"], integration_name="<!channel> prod\r\nBcc: x@y",
                                 last_error="boom\r\nBcc: evil@example.com\r\nX-Injected: 1 <script>"))
    [got] = smtp.messages
    assert got.rcpt_tos == ["a@example.com"]
    head = only_our_headers(got.data)
    assert got.message["To"] == "a@example.com" and got.message["Bcc"] is None
    assert "evil@" not in head and "X-Injected" not in head  # the error text is body only
    assert b"\nBcc:" not in got.data and b"\nX-Injected:" not in got.data  # not even as a line in the body
    html = got.message.get_body(("html",)).get_content()
    assert "&lt;script&gt;" in html and "<script>" not in html


@pytest.mark.parametrize("name", [
    "=?utf-8?b?" + __import__("base64").b64encode(
        b"SF\r\nReply-To: it@evil.example\r\nContent-Type: text/html\r\n\r\n<a href=https://evil.example>R</a>").decode()
    + "?=",
    "=?utf-8?q?x=0D=0ABcc:_evil@evil.example=0D=0A=0D=0Abody?=",
])
def test_an_encoded_word_in_a_name_cannot_add_headers(smtp: SmtpPeer, name: str) -> None:
    """Found by a security review: the header parser decodes RFC 2047 words, and Python before 3.11.10 writes
    a CR/LF decoded from one out as it is: a name carried its own Reply-To, Bcc and HTML body."""
    send(channel(smtp), outgoing(["a@example.com"], integration_name=name))
    [got] = smtp.messages
    assert got.rcpt_tos == ["a@example.com"]
    only_our_headers(got.data)
    assert got.message["Reply-To"] is None and got.message["Bcc"] is None
    assert got.message["From"] == "alerts@example.com" and got.message.is_multipart()
    assert "= ?utf-8?" in got.message["Subject"]  # shown as written, never decoded


# -- TLS and AUTH -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("openssl is needed to make a test certificate")
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def test_starttls_and_auth(cert) -> None:
    peer = SmtpPeer(tls_context=server_context(cert), require_starttls=True, login=("alerts", "s3cret-pass")).start()
    try:
        ok = channel(peer, starttls=True, ca_file=str(cert[0]), username="alerts", password="s3cret-pass")
        send(ok, outgoing(["a@example.com"]))
        assert len(peer.messages) == 1 and peer.auth_attempts[-1][1] is True

        bad = channel(peer, starttls=True, ca_file=str(cert[0]), username="alerts", password="wrong-password")
        err = fails(bad, outgoing(["a@example.com"]))
        assert not err.retryable and "535" in err.reason and "wrong-password" not in str(err)

        untrusted = channel(peer, starttls=True, username="alerts", password="s3cret-pass")  # no ca_file
        assert fails(untrusted, outgoing(["a@example.com"])).retryable  # certificate not trusted
        assert len(peer.messages) == 1
    finally:
        peer.stop()


def test_starttls_required_but_not_offered_is_permanent(smtp: SmtpPeer) -> None:
    err = fails(channel(smtp, starttls=True), outgoing(["a@example.com"]))
    assert not err.retryable and "starttls" in err.reason.lower()


def test_tls_spoken_to_a_plain_text_port_is_permanent_with_a_hint(smtp: SmtpPeer) -> None:
    """Found by a fault review: use_tls = true against a plain-text server was retried 12 times."""
    err = fails(channel(smtp, use_tls=True, starttls=False), outgoing(["a@example.com"]))
    assert not err.retryable and "use_tls" in err.reason and "465" in err.reason, err.reason
    assert smtp.messages == []


def test_implicit_tls(cert) -> None:
    peer = SmtpPeer(implicit_tls=server_context(cert)).start()
    try:
        send(channel(peer, use_tls=True, ca_file=str(cert[0])), outgoing(["a@example.com"]))
        assert len(peer.messages) == 1
    finally:
        peer.stop()


def test_two_deployments_never_share_a_message_id(make_client, make_settings, tmp_path) -> None:
    """Staging and production both mail alert 1 to the same on-call address: their Message-IDs (and
    thread roots) differ, so mail clients neither merge the threads nor drop one as a duplicate."""
    import email
    from email import policy

    from tests.helpers import SF, run_worker_once

    ids = []
    for name in ("staging", "prod"):
        client = make_client(make_settings(database={"url": f"sqlite:///{tmp_path}/{name}.db"},
                                           outbox={"dir": str(tmp_path / name)}))
        assert client.post("/v1/events", json=SF).json()["alert_ids"] == [1]
        assert run_worker_once(client.app) == 1
        msg = email.message_from_bytes((tmp_path / name / "1.eml").read_bytes(), policy=policy.default)
        ids.append(msg["Message-ID"])
    assert ids[0] != ids[1] and all(i.startswith("<alert-1.") for i in ids)
