"""User overrides of the catalog (``[catalog]`` in the config), and the catalog at the edges: the
``alerts explain``/``alerts catalog`` commands and ``GET /v1/catalog``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.catalog import CatalogError, load_catalog


def alerts(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alerts", *args], cwd=cwd, capture_output=True, text=True,
                          input=input, timeout=60)


# -- overrides ------------------------------------------------------------------------------------


def test_add_a_pattern_and_change_remediation_of_an_existing_entry() -> None:
    catalog = load_catalog([{
        "code": "invalid_grant",
        "patterns": [{"regex": r"our wrapper says: token dead", "provider": "tap-salesforce"}],
        "remediation": {"oauth2": "Reconnect it at https://etl.example.com/connections."},
    }])
    found = catalog.classify("ERROR our wrapper says: token dead", "salesforce", "oauth2")
    assert found.entry.code == "invalid_grant" and found.match.provider == "salesforce"
    assert found.entry.solution_for("oauth2") == "Reconnect it at https://etl.example.com/connections."
    assert found.entry.solution_for("basic") == load_catalog().get("invalid_grant").solution_for("basic")
    assert catalog.classify("Token has been expired or revoked", "google").entry.code == "invalid_grant"  # kept


def test_a_new_finer_entry_inherits_from_its_base_code() -> None:
    catalog = load_catalog([{"code": "sso_session_expired", "refines": "invalid_grant", "cause": "SSO session expired",
                             "patterns": ["okta session expired"]}])
    found = catalog.classify("upstream: Okta session expired for user etl@example.com")
    assert (found.entry.code, found.entry.base_code, found.entry.cause) == (
        "sso_session_expired", "invalid_grant", "SSO session expired")
    assert (found.entry.action, str(found.entry.severity)) == ("reauthorize", "critical")
    # a refinement beats its base code when both match
    assert catalog.classify("invalid_grant: okta session expired").entry.code == "sso_session_expired"


def test_disable_an_entry_and_its_refinements() -> None:
    catalog = load_catalog(disabled=["invalid_credentials"])
    assert "invalid_credentials" not in catalog and "password_expired" not in catalog
    assert catalog.classify('FATAL:  password authentication failed for user "etl"', "postgres") is None
    assert catalog.classify("invalid_grant").entry.code == "invalid_grant"
    only_finer = load_catalog(disabled=["app_deauthorized"])
    assert "app_deauthorized" not in only_finer and "invalid_grant" in only_finer
    assert only_finer.classify("{'ok': False, 'error': 'token_revoked'}", "slack") is None


@pytest.mark.parametrize("entries,disabled,message", [
    pytest.param([{"code": "invalid_grant", "patterns": ["(unclosed"]}], [],
                 "catalog.entries[invalid_grant].patterns[0].regex: missing ), unterminated subpattern",
                 id="a regex that does not compile"),
    pytest.param([{"code": "invalid_grant", "patterns": [{"regex": "token(?!s) dead"}]}], [],
                 "catalog.entries[invalid_grant].patterns[0].regex: lookahead/lookbehind", id="lookahead"),
    pytest.param([{"code": "invalid_grant", "patterns": [r"(\w+) \1"]}], [],
                 "catalog.entries[invalid_grant].patterns[0].regex: backreferences", id="backreference"),
    pytest.param([{"code": "invalid_grant", "patterns": ["x*"]}], [],
                 "catalog.entries[invalid_grant].patterns[0].regex: matches the empty string", id="matches everything"),
    pytest.param([{"code": "invalid_grant", "patterns": ["(?i)token dead"]}], [],
                 "already case-insensitive", id="inline global flags"),
    pytest.param([{"code": "invalid_grant", "patterns": [{"regex": "x", "auth_method": "oauth"}]}], [],
                 "catalog.entries[invalid_grant].patterns[0].auth_method: must be one of oauth2, api_key, basic",
                 id="unknown auth method"),
    pytest.param([{"code": "invalid_grant", "patterns": [{"regx": "x"}]}], [],
                 "catalog.entries[invalid_grant].patterns[0]: unknown key 'regx'", id="misspelt key"),
    pytest.param([{"code": "invalid_grant", "remediation": {"password": "x"}}], [],
                 "catalog.entries[invalid_grant].remediation.password: unknown auth method", id="remediation key"),
    pytest.param([{"code": "invalid_grant", "severity": "fatal"}], [],
                 "catalog.entries[invalid_grant].severity: must be one of info, warning, error, critical",
                 id="severity"),
    pytest.param([{"code": "our_code", "title": "t", "cause": "c", "solution": "s", "action": "a"}], [],
                 "catalog.entries[our_code]: a new entry must name the base code it refines", id="no refines"),
    pytest.param([], ["invalid_grnat"], "catalog.disable: unknown code 'invalid_grnat'", id="disable a typo"),
])
def test_broken_overrides_name_the_entry_and_key(entries: list, disabled: list, message: str) -> None:
    with pytest.raises(CatalogError) as exc:
        load_catalog(entries, disabled)
    assert message in str(exc.value)


def test_a_broken_user_pattern_stops_every_command_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[[catalog.entries]]\ncode = "invalid_grant"\npatterns = [{ regex = "token(?=dead)" }]\n')
    for args in (["list"], ["serve", "--port", "0"]):
        r = alerts(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            "config error: catalog.entries[invalid_grant].patterns[0].regex: lookahead/lookbehind assertions are "
            "not supported (patterns must also compile under hyperscan)"], args


# -- the edges ------------------------------------------------------------------------------------


def test_explain_json_shows_base_code_and_why(tmp_path: Path) -> None:
    r = alerts("explain", "AADSTS50076: Due to a configuration change made by your administrator, you must use "
               "multi-factor authentication to access 'x'.", "--provider", "entra", "--json", cwd=tmp_path)
    out = json.loads(r.stdout)
    assert (out["code"], out["base_code"], out["action"]) == ("mfa_required", "invalid_grant", "reauthorize")
    assert out["matched"] == {"provider": "microsoft", "start": 0, "end": 11, "text": "AADSTS50076"}


def test_explain_hints_take_part(tmp_path: Path) -> None:
    """The same words, four integrations: bulk mode takes each line's hints, the options fill the gaps."""
    text = "HTTP-error-code: 401, Error: Invalid authorization credentials."
    lines = [{"text": text, "auth_method": "api_key"}, {"text": text, "provider": "stripe"},
             {"text": text, "auth_method": "oauth2"}, {"text": text}]
    r = alerts("explain", "--input", "-", "--provider", "source-salesforce", "--json", cwd=tmp_path,
               input="\n".join(json.dumps(x) for x in lines))
    assert [json.loads(x)["code"] for x in r.stdout.splitlines()] == [
        "invalid_api_key", "invalid_api_key", "access_token_expired", "access_token_expired"]
    r = alerts("explain", text, "--provider", "stripe", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["code"] == "invalid_api_key"


def test_explain_remediation_follows_the_auth_method(tmp_path: Path) -> None:
    entry = load_catalog().get("insufficient_permissions")
    text = "permission denied for table orders"
    lines = [{"text": text, "auth_method": "oauth2"}, {"text": text, "auth_method": "basic"}, {"text": text}]
    r = alerts("explain", "--input", "-", "--provider", "postgres", "--json", cwd=tmp_path,
               input="\n".join(json.dumps(x) for x in lines))
    # the last line has no auth method: postgres' usual one (basic) chooses the text
    assert [json.loads(x)["solution"] for x in r.stdout.splitlines()] == [
        entry.remediation["oauth2"], entry.remediation["basic"], entry.remediation["basic"]]


def test_catalog_cli_and_api_show_the_same_data(tmp_path: Path, make_settings, make_client) -> None:
    (tmp_path / "config.toml").write_text('[catalog]\ndisable = ["mfa_required"]\n')
    r = alerts("catalog", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    api = make_client(make_settings(catalog={"disable": ["mfa_required"]})).get("/v1/catalog")
    assert api.status_code == 200 and api.json() == cli
    codes = [e["code"] for e in cli["entries"]]
    assert "mfa_required" not in codes and "app_deauthorized" in codes
    grant = next(e for e in cli["entries"] if e["code"] == "invalid_grant")
    assert grant["cause"] == "Token expired or revoked" and set(grant["remediation"]) == {"oauth2", "api_key", "basic"}
    assert {"provider": "google", "regex": r"\btoken has been (?:expired or )?revoked\b", "auth_method": None,
            "strict": False, "weak": False} in grant["patterns"]

    table = alerts("catalog", cwd=tmp_path).stdout
    assert "access_token_expired" in table and "└ app_deauthorized" in table and "Token expired or revoked" in table


def test_a_user_pattern_hyperscan_cannot_compile_is_refused() -> None:
    pytest.importorskip("hyperscan")
    with pytest.raises(CatalogError, match=r"catalog\.entries\[invalid_grant\]\.patterns\[0\]\.regex: hyperscan "
                                           r"cannot compile it: Bounded repeat is too large"):
        load_catalog([{"code": "invalid_grant", "patterns": ["token a{0,100000}b"]}])
