"""Hostile input at every event/webhook endpoint (hypothesis): never a 5xx, nothing stored from a
refused request, every refusal is problem+json, and the server still serves afterwards.

Bodies are random bytes, random JSON (huge integers, NaN, deep nesting, odd Unicode), and the
vendors' documented payloads with random values grafted in; each is sent both unauthenticated
(random or missing credentials) and correctly authenticated, so the adapters behind the verifiers
get hostile JSON too.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from alerts.sources.signing import sign_fivetran, sign_standard
from tests import webhook_kit as kit

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

PAYLOADS = {
    "fivetran": ["fivetran_sync_end_failure.json", "fivetran_sync_end_success.json", "fivetran_test_event.json",
                 "fivetran_connection_failure.json"],
    "airbyte": ["airbyte_failed_sync.json", "airbyte_successful_sync.json", "airbyte_failed_sync_docs.json"],
    "alertmanager": ["alertmanager_firing.json", "grafana_firing.json", "alertmanager_resolved.json"],
    "pagerduty": ["pagerduty_trigger.json", "pagerduty_resolve.json", "pagerduty_acknowledge.json"],
    "native": [],
}

NATIVE_EVENT = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant", "labels": {"team": "a"}}

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["", "FAILURE", "SUCCESSFUL", "sync_end", "test_event", "firing", "resolved", "trigger",
                              "resolve", "acknowledge", "2026-11-28T08:59:00Z", "0001-01-01T00:00:00Z",
                              "\u202e\x1b[31m\ud800", "a" * 5000, "invalid_grant", "../../etc/passwd"]))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c,
                                                                                           max_size=4), max_leaves=25)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def grafted(draw: Any, kind: str) -> bytes:
    """A documented payload with random values put at random places (one level or two deep)."""
    names = PAYLOADS[kind]
    base: Any = kit.load_json(draw(st.sampled_from(names))) if names else json.loads(json.dumps(NATIVE_EVENT))
    for _ in range(draw(st.integers(1, 4))):
        target = base
        if isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], dict):
                target = target[key]
            elif isinstance(target[key], list) and target[key] and isinstance(target[key][0], dict):
                target = target[key][0]
        if isinstance(target, dict):
            key = draw(st.sampled_from(sorted(target) or ["x"]) | st.text(max_size=8))
            target[key] = draw(json_values)
    return _dumps(base)


def bodies(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=600),
        json_values.map(_dumps),
        grafted(kind),
        grafted(kind),
        st.sampled_from(PAYLOADS[kind]).map(kit.load) if PAYLOADS[kind] else st.just(kit.dumps(NATIVE_EVENT)),
        st.integers(1, 60).map(lambda n: b"[" * n * 2 + b"]" * n * 2),
        st.sampled_from([b"", b"\xef\xbb\xbf{}", b'{"a":1,"a":2}', b"NaN", b"1e999", b"-0", b'"\\ud800"',
                         b"{" * 40 + b"}" * 40, b'{"data": ' * 33 + b"1" + b"}" * 33]),
    )


header_values = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")) | st.sampled_from(
    [b"", b"v1,", b"v1,AAAA", b"Bearer", b"Bearer ", b"sha256=00", b"0" * 64, b"\xff\xfe", b"9" * 11])
content_types = st.one_of(  # mostly JSON, so most bodies get past the cheap checks
    st.just("application/json"), st.just("application/json; charset=utf-8"), st.just("APPLICATION/JSON"),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "", "application/json;;;", "application/jsonx"]))


@pytest.fixture
def target(make_client, make_settings):
    client = make_client(make_settings(webhooks=kit.hooks(max_unauthorized_per_minute=1_000_000)))
    yield client
    # afterwards: the server is healthy and a good request still works
    assert client.get("/healthz").status_code == 200
    assert kit.fivetran(client, kit.load("fivetran_test_event.json")).status_code == 200
    assert client.post("/v1/events", content=kit.dumps({"integration_id": "after", "error": "invalid_grant"}),
                       headers={**kit.JSON, **_native_headers(client, kit.dumps(
                           {"integration_id": "after", "error": "invalid_grant"}), "msg_after")}).status_code == 202


def _native_headers(client: Any, body: bytes, msg_id: str) -> dict[str, str]:
    ts = int(client.app.state.clock().timestamp())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign_standard(kit.NATIVE, msg_id, ts, body)}


def _check(client: Any, response: Any, before: tuple[int, int, int]) -> None:
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows how deep the bodies got
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == response.status_code
        if "/v1/webhooks/" in str(response.url):
            assert "instance" not in body  # a webhook path may carry a token: never echoed
        assert kit.counts(client.app.state.engine) == before, response.text


@FUZZ
@given(body=bodies("fivetran"), ctype=content_types, sig=header_values, authentic=st.booleans())
def test_fivetran(target, body, ctype, sig, authentic) -> None:
    before = kit.counts(target.app.state.engine)
    signature = sign_fivetran(kit.FIVETRAN, body).encode() if authentic else sig
    r = target.post("/v1/webhooks/fivetran", content=body,
                    headers={"content-type": ctype, "x-fivetran-signature-256": signature})
    _check(target, r, before)


@FUZZ
@given(body=bodies("airbyte"), ctype=content_types, token=st.text(max_size=60), authentic=st.booleans())
def test_airbyte(target, body, ctype, token, authentic) -> None:
    before = kit.counts(target.app.state.engine)
    path = f"/v1/webhooks/airbyte/{kit.AIRBYTE if authentic else quote(token, safe='')}"
    r = target.post(path, content=body, headers={"content-type": ctype})
    _check(target, r, before)
    assert kit.AIRBYTE not in r.text


@FUZZ
@given(body=bodies("alertmanager"), ctype=content_types, auth=header_values, authentic=st.booleans())
def test_alertmanager(target, body, ctype, auth, authentic) -> None:
    before = kit.counts(target.app.state.engine)
    authorization = f"Bearer {kit.ALERTMANAGER}".encode() if authentic else auth
    r = target.post("/v1/webhooks/alertmanager", content=body,
                    headers={"content-type": ctype, "authorization": authorization})
    _check(target, r, before)


@FUZZ
@given(body=bodies("pagerduty"), ctype=content_types, authentic=st.booleans())
def test_pagerduty(target, body, ctype, authentic) -> None:
    before = kit.counts(target.app.state.engine)
    if authentic:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data["routing_key"] = kit.PAGERDUTY
            body = _dumps(data)
    r = target.post("/v1/webhooks/pagerduty", content=body, headers={"content-type": ctype})
    _check(target, r, before)


@FUZZ
@given(body=bodies("native"), ctype=content_types, msg_id=header_values, stamp=header_values,
       sig=header_values, authentic=st.booleans())
def test_native_events(target, body, ctype, msg_id, stamp, sig, authentic) -> None:
    before = kit.counts(target.app.state.engine)
    if authentic:
        headers: dict[str, Any] = {"content-type": ctype, **_native_headers(target, body, "msg_fuzz")}
    else:
        headers = {"content-type": ctype, "webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": sig}
    r = target.post("/v1/events", content=body, headers=headers)
    _check(target, r, before)


@FUZZ
@given(kind=st.text(min_size=1, max_size=20), rest=st.text(max_size=20), body=st.binary(max_size=200),
       ctype=content_types)
def test_unknown_sources(target, kind, rest, body, ctype) -> None:
    before = kit.counts(target.app.state.engine)
    path = f"/v1/webhooks/{quote(kind, safe='')}" + (f"/{quote(rest, safe='')}" if rest else "")
    r = target.post(path, content=body, headers={"content-type": ctype})
    assert r.status_code < 500
    if r.status_code >= 400:
        assert kit.counts(target.app.state.engine) == before
