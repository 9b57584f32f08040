"""The error catalog against the messages real providers send (tests/data/catalog_corpus.jsonl).

Each corpus line is a real message with its source noted (provider docs, public issue trackers of Singer
taps, Airbyte connectors and client libraries) and the code it must get, or null for the near-misses that
must classify as nothing. Texts go through ``sanitize`` first, as at ingest and in ``alerts explain``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.catalog import Catalog, canonical_provider, load_catalog
from alerts.models import BASE_CODES
from alerts.redact import sanitize

IN_CI = os.environ.get("CI", "").lower() == "true"
CORPUS_PATH = Path(__file__).parent / "data" / "catalog_corpus.jsonl"
CORPUS = [json.loads(line) for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def _id(i: int, row: dict) -> str:
    words = re.sub(r"[^A-Za-z0-9_.:#-]+", " ", row["text"]).split()
    return f"{i:03d} {row.get('provider') or '-'} {' '.join(words)[:60]}"


def classify(catalog: Catalog, text: str, provider: str | None = None, auth: str | None = None) -> str | None:
    found = catalog.classify(sanitize(text), provider, auth)
    return found.entry.code if found else None


# -- the corpus, line by line -------------------------------------------------------------------


@pytest.mark.parametrize("row", [pytest.param(r, id=_id(i, r)) for i, r in enumerate(CORPUS)])
def test_corpus_line(catalog: Catalog, row: dict) -> None:
    found = catalog.classify(sanitize(row["text"]), row.get("provider"), row.get("auth_method"))
    if row["expected"] is None:
        assert found is None, f"near-miss classified as {found.entry.code} by {found.match}"
        return
    assert found is not None, "an authentication failure classified as nothing"
    assert (found.entry.code, found.entry.base_code) == (row.get("expected_code") or row["expected"], row["expected"])
    assert found.match is not None and found.match.text  # explain can show why


def test_corpus_shape_and_scores(catalog: Catalog) -> None:
    """At least 150 real messages, a third of them negatives, every one with its source; report the scores."""
    assert len(CORPUS) >= 150
    negatives = [r for r in CORPUS if r["expected"] is None]
    assert len(negatives) * 3 >= len(CORPUS)
    assert all(r.get("source") for r in CORPUS)
    assert {r["expected"] for r in CORPUS} - {None} <= set(BASE_CODES)
    assert all(catalog.get(r["expected_code"]).refines == r["expected"] for r in CORPUS if r.get("expected_code"))

    right = fp = 0
    for r in CORPUS:
        got = classify(catalog, r["text"], r.get("provider"), r.get("auth_method"))
        right += got == (r.get("expected_code") or r["expected"])
        fp += got is not None and r["expected"] is None
    accuracy, fpr = right / len(CORPUS), fp / len(negatives)
    print(f"\ncatalog corpus: {len(CORPUS)} messages ({len(negatives)} negatives): "
          f"accuracy {accuracy:.1%}, false-positive rate {fpr:.1%}")
    assert accuracy == 1.0 and fpr == 0.0


def test_corpus_without_hints_still_mostly_right(catalog: Catalog) -> None:
    """Generality: with neither provider nor auth method given, the wording alone carries most lines,
    and no near-miss turns into an alert."""
    right = fp = 0
    for r in CORPUS:
        got = classify(catalog, r["text"])
        right += got == (r.get("expected_code") or r["expected"])
        fp += got is not None and r["expected"] is None
    assert fp == 0
    assert right / len(CORPUS) >= 0.95


# -- held-out messages: not in the corpus, to show the patterns are general ----------------------

HELD_OUT = [
    # (text, provider, auth_method, expected code)
    pytest.param("google.auth.exceptions.RefreshError: ('invalid_grant: Invalid JWT Signature.', "
                 "{'error': 'invalid_grant', 'error_description': 'Invalid JWT Signature.'})", "bigquery", None,
                 "invalid_client", id="google service-account key deleted is the client's credential"),
    pytest.param("There was a problem refreshing your current auth tokens: invalid_grant: Invalid JWT: Token must "
                 "be a short-lived token and in a reasonable timeframe", "google", "oauth2", None,
                 id="clock skew is not a credential problem"),
    pytest.param("requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: "
                 "https://oauth2.googleapis.com/token", None, None, "invalid_client",
                 id="401 from a token endpoint is the client failing to authenticate"),
    pytest.param("tap-xero | CRITICAL 400 Client Error: Bad Request for url: https://identity.xero.com/connect/token",
                 "tap-xero", None, "invalid_grant", id="400 from a token endpoint is a refused refresh"),
    pytest.param("urllib.error.HTTPError: HTTP Error 401: Unauthorized", None, None, "access_token_expired",
                 id="urllib's 401 form"),
    pytest.param("Failure in source: Unauthorized. Please ensure you are authenticated correctly.", "source-zendesk",
                 "oauth2", "access_token_expired", id="Airbyte CDK's 401 message"),
    pytest.param("Forbidden. You don't have permission to access this resource.", None, None,
                 "insufficient_permissions", id="Airbyte CDK's 403 message"),
    pytest.param("250001 (08001): Failed to connect to DB: xy12345.snowflakecomputing.com:443. Multi-factor "
                 "authentication is required for this account. Log in to Snowsight to enroll.", "snowflake", "basic",
                 "mfa_required", id="Snowflake MFA enforcement for password users"),
    pytest.param("stripe.error.PermissionError: The provided key 'sk_live_****1234' does not have access to account "
                 "'acct_1Abc' (or that account does not exist). Application access may have been revoked.",
                 "stripe", None, "app_deauthorized", id="Stripe Connect account disconnected the platform"),
    pytest.param('psql: error: connection to server failed: FATAL:  password authentication failed for user "loader"',
                 "redshift", "basic", "invalid_credentials", id="Redshift speaks PostgreSQL's wording"),
    pytest.param('FATAL:  role "etl" is not permitted to log in', "tap-postgres", None, "account_locked",
                 id="PostgreSQL NOLOGIN role"),
    pytest.param("Login failed for user 'etl'. Reason: The account is disabled. (18470)", "azure_sql_db", None,
                 "account_locked", id="SQL Server disabled login"),
    pytest.param("ERROR 1227 (42000): Access denied; you need (at least one of) the SUPER privilege(s) for this "
                 "operation", "mysql", None, "insufficient_permissions", id="MySQL missing global privilege"),
    pytest.param("cx_Oracle.DatabaseError: ORA-01017: invalid username/password; logon denied", "oracle", "basic",
                 "invalid_credentials", id="Oracle wrong password"),
    pytest.param("OAuth2 token error: invalid_grant: user hasn't approved this consumer", "salesforce_sandbox", None,
                 "consent_required", id="Salesforce JWT flow without pre-authorization"),
    pytest.param("AADSTS50105: Your administrator has configured the application Fivetran ('0000') to block users "
                 "unless they are specifically granted ('assigned') access to the application.", "entra", None,
                 "insufficient_permissions", id="Entra user unassigned from the app"),
    pytest.param("google.ads.googleads.errors.GoogleAdsException: authentication_error: OAUTH_TOKEN_EXPIRED",
                 "google_ads", None, "access_token_expired", id="Google Ads enum"),
    pytest.param("{\"error\":{\"message\":\"(#200) Requires ads_management permission to manage the object\","
                 "\"type\":\"OAuthException\",\"code\":200}}", None, None, "insufficient_permissions",
                 id="Graph permission error without a provider hint"),
    pytest.param("slack_sdk.errors.SlackApiError: The server responded with: {'ok': False, 'error': 'token_expired'}",
                 "slack", None, "access_token_expired", id="Slack token rotation"),
    pytest.param("Although you appear to have the correct authorization credentials, the `acme` organization has an "
                 "IP allow list enabled, and your IP address is not permitted to access this resource.", "github",
                 "api_key", None, id="GitHub IP allow list is not a credential problem"),
    pytest.param("googleapiclient.errors.HttpError: <HttpError 403 ... returned \"Google Sheets API has not been used "
                 "in project 123456 before or it is disabled.\". Details: \"PERMISSION_DENIED\" SERVICE_DISABLED",
                 "google", "oauth2", None, id="a disabled Google API is a setup step"),
    pytest.param("PermissionError: [Errno 13] Permission denied: '/var/lib/airflow/logs/dag/task/1.log'", None, None,
                 None, id="filesystem permission errors are not integrations"),
    pytest.param('File "/app/django/contrib/auth/decorators.py", line 23, in login_required', None, None, None,
                 id="django's login_required in a traceback"),
    pytest.param("INFO token refreshed; refresh_token_expires_in=8726400 access_token_expires_in=3600", None, "oauth2",
                 None, id="token lifetimes in a success line"),
    pytest.param('127.0.0.1 - - [01/Jan/2024:00:00:01 +0000] "GET /metrics HTTP/1.1" 401 12 "-" "curl/8.0"', None,
                 None, None, id="an access log line of some other server"),
    pytest.param("INFO Deleted 401 stale sessions; 0 unauthorized requests in the last hour", None, None, None,
                 id="numbers near the word unauthorized are not a 401 error"),
]


@pytest.mark.parametrize("text,provider,auth,expected", HELD_OUT)
def test_held_out(catalog: Catalog, text: str, provider: str | None, auth: str | None, expected: str | None) -> None:
    assert classify(catalog, text, provider, auth) == expected


# -- hints: the same words mean different things --------------------------------------------------

INVALID_AUTHORIZATION = "HTTP-error-code: 401, Error: Invalid authorization credentials."


@pytest.mark.parametrize("provider,auth,expected", [
    pytest.param(None, "api_key", "invalid_api_key", id="an API-key integration"),
    pytest.param("stripe", None, "invalid_api_key", id="a provider known for API keys"),
    pytest.param(None, "oauth2", "access_token_expired", id="an OAuth integration"),
    pytest.param("tap-salesforce", None, "access_token_expired", id="a provider known for OAuth"),
    pytest.param(None, "basic", "invalid_credentials", id="a password integration"),
    pytest.param("stripe", "oauth2", "access_token_expired", id="the auth method beats the provider's usual one"),
])
def test_hints_decide_ambiguous_wording(catalog: Catalog, provider: str | None, auth: str | None,
                                        expected: str) -> None:
    assert classify(catalog, INVALID_AUTHORIZATION, provider, auth) == expected


@pytest.mark.parametrize("text,provider,by_auth", [
    pytest.param('{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}', "shopify",
                 {"api_key": "invalid_api_key", "oauth2": "access_token_expired"}, id="shopify"),
    pytest.param('{"error":"Couldn\'t authenticate you"}', "zendesk",
                 {"api_key": "invalid_api_key", "oauth2": "access_token_expired", "basic": "invalid_credentials"},
                 id="zendesk"),
    pytest.param('{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}', "github",
                 {"api_key": "invalid_api_key", "oauth2": "access_token_expired"}, id="github"),
    pytest.param('{"error":"invalid_grant","error_description":"authentication failure"}', "salesforce",
                 {"basic": "invalid_credentials", "oauth2": "invalid_grant"}, id="salesforce username-password flow"),
    pytest.param("requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://api.example.com/v1/x",
                 "example", {"api_key": "invalid_api_key", "oauth2": "access_token_expired",
                             "basic": "invalid_credentials"}, id="bare 401 at an unknown provider"),
])
def test_auth_method_decides(catalog: Catalog, text: str, provider: str, by_auth: dict[str, str]) -> None:
    assert {auth: classify(catalog, text, provider, auth) for auth in by_auth} == by_auth


def test_strict_wording_only_counts_for_its_provider(catalog: Catalog) -> None:
    text = "Schema 'ANALYTICS.RAW' does not exist or not authorized."
    assert classify(catalog, text, "snowflake") == "insufficient_permissions"
    assert classify(catalog, text, "postgres") is None and classify(catalog, text) is None


def test_a_finer_code_beats_a_more_specific_base_pattern(catalog: Catalog) -> None:
    # mssql's "Login failed for user" is invalid_credentials; the reason makes it password_expired
    text = "Login failed for user 'etl'. Reason: The password of the account has expired. (18487)"
    found = catalog.classify(text, "mssql", "basic")
    assert (found.entry.code, found.entry.base_code) == ("password_expired", "invalid_credentials")


def test_match_names_provider_and_span(catalog: Catalog) -> None:
    text = "tap-google-sheets | CRITICAL ('invalid_grant: Token has been expired or revoked.', {...})"
    found = catalog.classify(text, "tap-google-sheets")
    m = found.match
    assert (m.provider, m.text, text[m.start:m.end]) == ("google", "Token has been expired or revoked", m.text)


# -- providers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,canonical", [
    ("tap-hubspot", "hubspot"), ("source-hubspot", "hubspot"), ("airbyte/source-hubspot:4.2.1", "hubspot"),
    ("platform.hubspot", "hubspot"), ("Tap-HubSpot", "hubspot"), ("singer-io/tap-salesforce", "salesforce"),
    ("salesforce_sandbox", "salesforce"), ("google_ads", "google"), ("Google Ads", "google"),
    ("google_analytics_4", "google"), ("source-google-sheets", "google"), ("facebook_ads", "facebook"),
    ("meta", "facebook"), ("source-facebook-marketing", "facebook"), ("azure", "microsoft"), ("entra", "microsoft"),
    ("postgresql", "postgres"), ("postgres_rds", "postgres"), ("tap-postgres", "postgres"), ("redshift", "postgres"),
    ("sql_server", "mssql"), ("azure_sql_db", "mssql"), ("quickbooks_online", "quickbooks"), ("intuit", "quickbooks"),
    ("tap-some-new-api", "some-new-api"), ("", None), (None, None),
])
def test_canonical_provider(catalog: Catalog, name: str | None, canonical: str | None) -> None:
    assert catalog.canonical_provider(name) == canonical


def test_unknown_provider_is_no_error(catalog: Catalog) -> None:
    assert classify(catalog, "invalid_grant", "tap-brand-new") == "invalid_grant"
    assert canonical_provider("x-y", None) == "x-y"


# -- the entries themselves ------------------------------------------------------------------------


def test_base_codes_keep_their_contract(catalog: Catalog) -> None:
    actions = {code: catalog.get(code).action for code in BASE_CODES}
    assert actions == {"invalid_grant": "reauthorize", "insufficient_permissions": "restore_permissions",
                       "access_token_expired": "new_token", "refresh_token_expired": "reauthorize",
                       "invalid_api_key": "update_api_key", "invalid_credentials": "update_credentials"}
    severities = {code: str(catalog.get(code).severity) for code in BASE_CODES}
    assert severities == {"invalid_grant": "critical", "insufficient_permissions": "error",
                          "access_token_expired": "error", "refresh_token_expired": "critical",
                          "invalid_api_key": "critical", "invalid_credentials": "critical"}
    # an expired access token turning into invalid_grant is an escalation ("updated" message)
    assert catalog.get("invalid_grant").severity.rank > catalog.get("access_token_expired").severity.rank


def test_entries_are_complete(catalog: Catalog) -> None:
    for e in catalog.entries.values():
        assert e.refines is None or e.refines in BASE_CODES, e.code
        assert len(e.cause) <= 45 and not e.cause.endswith("."), f"{e.code}: cause goes into email subjects"
        assert e.causes and set(e.remediation) == {"oauth2", "api_key", "basic"}, e.code
        assert e.docs is None or e.docs.startswith("https://"), e.code
        assert any(p.code == e.code for p in catalog.patterns), f"{e.code} has no pattern"
    finer = [e for e in catalog.entries.values() if e.refines]
    assert {e.code for e in finer} >= {"app_deauthorized", "consent_required", "account_locked", "password_expired",
                                       "user_inactive", "invalid_client", "mfa_required"}
    assert catalog.get("invalid_client").action == "update_credentials"  # a configuration fix, not reauthorize


def test_every_corpus_provider_has_patterns(catalog: Catalog) -> None:
    wanted = {"google", "microsoft", "salesforce", "hubspot", "facebook", "shopify", "stripe", "zendesk", "intercom",
              "xero", "quickbooks", "github", "slack", "snowflake", "postgres", "mysql"}
    assert wanted <= {p.provider for p in catalog.patterns}


# -- the prefilter -------------------------------------------------------------------------------


def _variants(text: str) -> list[str]:
    # upper case, and a non-ASCII prefix that sends the text down the pure-re path
    return [text, text.upper(), "Ünïcode → " + text]


def test_prefilters_agree_with_a_plain_search(catalog: Catalog) -> None:
    """The hyperscan and the anchor prefilter never lose a match: every pattern and exclude that ``re``
    finds in a text is among the candidates, and both catalogs classify identically."""
    plain = load_catalog(accelerate=False)
    fast = load_catalog()
    fast.prepare()
    sources = [p.regex for p in fast.patterns] + fast.excludes
    texts = [sanitize(r["text"]) for r in CORPUS] + [p.values[0] for p in HELD_OUT]
    for text in (v for t in texts for v in _variants(t)):
        for cat in (plain, fast):
            candidates, exact = cat._prefilter(text)
            found = {i for i, rx in enumerate(sources) if rx.search(text)}
            assert found <= set(candidates), text
            if exact:
                assert found == set(candidates), text
        a, b = plain.classify(text, "google", "oauth2"), fast.classify(text, "google", "oauth2")
        assert (a and a.entry.code) == (b and b.entry.code), text


def test_catalog_regexes_compile_under_hyperscan(catalog: Catalog) -> None:
    """The log scanner compiles every pattern and exclude with hyperscan: no lookaround, backreferences…"""
    try:
        import hyperscan
    except ImportError:
        if IN_CI:
            pytest.fail("hyperscan is not installed")
        pytest.skip("hyperscan is not installed")
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UTF8
    sources = list(dict.fromkeys([p.regex.pattern for p in catalog.patterns] + [x.pattern for x in catalog.excludes]))
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=[s.encode() for s in sources], ids=list(range(len(sources))), elements=len(sources),
                   flags=[flags] * len(sources))
    except hyperscan.error as exc:
        pytest.fail(f"hyperscan refuses the catalog: {exc}")
    hits: list[int] = []
    db.scan(b"AADSTS700082: The refresh token has expired due to inactivity",
            match_event_handler=lambda i, *_: hits.append(i))
    assert hits  # and it finds what re finds


_FRAGMENTS = [r["text"][i:i + 40] for r in CORPUS[::7] for i in (0, 20)] + [
    "401", "Unauthorized", "invalid_grant", "AADSTS70008", "\u212a", "\u017f", "İ", "\x1c", "\t", "\n", "ß", "é"]


@pytest.fixture(scope="module")
def both() -> tuple[Catalog, Catalog]:
    fast = load_catalog()
    fast.prepare()
    return load_catalog(accelerate=False), fast


@settings(max_examples=300, deadline=None, derandomize=True)
@given(parts=st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=12), max_size=6),
       provider=st.sampled_from([None, "", "google", "tap-stripe", "source-x:1", "ünknown"]),
       auth=st.sampled_from([None, "", "oauth2", "api_key", "basic", "OAuth2", "saml"]))
def test_prefilters_never_disagree_on_odd_text(both: tuple[Catalog, Catalog], parts: list[str], provider: str | None,
                                              auth: str | None) -> None:
    """Random mixes of real fragments, odd Unicode and control characters: the pure-re and the hyperscan
    prefilter classify alike (same code, same span), and nothing raises."""
    text = "".join(parts)
    a, b = (cat.classify(text, provider, auth) for cat in both)
    assert (a and (a.entry.code, a.match)) == (b and (b.entry.code, b.match))


@pytest.mark.parametrize(("code", "auth_method", "action"), [
    ("invalid_credentials", "oauth2", "reauthorize"),  # the method's usual fix: "reauthorize the integration"
    ("invalid_grant", "basic", "update_credentials"),
    ("access_token_expired", "api_key", "update_api_key"),
    # found by a README walk-through: "Create a new client secret for the OAuth app … reauthorizing the user
    # will not help" carried a Reauthorize button on an OAuth integration
    ("invalid_client", "oauth2", "update_credentials"),
])
def test_the_action_says_what_the_fix_text_says(code: str, auth_method: str, action: str) -> None:
    entry = load_catalog().get(code)
    assert entry is not None and entry.action_for(auth_method) == action
    assert entry.public(auth_method)["action"] == action
