"""Routing (pure): routes in order, globs and lists, labels, continue, default receiver, owners."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alerts.routing import facts_of, route_matches, targets_for

FACTS = {
    "integration_id": "sf-prod",
    "integration_name": "Salesforce (prod)",
    "provider": "salesforce",
    "auth_method": "oauth2",
    "code": "salesforce_invalid_grant",
    "base_code": "invalid_grant",
    "severity": "critical",
    "account_id": "00D5",
    "labels": {"team": "revops", "env": "prod"},
}


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param({}, True, id="an empty match matches everything"),
        pytest.param({"integration_id": "sf-*"}, True, id="integration_id glob"),
        pytest.param({"integration_id": "hs-*"}, False, id="integration_id glob miss"),
        pytest.param({"integration_id": "SF-*"}, False, id="globs are case-sensitive"),
        pytest.param({"provider": "salesforce"}, True, id="provider"),
        pytest.param({"provider": "sfdc"}, True, id="a provider alias matches its canonical id"),
        pytest.param({"provider": "sales*"}, True, id="provider glob"),
        pytest.param({"code": "invalid_grant"}, True, id="code matches the base code it refines"),
        pytest.param({"code": "salesforce_*"}, True, id="code matches the refined code"),
        pytest.param({"code": "insufficient_permissions"}, False, id="other code"),
        pytest.param({"severity": "critical"}, True, id="severity"),
        pytest.param({"severity": ["error", "critical"]}, True, id="a list means any of these"),
        pytest.param({"severity": ["info", "warning"]}, False, id="a list none of which matches"),
        pytest.param({"team": "revops"}, True, id="an unknown key names a label"),
        pytest.param({"labels.env": "prod"}, True, id="labels.NAME names a label explicitly"),
        pytest.param({"team": "finance"}, False, id="label value miss"),
        pytest.param({"region": "*"}, False, id="a missing label never matches, not even *"),
        pytest.param({"team": "revops", "severity": "warning"}, False, id="every matcher must hold"),
        pytest.param({"auth_method": "oauth2", "account_id": "00D*"}, True, id="auth_method and account_id"),
    ],
)
def test_route_matches(match, expected) -> None:
    assert route_matches(match, FACTS) is expected


RECEIVERS = [
    {"name": "data-team", "slack": {"channel": "#data-alerts"}, "email": {"to": ["data@example.com"]}},
    {"name": "revops", "email": {"to": ["revops@example.com"], "owner": True}},
    {"name": "owners", "email": {"owner": True}},
    {"name": "security", "slack": {"channel": "#sec"}},
]


def settings_with(make_settings, routes, **alerting):
    return make_settings(
        slack={"bot_token": "xoxb-1234567890-abcdefghij", "base_url": "https://slack.com/api"},
        email={"host": "smtp.example.com"},
        receivers=RECEIVERS,
        routes=routes,
        alerting=alerting,
    )


def names(targets):
    return [(t.receiver, t.channel) for t in targets]


def test_first_matching_route_decides(make_settings) -> None:
    s = settings_with(make_settings, [
        {"match": {"team": "revops"}, "receivers": ["revops"]},
        {"match": {"provider": "salesforce"}, "receivers": ["security"]},
    ])
    assert names(targets_for(FACTS, s)) == [("revops", "email")]


def test_continue_collects_later_matches_without_duplicates(make_settings) -> None:
    s = settings_with(make_settings, [
        {"match": {"severity": "critical"}, "receivers": ["security", "revops"], "continue": True},
        {"match": {"code": "nomatch"}, "receivers": ["data-team"]},
        {"match": {"team": "revops"}, "receivers": ["revops", "data-team"]},
        {"match": {}, "receivers": ["owners"]},  # not reached: the previous route did not continue
    ])
    assert names(targets_for(FACTS, s)) == [
        ("security", "slack"), ("revops", "email"), ("data-team", "slack"), ("data-team", "email")]


def test_unmatched_alerts_go_to_the_default_receiver_else_the_first(make_settings) -> None:
    routes = [{"match": {"provider": "hubspot"}, "receivers": ["security"]}]
    assert names(targets_for(FACTS, settings_with(make_settings, routes))) == [
        ("data-team", "slack"), ("data-team", "email")]
    s = settings_with(make_settings, routes, default_receiver="security")
    assert names(targets_for(FACTS, s)) == [("security", "slack")]


def test_a_matching_route_with_no_receivers_drops_the_alert(make_settings) -> None:
    s = settings_with(make_settings, [{"match": {"labels.env": "staging"}, "receivers": []},
                                      {"match": {}, "receivers": ["security"]}])
    assert names(targets_for({**FACTS, "labels": {"env": "staging"}}, s)) == []
    assert names(targets_for(FACTS, s)) == [("security", "slack")]


def test_owner_addresses_join_receivers_that_ask_for_them(make_settings) -> None:
    s = settings_with(make_settings, [{"match": {}, "receivers": ["revops", "owners", "data-team"]}])
    targets = targets_for(FACTS, s, owner="alice@example.com")
    assert [(t.receiver, t.address.get("to")) for t in targets if t.channel == "email"] == [
        ("revops", ["revops@example.com", "alice@example.com"]),
        ("owners", ["alice@example.com"]),
        ("data-team", ["data@example.com"]),  # did not ask for the owner
    ]
    # without a known owner, a receiver that only emails owners has nothing to send
    assert [t.receiver for t in targets_for(FACTS, s) if t.channel == "email"] == ["revops", "data-team"]
    # the owner is not added twice
    again = targets_for(FACTS, s, owner="REVOPS@example.com")
    assert again[0].address["to"] == ["revops@example.com"]


def test_no_receivers_means_the_file_sink(settings) -> None:
    assert names(targets_for(FACTS, settings)) == [("file", "file")]


def test_facts_of_an_alert_row() -> None:
    row = SimpleNamespace(integration_id="x", integration_name=None, provider=None, auth_method=None,
                          code="invalid_grant", severity="critical", account_id=None, labels=None)
    facts = facts_of(row)
    assert facts["base_code"] == "invalid_grant" and facts["labels"] == {} and facts["provider"] == ""


def test_route_match_lists_load_from_config(make_settings) -> None:
    s = settings_with(make_settings, [{"match": {"severity": ["error", "critical"]}, "receivers": ["security"]}])
    assert s.routes[0].match == {"severity": ["error", "critical"]}
