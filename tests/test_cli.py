"""The CLI as a user runs it: a real ``alerts`` process, its stdout and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def alerts(*args: str, cwd: Path, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "alerts", *args], cwd=cwd, capture_output=True, text=True,
                          input=input, env={**os.environ, **(env or {})}, timeout=60)


def test_explain_json(tmp_path) -> None:
    r = alerts("explain", "401 Client Error: Unauthorized for url: https://api.hubapi.com/...", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["code"] == "access_token_expired" and out["base_code"] == "access_token_expired"
    assert out["action"] == "new_token" and out["matched"]["text"].startswith("401 Client Error")
    r = alerts("explain", "429 Too Many Requests", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["code"] is None


def test_explain_bulk_input_keeps_order(tmp_path) -> None:
    lines = [
        {"text": "invalid_grant"},
        {"text": "429 Too Many Requests"},
        {"text": "HTTP 401 Unauthorized", "auth_method": "api_key"},
    ]
    r = alerts("explain", "--input", "-", "--json", cwd=tmp_path, input="\n".join(json.dumps(x) for x in lines))
    assert r.returncode == 0, r.stderr
    codes = [json.loads(x)["code"] for x in r.stdout.splitlines()]
    assert codes == ["invalid_grant", None, "invalid_api_key"]


def test_explain_refuses_what_it_cannot_use(tmp_path) -> None:
    r = alerts("explain", "invalid_grant", "--auth-method", "bogus", cwd=tmp_path)
    assert r.returncode == 2 and "--auth-method must be oauth2, api_key or basic" in r.stderr
    r = alerts("explain", "invalid_grant", "--input", "-", cwd=tmp_path, input='{"text": "x"}')
    assert r.returncode == 2 and "not both" in r.stderr
    r = alerts("explain", "--input", "-", cwd=tmp_path, input='{"text": "invalid_grant", "auth_method": "bogus"}')
    assert r.returncode == 0 and json.loads(r.stdout) == {"line": 1, "error": "auth_method must be oauth2, api_key or basic"}


def test_config_section_names_print_as_written(tmp_path) -> None:
    """[[digests]] and [[log_sources]] are text, in help and in errors (not swallowed as markup)."""
    assert "[[digests]]" in alerts("digest", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    assert "[[log_sources]]" in alerts("scan", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    r = alerts("digest", "--preview", cwd=tmp_path)
    assert r.returncode == 2 and "no [[digests]] are configured" in r.stderr, r.stderr


def test_serve_refuses_a_port_out_of_range(tmp_path) -> None:
    r = alerts("serve", "--port", "99999", cwd=tmp_path)
    assert r.returncode == 2 and "--port" in r.stderr and "65535" in r.stderr


def test_config_error_is_one_line_without_traceback(tmp_path) -> None:
    (tmp_path / "config.toml").write_text('[alerting]\nrepeat_interval = "4 hourz"\n')
    r = alerts("list", cwd=tmp_path)
    assert r.returncode == 2
    assert "alerting.repeat_interval" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_list_ack_resolve_work_on_the_database_without_a_server(tmp_path) -> None:
    from alerts import ingest
    from alerts.catalog import load_catalog
    from alerts.config import load_settings
    from alerts.models import AuthErrorEvent, utcnow
    from alerts.storage import make_engine, upgrade

    settings = load_settings(None, database={"url": f"sqlite:///{tmp_path}/var/alerts.db"})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    ingest.ingest([AuthErrorEvent(integration_id="sf-prod", error="invalid_grant", provider="salesforce")],
                  engine=engine, settings=settings, catalog=load_catalog(), now=utcnow())

    r = alerts("list", "--json", cwd=tmp_path)  # default URL sqlite:///var/alerts.db, relative to the cwd
    [row] = [json.loads(x) for x in r.stdout.splitlines()]
    assert (row["integration_id"], row["state"], row["code"]) == ("sf-prod", "firing", "invalid_grant")
    r = alerts("list", cwd=tmp_path)
    assert "sf-prod" in r.stdout and "firing" in r.stdout

    assert alerts("ack", str(row["id"]), cwd=tmp_path).returncode == 0
    assert json.loads(alerts("list", "--json", cwd=tmp_path).stdout)["state"] == "acknowledged"
    assert alerts("resolve", str(row["id"]), cwd=tmp_path).returncode == 0
    assert json.loads(alerts("list", "--state", "resolved", "--json", cwd=tmp_path).stdout)["id"] == row["id"]
    r = alerts("resolve", "999", cwd=tmp_path)
    assert r.returncode == 1 and "no alert 999" in r.stderr


def test_db_upgrade_and_catalog(tmp_path) -> None:
    r = alerts("db", "upgrade", cwd=tmp_path)
    assert r.returncode == 0 and "revision" in r.stdout
    assert (tmp_path / "var" / "alerts.db").exists()
    assert oct((tmp_path / "var" / "alerts.db").stat().st_mode & 0o777) == "0o600"
    r = alerts("catalog", "--json", cwd=tmp_path)
    codes = {e["code"] for e in json.loads(r.stdout)["entries"]}
    assert {"invalid_grant", "insufficient_permissions", "access_token_expired", "refresh_token_expired",
            "invalid_api_key", "invalid_credentials"} <= codes
    assert "invalid_grant" in alerts("catalog", cwd=tmp_path).stdout


def test_example_config_loads_and_documents_every_key() -> None:
    from pydantic import BaseModel

    from alerts.config import Settings, load_settings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    load_settings(example)
    text = example.read_text()

    def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = field.alias or name
            out.append(prefix + key)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out.extend(keys(ann, prefix + key + "."))
        return out

    missing = [k for k in keys(Settings) if k.split(".")[-1] not in text]
    assert missing == []


def test_the_database_directory_is_private_only_when_we_create_it(tmp_path) -> None:
    """R4.5: a directory made for the database is 0700; an existing one (the working directory, /tmp)
    keeps its mode; the database file is 0600 either way."""
    from alerts import storage

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    storage.upgrade(storage.make_engine(f"sqlite:///{shared}/alerts.db"))
    assert oct(shared.stat().st_mode & 0o777) == "0o755"
    assert oct((shared / "alerts.db").stat().st_mode & 0o777) == "0o600"
    storage.upgrade(storage.make_engine(f"sqlite:///{tmp_path}/new/dir/alerts.db"))
    assert oct((tmp_path / "new" / "dir").stat().st_mode & 0o777) == "0o700"
