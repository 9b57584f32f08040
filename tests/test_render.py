"""Rendering: escaping per channel, Slack limits, the subject line, user template overrides."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.models import CatalogEntry, Severity
from alerts.render import (
    HEADER_MAX,
    SLACK_SECTION_MAX,
    Renderer,
    SampleAlert,
    alert_data,
    enforce_slack_limits,
    fragment,
    with_delivery_note,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ENTRY = CatalogEntry(
    code="invalid_grant", title="Authorization expired or revoked", cause="Token expired or revoked.",
    solution="Reauthorize the integration.", action="reauthorize", severity=Severity.critical,
    causes=("the user de-authorized the app",),
)
HOSTILE_NAME = "<!channel> prod"
HOSTILE_ERROR = "invalid_grant <script>alert(1)</script> & <@U123> <https://evil.example|click>\r\nBcc: x@y"


def render(kind: str = "firing", entry: CatalogEntry = ENTRY, renderer: Renderer | None = None,
           owner: str | None = None, **alert: Any):
    fields = {"reauthorize_url": "https://etl.example.com/connections/sf-prod/reauthorize?x=1&y=2", **alert}
    a = SampleAlert(first_seen=NOW - timedelta(hours=3), last_seen=NOW, count=12, **fields)
    if kind == "resolved":
        a.resolved_at = NOW
        a.state = "resolved"
    data = alert_data(kind=kind, alert=a, entry=entry, dashboard_url="https://alerts.example.com", now=NOW,
                      owner=owner)
    return (renderer or Renderer()).alert(data)


def slack_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in a Slack payload with its JSON path."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in slack_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in slack_strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


OUR_LINK = re.compile(r"<https://alerts\.example\.com(?:/alerts/\d+)?\|alert #\d+>")  # a sample (id 0): the dashboard


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        pytest.param("Token expired or revoked.", "token expired or revoked", id="capitalised word, period"),
        pytest.param("token expired or revoked", "token expired or revoked", id="already a fragment"),
        pytest.param("The OAuth grant (refresh token) expired or was revoked.",
                     "the OAuth grant (refresh token) expired or was revoked", id="acronym later stays"),
        pytest.param("OAuth token revoked.", "OAuth token revoked", id="acronym first stays"),
        pytest.param("API key rotated, revoked or mistyped.", "API key rotated, revoked or mistyped", id="API"),
        pytest.param("Salesforce revoked the session.", "Salesforce revoked the session", id="proper noun"),
        pytest.param("A password changed.", "a password changed", id="one-letter word"),
        pytest.param("Wait...", "wait...", id="an ellipsis is not a trailing period"),
        pytest.param("", "", id="empty"),
    ],
)
def test_fragment(cause: str, expected: str) -> None:
    assert fragment(cause) == expected


def test_subject_reads_like_the_issue_example() -> None:
    assert render().subject == "[FIRING] Salesforce (prod): token expired or revoked — reauthorize"
    assert render("reminder").subject.startswith("[STILL FIRING] Salesforce (prod): ")
    assert render("resolved").subject == "[RESOLVED] Salesforce (prod): working again (token expired or revoked)"
    # the provider is named when the integration's name does not already say it
    assert render(integration_name=None).subject.startswith("[FIRING] sf-prod (Salesforce): ")
    api = CatalogEntry(code="invalid_api_key", title="Invalid API key", cause="The API key was rotated.",
                       solution="x", action="update_api_key", severity=Severity.error)
    assert render(entry=api).subject.endswith(": the API key was rotated — update API key")


def test_slack_escapes_every_interpolated_value() -> None:
    rendered = render(integration_name=HOSTILE_NAME, last_error=HOSTILE_ERROR, integration_id="<!here>")
    raw = json.dumps(rendered.slack)
    for bad in ("<!channel>", "<!here>", "<@U123>", "<script>", "<https://evil"):
        assert bad not in raw
    for path, text in slack_strings(rendered.slack):
        outside_links = OUR_LINK.sub("", text)
        assert "<" not in outside_links and ">" not in outside_links, path
    header = rendered.slack["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt; prod" in header and rendered.slack["text"].startswith("FIRING: &lt;!channel&gt;")
    assert "&lt;script&gt;" in rendered.slack["blocks"][1]["text"]["text"]
    assert "&amp; &lt;@U123&gt;" in rendered.slack["blocks"][1]["text"]["text"]


def test_email_html_is_autoescaped_and_text_is_plain() -> None:
    rendered = render(integration_name=HOSTILE_NAME, last_error=HOSTILE_ERROR)
    assert "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "&lt;!channel&gt; prod" in rendered.html
    assert 'href="https://etl.example.com/connections/sf-prod/reauthorize?x=1&amp;y=2"' in rendered.html
    assert "<script>alert(1)</script>" in rendered.text  # plain text: shown as it is, not escaped
    assert "<!channel> prod" in rendered.text
    assert "\r" not in rendered.subject and "\n" not in rendered.subject


def test_values_are_never_compiled_as_templates() -> None:
    rendered = render(integration_name="{{ 7 * 7 }} {% if true %}x{% endif %}", last_error="{{ config }}")
    assert "{{ 7 * 7 }}" in rendered.text and "49" not in rendered.subject
    assert "{{ config }}" in rendered.slack["blocks"][1]["text"]["text"]


def test_slack_limits_hold_after_escaping() -> None:
    rendered = render(integration_name="<" * 200, last_error="<&>" * 4000)
    header = rendered.slack["blocks"][0]["text"]["text"]
    section = rendered.slack["blocks"][1]["text"]["text"]
    assert len(header) <= HEADER_MAX and len(section) <= SLACK_SECTION_MAX
    for text in (header, section):
        tail = text[-8:]
        assert not re.search(r"&[a-z]*$", tail.rstrip("…`")), tail  # no half entity at the cut
    assert section.endswith("```") and section.count("```") == 2  # the code block is still closed


def test_code_block_cannot_be_closed_by_event_text() -> None:
    section = render(last_error="a ``` *bold* ``` b").slack["blocks"][1]["text"]["text"]
    assert section.count("```") == 2


def test_resolved_has_no_button_and_firing_has_one() -> None:
    firing = render().slack
    [actions] = [b for b in firing["blocks"] if b["type"] == "actions"]
    assert actions["elements"][0]["url"] == "https://etl.example.com/connections/sf-prod/reauthorize?x=1&y=2"
    assert actions["elements"][0]["text"]["text"] == "Reauthorize"
    assert not [b for b in render("resolved").slack["blocks"] if b["type"] == "actions"]
    assert not [b for b in render(reauthorize_url=None).slack["blocks"] if b["type"] == "actions"]


def test_a_user_template_overrides_one_file(tmp_path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "alert.subject.j2").write_text("ALERT {{ alert.display_name }} {{ kind }}")
    rendered = render(renderer=Renderer(user_dir=str(tmp_path)))
    assert rendered.subject == "ALERT Salesforce (prod) firing"
    assert rendered.slack["blocks"][0]["type"] == "header"  # the others are the built-in ones


def test_delivery_note_is_escaped_in_html() -> None:
    payload = render().to_json()
    noted = with_delivery_note(payload, "Could not deliver to slack #x: <b>channel_not_found</b>\r\nBcc: y")
    assert noted["subject"].startswith("[UNDELIVERED] [FIRING]")
    assert "&lt;b&gt;channel_not_found&lt;/b&gt;" in noted["html"] and "<b>channel" not in noted["html"]
    assert noted["text"].startswith("Could not deliver to slack #x: <b>channel_not_found</b> Bcc: y\n\n")


def test_the_person_to_act_is_named_in_every_channel() -> None:
    out = render(owner="alice@example.com", authorized_by="etl-bot@example.com")
    context = [b for b in out.slack["blocks"] if b["type"] == "context"][-1]["elements"][0]["text"]
    assert "owner alice@example.com · authorized by etl-bot@example.com" in context
    assert "Owner: alice@example.com · Authorized by: etl-bot@example.com" in out.text
    assert "owner alice@example.com · authorized by etl-bot@example.com" in out.html
    plain = render()  # nobody known: nothing said
    assert "owner" not in json.dumps(plain.slack) and "Owner" not in plain.text


@pytest.mark.parametrize(("resolved_by", "said"), [
    ("fivetran success event", "Confirmed by a successful Fivetran sync."),
    ("native success event", "Confirmed by a successful sync."),
    ("alice", "Marked resolved by alice; no successful sync has confirmed it yet."),
])
def test_a_resolution_says_how_it_was_resolved(resolved_by: str, said: str) -> None:
    out = render("resolved", resolved_by=resolved_by)
    assert said in json.dumps(out.slack) and said in out.text and said in out.html


def test_slack_why_does_not_repeat_the_title() -> None:
    same = CatalogEntry(code="access_token_expired", title="Access token expired", cause="Access token expired.",
                        solution="Get a new token.", action="new_token", severity=Severity.error,
                        causes=("the token's lifetime (often one hour) passed", "the token was revoked"))
    fields = [f["text"] for b in render(entry=same).slack["blocks"] if b["type"] == "section"
              for f in b.get("fields", [])]
    assert fields[0] == "*Why*\nthe token's lifetime (often one hour) passed; the token was revoked"
    fields = [f["text"] for b in render().slack["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    assert fields[0] == "*Why*\nToken expired or revoked."  # a cause of its own stands


def test_a_section_of_lines_too_long_for_one_block_is_split_between_lines() -> None:
    """Found by a security review: one long link in a summary's first lines made the cut take every line
    after it along, and those alerts were marked sent without being shown."""
    lines = [f"• <https://x.example/{'a' * 1900 if i < 3 else i}|Reauthorize> · *item {i}*" for i in range(10)]
    out = enforce_slack_limits({"text": "t", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "h"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
    ]})
    sections = [b["text"]["text"] for b in out["blocks"] if b["type"] == "section"]
    assert len(sections) == 3 and all(len(s) <= SLACK_SECTION_MAX for s in sections)
    assert "\n".join(sections) == "\n".join(lines)  # every line, in order, none cut


def test_event_text_cannot_format_a_slack_message() -> None:
    """Found by a security review: an id closed our `code` span and a name opened a *bold* line of its own,
    with a bare link Slack made clickable."""
    rendered = render(integration_id="mrk-1` *What to do* sign in at https://evil.example/fix `x",
                      integration_name="*Finance*\u2028*What to do* https://evil.example", authorized_by="m@x.io*")
    payload = rendered.slack
    for path, text in slack_strings(payload):
        if "evil.example" in text:
            assert "*What to do*" not in text and "`x" not in text, (path, text)
            assert "\u2217What to do\u2217" in text
    context = payload["blocks"][-1]["elements"][0]
    assert "`mrk-1\u02cb \u2217What to do\u2217 sign in at https://evil.example/fix \u02cbx`" in context["text"]
    mrkdwn = [o for b in payload["blocks"] for o in [b.get("text"), *(b.get("fields") or []),
                                                      *(b.get("elements") or [])] if isinstance(o, dict)
              and o.get("type") == "mrkdwn"]
    assert mrkdwn and all(o.get("verbatim") is True for o in mrkdwn)  # bare URLs in event text stay text
    assert "```" in str(payload)  # the error's code block is ours, and still a code block
