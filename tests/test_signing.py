"""Signatures (R1.1–R1.6): Standard Webhooks on POST /v1/events, Fivetran's HMAC, rotation, windows, replay."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from alerts.config import ConfigError, load_settings
from alerts.sources import signing
from alerts.sources.signing import Unauthenticated, sign_fivetran, sign_standard
from tests import webhook_kit as kit
from tests.helpers import SF, alerts, events

BODY = kit.dumps(SF)


def test_standard_webhooks_known_answer() -> None:
    """The example from the Standard Webhooks specification."""
    assert sign_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                         b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def signed(make_client, make_settings):
    return make_client(make_settings(webhooks=kit.hooks(native={"secrets": [kit.NATIVE, kit.NATIVE_OLD]})))


def _refused(client, response, reason: str) -> None:
    assert kit.is_problem(response, 401), response.text
    assert kit.counts(client.app.state.engine) == (0, 0, 0)
    assert client.app.state.webhook_guard.refusal_count(source="native", reason=reason) >= 1


def test_native_valid_signature_is_accepted_and_webhook_id_is_the_key(signed) -> None:
    r = kit.native(signed, BODY, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    assert r.status_code == 202 and r.json()["accepted"] == 1
    [ev] = events(signed.app.state.engine)
    assert ev.event_id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def test_native_replay_is_acknowledged_not_counted(signed, clock) -> None:
    first = kit.native(signed, BODY, msg_id="msg_replay")
    clock.advance(seconds=30)  # the sender retries with a fresh timestamp and the same id
    again = kit.native(signed, BODY, msg_id="msg_replay")
    assert first.json()["accepted"] == 1
    assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicates": 1, "alert_ids": []}
    assert len(events(signed.app.state.engine)) == 1 and alerts(signed.app.state.engine)[0].count == 1


def test_native_array_gets_one_key_per_event(signed) -> None:
    body = kit.dumps([SF, {**SF, "event_id": "own-id"}, SF])
    assert kit.native(signed, body, msg_id="msg_batch").json()["accepted"] == 3
    assert sorted(e.event_id for e in events(signed.app.state.engine)) == ["msg_batch#0", "msg_batch#2", "own-id"]
    assert kit.native(signed, body, msg_id="msg_batch").json()["duplicates"] == 3
    # a later delivery whose own id reads like one of those is another delivery, not a replay
    later = kit.native(signed, kit.dumps({**SF, "integration_id": "other"}), msg_id="msg_batch-2")
    assert later.json()["accepted"] == 1 and len(events(signed.app.state.engine)) == 4
    # nor can a delivery's id claim another source's (found by a code review: "stitch-job-42")
    kit.native(signed, kit.dumps({**SF, "integration_id": "third"}), msg_id="stitch-job-42")
    assert "native-stitch-job-42" in {e.event_id for e in events(signed.app.state.engine)}


def test_native_rotated_secret_passes(signed) -> None:
    assert kit.native(signed, BODY, secret=kit.NATIVE_OLD).status_code == 202
    value = signed.app.state.webhook_guard.registry.get_sample_value
    assert value("alerts_webhook_secret_matches_total", {"source": "native", "index": "1"}) == 1


def test_native_one_of_several_signatures_may_match(signed) -> None:
    ts = int(signed.app.state.clock().timestamp())
    good = sign_standard(kit.NATIVE, "msg_multi", ts, BODY)
    other = sign_standard("whsec_" + base64.b64encode(b"z" * 32).decode(), "msg_multi", ts, BODY)
    header = f"v2,abc {other} v1,!!notbase64 {good}"
    assert kit.native(signed, BODY, msg_id="msg_multi", timestamp=ts, signature=header).status_code == 202


def test_native_wrong_secret(signed) -> None:
    wrong = "whsec_" + base64.b64encode(b"w" * 32).decode()
    _refused(signed, kit.native(signed, BODY, secret=wrong), "bad_signature")


def test_native_body_altered_by_one_byte(signed) -> None:
    ts = int(signed.app.state.clock().timestamp())
    sig = sign_standard(kit.NATIVE, "msg_1", ts, BODY)
    altered = BODY.replace(b"sf-prod", b"sf-prOd")
    assert len(altered) == len(BODY)
    _refused(signed, kit.native(signed, altered, msg_id="msg_1", timestamp=ts, signature=sig), "bad_signature")
    _refused(signed, kit.native(signed, BODY + b" ", msg_id="msg_1", timestamp=ts, signature=sig), "bad_signature")
    # the id and the timestamp are signed too
    _refused(signed, kit.native(signed, BODY, msg_id="msg_2", timestamp=ts, signature=sig), "bad_signature")
    _refused(signed, kit.native(signed, BODY, msg_id="msg_1", timestamp=ts - 1, signature=sig), "bad_signature")


@pytest.mark.parametrize("skew", [-301, 301, -3600, 86400], ids=["5m-old", "5m-ahead", "1h-old", "1d-ahead"])
def test_native_stale_timestamp_either_direction(signed, skew) -> None:
    ts = int(signed.app.state.clock().timestamp()) + skew
    r = kit.native(signed, BODY, timestamp=ts)
    _refused(signed, r, "timestamp_out_of_tolerance")
    assert r.json()["code"] == "timestamp_out_of_tolerance"


@pytest.mark.parametrize("skew", [-299, 299])
def test_native_timestamp_inside_tolerance(signed, skew) -> None:
    ts = int(signed.app.state.clock().timestamp()) + skew
    assert kit.native(signed, BODY, timestamp=ts).status_code == 202


def test_native_tolerance_is_configurable(make_client, make_settings) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(native={"tolerance": "60s"})))
    ts = int(client.app.state.clock().timestamp()) - 90
    assert kit.native(client, BODY, timestamp=ts).status_code == 401


MALFORMED = [
    pytest.param({"webhook-id": None}, "missing_header", id="missing-id"),
    pytest.param({"webhook-timestamp": None}, "missing_header", id="missing-timestamp"),
    pytest.param({"webhook-signature": None}, "missing_header", id="missing-signature"),
    pytest.param({"webhook-id": "msg.1"}, "malformed_header", id="dot-in-id"),
    pytest.param({"webhook-id": "m" * 129}, "malformed_header", id="id-too-long"),
    pytest.param({"webhook-timestamp": "1.5"}, "malformed_header", id="timestamp-not-digits"),
    pytest.param({"webhook-timestamp": "12345678901"}, "malformed_header", id="timestamp-11-digits"),
    pytest.param({"webhook-timestamp": "-5"}, "malformed_header", id="negative-timestamp"),
    pytest.param({"webhook-signature": "v1,%%%"}, "malformed_header", id="signature-not-base64"),
    pytest.param({"webhook-signature": "v1," + base64.b64encode(b"short").decode()}, "malformed_header",
                 id="signature-wrong-length"),
    pytest.param({"webhook-signature": "v1a,abc"}, "malformed_header", id="unknown-scheme"),
    pytest.param({"webhook-signature": "x" * 5000}, "malformed_header", id="huge-header"),
]


@pytest.mark.parametrize(("change", "reason"), MALFORMED)
def test_native_malformed_headers_are_401_never_500(signed, change, reason) -> None:
    ts = str(int(signed.app.state.clock().timestamp()))
    headers = {**kit.JSON, "webhook-id": "msg_1", "webhook-timestamp": ts,
               "webhook-signature": sign_standard(kit.NATIVE, "msg_1", ts, BODY)}
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    _refused(signed, signed.post("/v1/events", content=BODY, headers=headers), reason)


def test_native_unsigned_accepted_while_no_secret(client) -> None:
    r = client.post("/v1/events", content=BODY, headers=kit.JSON)
    assert r.status_code == 202
    # signature headers from a sender configured ahead of us are ignored, not refused
    assert kit.native(client, BODY, secret="whsec_" + base64.b64encode(b"q" * 32).decode()).status_code == 202


def test_native_expired_secret_is_no_longer_accepted(make_client, make_settings, clock) -> None:
    retire = (clock.now + timedelta(hours=1)).isoformat()
    client = make_client(make_settings(webhooks=kit.hooks(
        native={"secrets": [kit.NATIVE, {"value": kit.NATIVE_OLD, "not_after": retire}]})))
    assert kit.native(client, BODY, secret=kit.NATIVE_OLD, msg_id="before").status_code == 202
    clock.advance(hours=2)
    assert kit.native(client, BODY, secret=kit.NATIVE_OLD, msg_id="after").status_code == 401
    assert kit.native(client, BODY, secret=kit.NATIVE, msg_id="current").status_code == 202


def test_removing_a_secret_takes_effect_without_restart(make_client, make_settings) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(native={"secrets": [kit.NATIVE, kit.NATIVE_OLD]})))
    assert kit.native(client, BODY, secret=kit.NATIVE_OLD, msg_id="a").status_code == 202
    client.app.state.settings = make_settings(webhooks=kit.hooks())  # what a config reload installs
    assert kit.native(client, BODY, secret=kit.NATIVE_OLD, msg_id="b").status_code == 401
    assert kit.native(client, BODY, secret=kit.NATIVE, msg_id="c").status_code == 202


# -- Fivetran -----------------------------------------------------------------------------------------


@pytest.fixture
def ft(make_client, make_settings):
    return make_client(make_settings(webhooks=kit.hooks(fivetran={"secrets": [kit.FIVETRAN, kit.FIVETRAN_OLD]})))


FAILURE = kit.load("fivetran_sync_end_failure.json")


def _ft_refused(client, r, reason) -> None:
    assert kit.is_problem(r, 401), r.text
    assert kit.counts(client.app.state.engine) == (0, 0, 0)
    assert client.app.state.webhook_guard.refusal_count(source="fivetran", reason=reason) >= 1


def test_fivetran_signature_any_case(ft) -> None:
    lower = sign_fivetran(kit.FIVETRAN, FAILURE).lower()
    assert kit.fivetran(ft, FAILURE, headers={"X-Fivetran-Signature-256": lower}).status_code == 200
    assert kit.fivetran(ft, FAILURE).status_code == 200  # upper case, as Fivetran sends it (a replay now)


def test_fivetran_rotated_secret(ft) -> None:
    assert kit.fivetran(ft, FAILURE, secret=kit.FIVETRAN_OLD).status_code == 200


def test_fivetran_wrong_secret(ft) -> None:
    _ft_refused(ft, kit.fivetran(ft, FAILURE, secret="not-the-fivetran-secret-at-all"), "bad_signature")


def test_fivetran_missing_and_non_hex_header(ft) -> None:
    _ft_refused(ft, ft.post("/v1/webhooks/fivetran", content=FAILURE, headers=kit.JSON), "missing_header")
    for bad in ("zz" * 32, "ab" * 31, "sha256=" + "ab" * 32, ""):
        r = kit.fivetran(ft, FAILURE, headers={"X-Fivetran-Signature-256": bad})
        _ft_refused(ft, r, "malformed_header")


def test_fivetran_body_altered_by_one_byte(ft) -> None:
    sig = sign_fivetran(kit.FIVETRAN, FAILURE)
    altered = FAILURE.replace(b"mystified_presiding", b"mystified_presidinG")
    r = kit.fivetran(ft, altered, headers={"X-Fivetran-Signature-256": sig})
    _ft_refused(ft, r, "bad_signature")


@pytest.mark.parametrize("created", ["2026-11-27T08:59:59Z", "2026-11-28T09:05:01Z", "2019-01-01T00:00:00Z"],
                         ids=["24h-and-1s-old", "5m-and-1s-ahead", "years-old"])
def test_fivetran_created_outside_the_window(ft, created) -> None:
    body = kit.load_json("fivetran_sync_end_failure.json")
    body["created"] = created
    r = kit.fivetran(ft, kit.dumps(body))
    _ft_refused(ft, r, "timestamp_out_of_tolerance")
    assert r.json()["code"] == "timestamp_out_of_tolerance"


@pytest.mark.parametrize("created", ["2026-11-27T09:00:01Z", "2026-11-28T09:04:59Z"])
def test_fivetran_created_inside_the_window(ft, created) -> None:
    body = kit.load_json("fivetran_sync_end_failure.json")
    body["created"] = created
    assert kit.fivetran(ft, kit.dumps(body)).status_code == 200


def test_fivetran_test_event_needs_a_signature_too(ft) -> None:
    body = kit.load("fivetran_test_event.json")
    _ft_refused(ft, kit.fivetran(ft, body, secret="x" * 40), "bad_signature")
    assert kit.fivetran(ft, body).status_code == 200


# -- the verifiers on their own -----------------------------------------------------------------------


def test_token_match_is_exact_and_tries_every_candidate(clock) -> None:
    s = load_settings(None, webhooks={"airbyte": {"secrets": ["a" * 24, "b" * 30]}})
    keys = signing.candidates(s.webhooks.airbyte.secrets, now=clock.now)
    assert signing.match_token("b" * 30, keys).index == 1
    for bad in ("a" * 23, "a" * 25, "A" * 24, "", None, "a" * 24 + "\x00"):
        with pytest.raises(Unauthenticated):
            signing.match_token(bad, keys)


def test_bearer_parsing() -> None:
    assert signing.bearer_token("Bearer abc") == "abc"
    assert signing.bearer_token("bearer   abc  ") == "abc"
    assert signing.bearer_token("Basic abc") is None
    assert signing.bearer_token("Bearer") is None
    assert signing.bearer_token(None) is None


# -- configuration ------------------------------------------------------------------------------------


BAD_CONFIG = [
    pytest.param({"fivetran": {"secrets": ["CANARY-tiny"]}}, "shorter than 24 bytes", id="short-secret"),
    pytest.param({"pagerduty": {"secrets": [{"value": "CANARY-pd"}]}}, "shorter than 24 bytes", id="short-routing-key"),
    pytest.param({"native": {"secrets": ["not-a-standard-webhooks-secret-0000"]}}, "whsec_", id="native-not-whsec"),
    pytest.param({"native": {"secrets": ["whsec_" + base64.b64encode(b"x" * 16).decode()]}}, "whsec_",
                 id="native-key-too-short"),
    pytest.param({"airbyte": {"secrets": ["CANARY/with/slashes-0000000000"]}}, "URL path", id="path-token-chars"),
    pytest.param({"native": {"tolerance": "30s"}}, "between 60s and 15m", id="tolerance-too-short"),
    pytest.param({"native": {"tolerance": "1h"}}, "between 60s and 15m", id="tolerance-too-long"),
    pytest.param({"fivetran": {"tolerance": "10m"}}, "unknown key", id="tolerance-only-native"),
    pytest.param({"native": {"allow_unsigned": True}}, "unknown key", id="native-has-no-allow-unsigned"),
    pytest.param({"fivetran": {"secrets": [{"value": "v" * 30, "not_after": "2026-12-01T00:00:00"}]}}, "timezone",
                 id="naive-not_after"),
    pytest.param({"alertmanager": {"labels": {"team": "x"}}}, "unknown field", id="unknown-label-field"),
    pytest.param({"gitlab": {"secrets": []}}, "unknown key", id="unknown-kind"),
]


@pytest.mark.parametrize(("section", "message"), BAD_CONFIG)
def test_webhook_config_is_checked_at_load(section, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, webhooks=section)
    assert message in str(info.value) and str(info.value).startswith("config error: webhooks.")
    assert "CANARY" not in str(info.value)


def test_webhook_secrets_never_in_repr_or_dump() -> None:
    s = load_settings(None, webhooks=kit.hooks(), fivetran={"api_key": "CANARY-fivetran-key", "api_secret": "CANARY-ft-s"})
    dumped = repr(s) + s.model_dump_json() + json.dumps(s.redacted_dump())
    for secret in (kit.NATIVE, kit.FIVETRAN, kit.AIRBYTE, kit.ALERTMANAGER, kit.PAGERDUTY, "CANARY-f"):
        assert secret not in dumped


def test_fivetran_api_config() -> None:
    with pytest.raises(ConfigError, match="both api_key and api_secret"):
        load_settings(None, fivetran={"api_key": "k"})
    with pytest.raises(ConfigError, match="allow_loopback_base_url"):
        load_settings(None, fivetran={"base_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="https"):
        load_settings(None, fivetran={"base_url": "http://api.example.com"})
    assert load_settings(None, fivetran={"api_key": "k", "api_secret": "s"}).fivetran.configured
