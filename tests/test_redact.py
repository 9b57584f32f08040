from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.redact import clean, redact, sanitize


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        pytest.param("Authorization: Bearer abcdEFGH12345678", "abcdEFGH12345678", "Authorization: Bearer", id="bearer"),
        pytest.param("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Basic", id="basic"),
        pytest.param("GET /x?access_token=ya29.a0AfH6SMBxyz&page=2", "a0AfH6SMBxyz", "page=2", id="query"),
        pytest.param('{"refresh_token": "1//0gabcdefghijklmnopqrstu"}', "0gabcdefghij", "refresh_token", id="json"),
        pytest.param("client_secret=s3cr3tvalue", "s3cr3tvalue", "client_secret=", id="client-secret"),
        pytest.param("password: hunter22", "hunter22", "password:", id="yaml-password"),
        pytest.param("postgresql://bob:p@ss@w0rd@db.example.com:5432/x", "w0rd", "db.example.com", id="dsn-at-sign"),
        pytest.param("token xoxb-1234567890-abcdefghij", "1234567890-abcdefghij", "xoxb-", id="slack"),
        pytest.param("key sk_live_abcdefghijklmn1234", "abcdefghijklmn1234", "sk_live_", id="stripe"),
        pytest.param("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "eyJzdWIi", "jwt", id="jwt"),
        pytest.param("ghp_" + "a" * 36, "a" * 36, "ghp_", id="github"),
        pytest.param("AKIAABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP", "AKIA", id="aws"),
        pytest.param("https://hooks.slack.com/services/T000/B000/XXXX", "T000/B000", "hooks.slack.com", id="webhook"),
        pytest.param("url?hapikey=abcdef123456", "abcdef123456", "hapikey=", id="hubspot-hapikey"),
    ],
)
def test_redact_removes_secret_keeps_key(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out
    assert kept in out
    assert "[REDACTED]" in out


@pytest.mark.parametrize(
    "text",
    [
        "invalid_grant: expired access/refresh token",
        "401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3/objects",
        "(#190) Error validating access token, error code=190",
        "refresh_token expired",
    ],
)
def test_redact_leaves_error_wording_alone(text: str) -> None:
    assert redact(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_sanitize_strips_controls_bidi_ansi_and_caps_length() -> None:
    raw = "a\x1b[31mred\x1b[0m\u202e evil\r\nBcc: x@y.z \ud800 \x00end"
    out = sanitize(raw)
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out and "\n" not in out and "\x00" not in out
    assert "\ufffd" in out
    long = sanitize("x" * 10000)
    assert len(long) == 4096 and long.endswith("…[truncated]")


def test_clean_sanitises_then_redacts() -> None:
    assert clean("password=\x1b[1mhunter22") == "password=[REDACTED]"
