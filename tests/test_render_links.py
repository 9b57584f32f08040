"""Reauthorize links (R3.6): which URL a message may carry, and what is dropped."""

from __future__ import annotations

import pytest

from alerts.config import LinkSettings
from alerts.links import allowed_hosts, is_safe_url, reauthorize_url

LINKS = LinkSettings(reauthorize="https://etl.example.com/connections/{integration_id}/reauthorize",
                     allowed_hosts=["app.example.com", "*.my.salesforce.com"])
HOSTS = allowed_hosts(LINKS)


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        pytest.param("https://app.example.com/i/1/reauth", True, id="allowed host"),
        pytest.param("https://etl.example.com/x", True, id="the template's host is allowed"),
        pytest.param("https://acme.my.salesforce.com/x", True, id="wildcard host"),
        pytest.param("https://my.salesforce.com/x", False, id="a wildcard needs a subdomain"),
        pytest.param("https://APP.example.com/x", True, id="hosts compare case-insensitively"),
        pytest.param("https://app.example.com:443/x", True, id="port 443 written out"),
        pytest.param("https://app.example.com:8443/x", False, id="other port"),
        pytest.param("http://app.example.com/x", False, id="plain http"),
        pytest.param("http://127.0.0.1:8080/x", False, id="http to loopback too (https only, R3.6)"),
        pytest.param("http://localhost:9000/evil", False, id="http to localhost"),
        pytest.param("https://localhost/x", False, id="localhost is not on the allow-list"),
        pytest.param("https://evil.example/x", False, id="host not allowed"),
        pytest.param("https://app.example.com.evil.example/x", False, id="allowed name as a prefix"),
        pytest.param("https://app.example.com@evil.example/x", False, id="userinfo trick"),
        pytest.param("https://@app.example.com/x", False, id="empty userinfo"),
        pytest.param("https://evil.example\\@app.example.com/x", False, id="backslash"),
        pytest.param("https://93.184.216.34/x", False, id="IP literal"),
        pytest.param("https://[::1]/x", False, id="IPv6 literal"),
        pytest.param("javascript:alert(1)", False, id="javascript scheme"),
        pytest.param("https://app.example.com/x|<!channel>", False, id="Slack link syntax"),
        pytest.param("https://app.example.com/x\r\nBcc: a@b", False, id="CR/LF"),
        pytest.param("https://app.example.com:99999/x", False, id="invalid port"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_safe_url(url: str, safe: bool) -> None:
    assert is_safe_url(url, HOSTS) is safe


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("http://etl.example.com/{integration_id}", id="http"),
        pytest.param("http://10.0.0.1:8080/{integration_id}", id="http to a private address"),
        pytest.param("https://10.0.0.1/{integration_id}", id="IP literal"),
        pytest.param("https://[::1]/{integration_id}", id="IPv6 literal"),
        pytest.param("https://etl.example.com:8443/{integration_id}", id="other port"),
        pytest.param("https://user:pw@etl.example.com/{integration_id}", id="userinfo"),
        pytest.param("https://etl.example.com\\@evil.example/{integration_id}", id="backslash"),
        pytest.param("javascript:alert(1)//{integration_id}", id="javascript scheme"),
        pytest.param("https://etl.example.com/{secret}", id="unknown placeholder"),
    ],
)
def test_templates_are_checked_when_the_configuration_loads(template: str) -> None:
    with pytest.raises(ValueError, match="reauthorize link|placeholders|backslash"):
        LinkSettings(reauthorize=template)
    with pytest.raises(ValueError, match="providers.salesforce"):
        LinkSettings(providers={"salesforce": template})


def test_integration_url_then_event_url_then_template() -> None:
    url, rejected = reauthorize_url(links=LINKS, integration_id="sf-prod",
                                    candidates=("https://app.example.com/event", "https://app.example.com/reg"))
    assert (url, rejected) == ("https://app.example.com/event", [])
    url, rejected = reauthorize_url(links=LINKS, integration_id="sf-prod",
                                    candidates=("https://evil.example/phish",), configured="https://app.example.com/reg")
    assert (url, rejected) == ("https://app.example.com/reg", [])
    # the operator's link wins over the event's, even one on an allowed host (found by a security review:
    # an event could point the button at another integration's page, or at a redirect on an allowed host)
    url, _ = reauthorize_url(links=LINKS, integration_id="sf-prod", configured="https://etl.corp.example/sf",
                             candidates=("https://app.example.com/connections/other/reauthorize",))
    assert url == "https://etl.corp.example/sf"
    # the integration's own link is the operator's word: its host need not be in allowed_hosts (found by a
    # user review: config.example.toml's own entry lost its button without a word at start-up)
    url, rejected = reauthorize_url(links=LINKS, integration_id="sf-prod", configured="https://etl.corp.example/sf")
    assert (url, rejected) == ("https://etl.corp.example/sf", [])
    url, rejected = reauthorize_url(links=LINKS, integration_id="a b/../c?x=1#f",
                                    candidates=("https://evil.example/phish", None))
    assert url == "https://etl.example.com/connections/a%20b%2F..%2Fc%3Fx%3D1%23f/reauthorize"
    assert rejected == ["https://evil.example/phish"]


def test_per_provider_templates_and_no_template() -> None:
    links = LinkSettings(providers={"salesforce": "https://sf.example.com/{account_id}/{integration_id}"})
    url, _ = reauthorize_url(links=links, integration_id="x", provider="salesforce", account_id="00D/5")
    assert url == "https://sf.example.com/00D%2F5/x"
    assert reauthorize_url(links=LinkSettings(), integration_id="x", provider="hubspot") == (None, [])


@pytest.mark.parametrize("carrying", ["https://app.example.com/r?access_token=ya29SECRETabcdefghijkl",
                                      "https://app.example.com/r?access_token=[REDACTED]"])
def test_a_link_carrying_a_credential_or_its_redaction_is_dropped(carrying: str) -> None:
    url, rejected = reauthorize_url(links=LINKS, integration_id="sf-prod", candidates=(carrying,))
    assert url == "https://etl.example.com/connections/sf-prod/reauthorize" and rejected == [carrying]


@pytest.mark.parametrize("url", ["http://localhost/x", "https://10.0.0.1/x", "https://etl.example.com:8443/x"])
def test_an_integrations_link_is_checked_when_the_configuration_loads(url: str) -> None:
    from alerts.config import Integration

    with pytest.raises(ValueError, match="reauthorize link"):
        Integration(id="sf-prod", reauthorize_url=url)


def test_stitchs_app_is_allowed_only_for_stitch_events() -> None:
    page = "https://app.stitchdata.com/client/1/pipeline/v2/sources/1/?next=https://evil.example"
    assert reauthorize_url(links=LINKS, integration_id="x", provider="hubspot", source="native",
                           candidates=(page,)) == (LINKS.reauthorize.replace("{integration_id}", "x"), [page])
    assert reauthorize_url(links=LINKS, integration_id="x", provider="hubspot", source="stitch",
                           candidates=(page,))[0] == page
    # naming the provider is not being Stitch (found by a code review)
    assert reauthorize_url(links=LINKS, integration_id="x", provider="stitch", source="native",
                           candidates=(page,))[1] == [page]


def test_a_link_too_long_for_slack_once_encoded_is_dropped() -> None:
    """2000 characters may hold 1900 emoji: 22,000 once percent-encoded, and Slack refuses the message."""
    long = "https://app.example.com/r?x=" + "\U0001F600" * 1900
    url, rejected = reauthorize_url(links=LINKS, integration_id="x", candidates=(long,))
    assert url == LINKS.reauthorize.replace("{integration_id}", "x") and rejected == [long]
    fits = "https://app.example.com/r?x=" + "a" * 1900
    assert reauthorize_url(links=LINKS, integration_id="x", candidates=(fits,))[0] == fits


@pytest.mark.parametrize(("url", "reason"), [
    ("https://evil.example/x", "host 'evil.example' is not in [links] allowed_hosts"),
    ("http://app.example.com/x", "must be https"),
    ("https://app.example.com/x?access_token=ya29.a0AfH6SMBx3", "carries a credential"),
    ("https://app.example.com/" + "\u2705" * 700, "longer than 2000 characters"),
])
def test_the_log_says_why_an_events_link_was_dropped(make_client, make_settings, caplog, url: str,
                                                     reason: str) -> None:
    """An operator whose button is missing reads in the log what to allow (a generic "not https, not
    allowed, or a credential" left them guessing)."""
    client = make_client(make_settings(links={"allowed_hosts": ["app.example.com"]}))
    with caplog.at_level("WARNING", logger="alerts.ingest"):
        r = client.post("/v1/events", json={"integration_id": "sf", "provider": "salesforce", "reauthorize_url": url,
                                            "error": "invalid_grant: expired access/refresh token"})
    assert r.status_code == 202
    [record] = [r for r in caplog.records if r.getMessage() == "reauthorize link dropped"]
    assert reason in record.reason and record.integration_id == "sf"
    assert "ya29" not in record.url
