"""The ``alerts`` command. Thin: every command calls into the package and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alerts.catalog import Catalog, CatalogError, load_catalog
from alerts.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="alerts — one clear message when a data integration's authentication breaks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
silence_app = typer.Typer(help="Silence alerts you already know about.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")

AUTH_METHODS = ("oauth2", "api_key", "basic")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (default: $ALERTS_CONFIG, ./config.toml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)  # [[digests]] is text, not markup
    raise typer.Exit(code)


def settings_from(config: Path | None) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if settings.catalog.entries or settings.catalog.disable:
        catalog_from(settings)  # a broken user pattern stops every command, not just the ones that classify
    return settings


def catalog_from(settings: Settings) -> Catalog:
    try:
        return load_catalog(settings.catalog.entries, settings.catalog.disable)
    except CatalogError as exc:  # names the entry and key: catalog.entries[x].patterns[0].regex: ...
        err.print(f"config error: {exc}", markup=False)
        raise typer.Exit(2) from None


def engine_from(settings: Settings, *, upgrade: bool = True):  # -> Engine
    from alerts import storage

    global _clock, _clock_synced
    engine = storage.make_engine(settings.database_url, synchronous=settings.database.synchronous)
    if upgrade:
        try:
            storage.upgrade(engine)
        except Exception as exc:  # a database that cannot be reached or written
            fail(f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    _clock, _clock_synced = storage.DatabaseClock(engine), False
    return engine


_clock: Any = None  # the database's clock once a command has opened its database (as `serve` keeps time)
_clock_synced = False


def _now():
    """Now: by the database's clock when the command has opened its database, else this machine's."""
    global _clock_synced
    from alerts.models import utcnow

    if _clock is None:
        return utcnow()
    if not _clock_synced:
        _clock_synced = True
        try:
            _clock.sync()
        except Exception:  # noqa: BLE001 - the command's own database error, if any, is reported where it happens
            pass
    return _clock()


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Listen port (default: server.port; 0: any free "
                                                                  "port).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes sharing the port and the database.")] = 1,
) -> None:
    """Run the API, webhooks, dashboard and delivery worker in one process (or --workers N)."""
    import os

    import uvicorn

    from alerts.jsonlog import setup_logging
    from alerts.web import create_app
    from alerts.web.app import tune_gc

    settings = settings_from(config)
    if host:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    setup_logging(settings.log.level, settings.log.format)
    catalog_from(settings)
    common = {"host": settings.server.host, "port": settings.server.port, "log_config": None, "access_log": False,
                  "timeout_keep_alive": 5, "server_header": False}
    if workers == 1:
        app_ = create_app(settings)
        tune_gc()
        uvicorn.run(app_, **common)
        return
    # Several processes: migrate once here, then each process builds its app from the same config.
    engine_from(settings).dispose()
    if settings.config_path:
        os.environ["ALERTS_CONFIG"] = str(Path(settings.config_path).resolve())
    uvicorn.run("alerts.web.app:app_from_environment", factory=True, workers=workers, **common)


@app.command()
def explain(
    text: Annotated[str | None, typer.Argument(help="The error message to classify.")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider hint (salesforce, google, tap-hubspot …).")] = None,
    auth_method: Annotated[str | None, typer.Option("--auth-method", help="oauth2, api_key or basic.")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="JSON Lines with text[, provider, auth_method]; - for stdin.")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Classify an error message: is it an authentication failure, which one, and what to do."""
    if auth_method not in (None, *AUTH_METHODS):
        fail("--auth-method must be oauth2, api_key or basic")
    if text is not None and input_file is not None:
        fail("give the error TEXT or --input FILE, not both")
    settings = settings_from(config)
    catalog = catalog_from(settings)
    if input_file is not None:
        _explain_lines(catalog, input_file, default_provider=provider, default_auth=auth_method)
        return
    if text is None:
        fail("give the error TEXT, or --input FILE")
    result = explain_one(catalog, text, provider, auth_method)
    if as_json:
        out.print(json.dumps(result), markup=False)
        return
    if result["code"] is None:
        out.print("Not an authentication failure: no alert would be raised.")
        return
    from rich.markup import escape as _escape

    refines = f", refines {result['base_code']}" if result["base_code"] != result["code"] else ""
    out.print(f"[bold]{_escape(result['title'])}[/bold] ({result['code']}{refines}, {result['severity']})")
    out.print(f"  Cause:    {result['cause']}", markup=False)
    out.print(f"  Solution: {result['solution']}", markup=False)
    out.print(f"  Action:   {result['action']}", markup=False)
    if result.get("matched"):
        m = result["matched"]
        out.print(f"  Matched:  {m['text']!r}" + (f" (pattern for {m['provider']})" if m["provider"] else ""),
                  markup=False)


def explain_one(catalog: Catalog, text: str, provider: str | None, auth_method: str | None) -> dict[str, Any]:
    from alerts.redact import sanitize

    found = catalog.classify(sanitize(text), provider, auth_method)
    if found is None:
        return {"code": None, "base_code": None, "title": None, "cause": None, "solution": None, "action": None,
                "severity": None, "matched": None}
    # the remediation for the integration's auth method, or its provider's usual one
    result = found.entry.public(auth_method or catalog.default_auth.get(catalog.canonical_provider(provider) or ""))
    m = found.match
    result["matched"] = {"provider": m.provider, "start": m.start, "end": m.end, "text": m.text} if m else None
    return result


def _explain_lines(catalog: Catalog, path: Path, *, default_provider: str | None, default_auth: str | None) -> None:
    stream = sys.stdin if str(path) == "-" else None
    try:
        fh = stream or open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                    raise ValueError("each line needs a string field 'text'")
                if item.get("auth_method") not in (None, *AUTH_METHODS):
                    raise ValueError("auth_method must be oauth2, api_key or basic")
            except ValueError as exc:
                out.print(json.dumps({"line": n, "error": str(exc)}), markup=False)
                continue
            result = explain_one(catalog, item["text"], item.get("provider") or default_provider,
                                 item.get("auth_method") or default_auth)
            out.print(json.dumps(result), markup=False)


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(help="Log files to scan; - for stdin; .gz read transparently.")],
    fmt: Annotated[str | None, typer.Option("--format", help="text or json (default: the [\\[log_sources]] entry "
                                                              "matching the path, else sniffed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per finding.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report; ingest nothing.")] = False,
    source: Annotated[str | None, typer.Option(help="Read every path with this [\\[log_sources]] entry's rules.")] = None,
    integration: Annotated[str | None, typer.Option(help="Every finding belongs to this integration id.")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider hint for these logs.")] = None,
    auth_method: Annotated[str | None, typer.Option("--auth-method", help="oauth2, api_key or basic.")] = None,
    engine: Annotated[str, typer.Option(help="Matcher: auto, hyperscan or re (same findings).")] = "auto",
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="Progress bar (default: when stderr is a terminal).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Find authentication failures in log files; ingest them like webhook events (unless --dry-run)."""
    from alerts import scan_cli

    if fmt not in (None, "text", "json"):
        fail("--format must be text or json")
    if auth_method not in (None, *AUTH_METHODS):
        fail("--auth-method must be oauth2, api_key or basic")
    scan_cli.run(paths, fmt=fmt, as_json=as_json, dry_run=dry_run, source_name=source, integration=integration,
                 provider=provider, auth_method=auth_method, engine_name=engine, config=config,
                 show_progress=progress)


@app.command("ingest-email")
def ingest_email_cmd(
    files: Annotated[list[Path], typer.Argument(help="Stitch notification emails: .eml files, mbox files, or folders of them (a Maildir too).")],
    as_json: JsonOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report; ingest nothing.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ingest Stitch "Integration Error" notification emails like webhook events."""
    from alerts import ingest_email
    from alerts.sources.stitch_email import EmailFileError

    settings = settings_from(config)
    catalog = catalog_from(settings)
    try:
        found = ingest_email.read_files(files, settings=settings, catalog=catalog)
    except EmailFileError as exc:
        fail(str(exc))
    if not dry_run and found.events:
        ingest_email.store(found, engine=engine_from(settings), settings=settings, catalog=catalog, now=_now())
    data = found.public(catalog)
    if as_json:
        out.print(json.dumps(data), markup=False)
        return
    for ev in data["events"]:
        out.print(f"{ev['integration_name'] or ev['integration_id']} ({ev['integration_id']}): "
                  f"{ev['code'] or 'not an authentication failure'}", markup=False)
    out.print(f"{data['messages']} message(s) in {data['files']} file(s): {data['stitch_errors']} Stitch integration "
              f"error(s), {data['skipped']} skipped; {data['accepted']} stored, {data['duplicates']} already seen"
              + (f"; alerts {', '.join(map(str, data['alert_ids']))}" if data["alert_ids"] else "")
              + (" (dry run: nothing stored)" if dry_run else ""), markup=False)


@app.command("list")
def list_cmd(
    state: Annotated[str | None, typer.Option(help="firing, acknowledged, resolved or open.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 100,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List alerts, newest first (works on the configured database; no server needed)."""
    from alerts.web.api import alert_public, list_alerts

    if state not in (None, "firing", "acknowledged", "resolved", "open"):
        fail("--state must be firing, acknowledged, resolved or open")
    settings = settings_from(config)
    catalog = catalog_from(settings)
    engine = engine_from(settings)
    from alerts.outbox import delivery_summary

    rows = [alert_public(a, catalog) for a in list_alerts(engine, state=state, limit=limit, before_id=None)]
    delivery = delivery_summary(engine, [r["id"] for r in rows])
    for r in rows:
        r.update(delivery.get(r["id"], {}))  # "delivery": notification counts by status; "dead_letters"
    if as_json:
        for row in rows:
            out.print(json.dumps(row), markup=False)
        return
    if not rows:
        out.print("No alerts.")
        return
    table = Table(box=None, header_style="bold")
    for col in ("id", "state", "integration", "provider", "code", "count", "last seen", "undelivered"):
        table.add_column(col, overflow="fold")  # never "invalid_…": piped output is as narrow as 80 columns
    for r in rows:
        stuck = {k: v for k, v in r.get("delivery", {}).items() if k in ("dead", "failed")}
        table.add_row(str(r["id"]), r["state"] + (" (silenced)" if r["silenced"] else ""),
                      r["integration_name"] or r["integration_id"], r["provider"] or "", r["code"], str(r["count"]),
                      (r["last_seen"] or "")[:16].replace("T", " "), ", ".join(f"{v} {k}" for k, v in stuck.items()))
    out.print(table)


def _change(alert_id: int, config: Path | None, action: str, by: str) -> None:
    from alerts import ingest
    from alerts.storage import Alert, get_row, session_scope

    settings = settings_from(config)
    catalog = catalog_from(settings)
    engine = engine_from(settings)
    with session_scope(engine) as session:
        alert = get_row(session, Alert, alert_id)
        if alert is None:
            fail(f"no alert {alert_id}", 1)
        assert alert is not None
        if alert.state == "resolved":
            fail(f"alert {alert_id} is already resolved", 1)
        if action == "ack":
            now = _now()
            if not ingest.acknowledge_alert(session, alert, now=now, by=by):
                fail(f"alert {alert_id} is already acknowledged", 1)
            from alerts.post_edits import owe_updates_elsewhere
            from alerts.render import Renderer

            session.flush()  # the server's delivery worker edits its Slack messages: no Acknowledge left to click
            owe_updates_elsewhere(session, alert, how="ack", by=by, settings=settings, catalog=catalog,
                                  renderer=Renderer(user_dir=settings.templates.dir), now=now)
        else:
            ingest.resolve_alert(session, alert, now=_now(), by=by, settings=settings, catalog=catalog)
    out.print(f"alert {alert_id} {'acknowledged' if action == 'ack' else 'resolved'}")


@app.command()
def ack(alert_id: Annotated[int, typer.Argument(help="Alert id.")], config: ConfigOpt = None,
        by: Annotated[str | None, typer.Option(help="Who acknowledges (default: your login name).")] = None) -> None:
    """Acknowledge an alert: no more reminders; resolving still notifies."""
    _change(alert_id, config, "ack", by or _login())


@app.command()
def resolve(alert_id: Annotated[int, typer.Argument(help="Alert id.")], config: ConfigOpt = None,
            by: Annotated[str | None, typer.Option(help="Who resolves (default: your login name).")] = None) -> None:
    """Resolve an alert by hand; a resolved message goes to everyone who was told."""
    _change(alert_id, config, "resolve", by or _login())


def _login() -> str:
    """Who runs the command, as messages name them ("Acknowledged by alice"), not "cli"."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without one): say where it came from
        return "cli"


@app.command()
def catalog(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Show the error catalog."""
    from alerts.web.api import catalog_public

    entries = catalog_public(catalog_from(settings_from(config)))
    if as_json:
        out.print(json.dumps({"entries": entries}, indent=2), markup=False)
        return
    from rich.text import Text

    table = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("code", "severity", "action"):
        table.add_column(col, no_wrap=True)
    table.add_column("cause", ratio=1)
    table.add_column("patterns", justify="right", no_wrap=True)
    finer: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        finer.setdefault(e["refines"] or "", []).append(e)
    for base in finer.get("", []):  # each base code, with the finer codes that refine it beneath
        for e, code in [(base, base["code"])] + [(f, "  └ " + f["code"]) for f in finer.get(base["code"], [])]:
            table.add_row(*(Text(v) for v in (code, e["severity"], e["action"], e["cause"], str(len(e["patterns"])))))
    (out if out.is_terminal else Console(highlight=False, width=120)).print(table)  # pipes get room too


@silence_app.command("add")
def silence_add(
    integration: Annotated[str | None, typer.Option(help="Integration id or glob, e.g. 'sf-*' ('*': every one).")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    code: Annotated[str | None, typer.Option(help="Only this catalog code.")] = None,
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 2h, 24h, 7d.")] = "24h",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    author: Annotated[str, typer.Option(help="Who.")] = "cli",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Silence matching alerts: they keep counting but send nothing until the silence ends."""
    from alerts import silences
    from alerts.redact import sanitize, visible
    from alerts.web.problems import Problem
    from alerts.web.silences import SilenceCreate, create_silence

    settings = settings_from(config)
    catalog = catalog_from(settings)
    if integration is not None and not visible(sanitize(integration)):
        fail("--integration needs a visible character (--integration '*' silences every integration)")
    if integration is None and not provider and not code:
        fail("give at least one of --integration, --provider, --code (--integration '*' silences every integration)")
    try:
        body = SilenceCreate(integration=integration or "*", provider=provider, code=code, duration=duration,
                             comment=comment, author=author)
    except ValueError as exc:
        text = str(exc)
        fail(text.splitlines()[-1] if "duration" not in text
             else f"--for: duration {duration!r} is too long (at most 100y)" if "too long" in text
             else f"--for: invalid duration {duration!r}")
    from datetime import timedelta

    from alerts.durations import parse_duration

    if parse_duration(duration) <= timedelta(0):
        fail(f"--for must be longer than 0s (got {duration!r})")
    engine = engine_from(settings)
    try:
        row = create_silence(engine, body=body, now=_now(), settings=settings, catalog=catalog)
    except Problem as exc:
        fail(exc.detail)
    data = silences.public(row, now=_now())
    if as_json:
        out.print(json.dumps(data), markup=False)
    else:
        out.print(f"silence {data['id']} until {data['ends_at']}", markup=False)


@silence_app.command("list")
def silence_list(
    all_: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Silences in effect (and pending); --all includes expired ones."""
    from alerts import silences
    from alerts.web.silences import list_silences

    settings = settings_from(config)
    engine = engine_from(settings)
    now = _now()
    rows = [silences.public(r, now=now) for r in list_silences(engine, now=now, include_expired=all_)]
    if as_json:
        for r in rows:
            out.print(json.dumps(r), markup=False)
        return
    if not rows:
        out.print("No silences.")
        return
    table = Table(box=None, header_style="bold")
    for col in ("id", "state", "integration", "provider", "code", "ends", "author", "comment"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["state"], r["integration"], r["provider"] or "", r["code"] or "",
                      r["ends_at"][:16].replace("T", " "), r["author"], r["comment"])
    out.print(table)


@silence_app.command("expire")
def silence_expire(silence_id: Annotated[int, typer.Argument(help="Silence id.")], config: ConfigOpt = None) -> None:
    """End a silence now; alerts it covered that still fire send one message."""
    from alerts.web.problems import Problem
    from alerts.web.silences import expire_silence

    settings = settings_from(config)
    catalog = catalog_from(settings)
    engine = engine_from(settings)
    try:
        expire_silence(engine, silence_id, now=_now(), settings=settings, catalog=catalog)
    except Problem as exc:
        fail(exc.detail, 1)
    out.print(f"silence {silence_id} expired")


@app.command()
def digest(
    name: Annotated[str | None, typer.Option("--name", help="Which [\\[digests]] entry (default: the only one).")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Render to the terminal and an HTML file; send nothing.")] = False,
    send_now: Annotated[bool, typer.Option("--send-now", help="Send it now (the scheduled one still goes out).")] = False,
    owner: Annotated[str | None, typer.Option(help="Preview the per-owner digest of this address.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Preview or send an email digest (works on the configured database; no server needed)."""
    import asyncio

    from alerts import digest as digests
    from alerts.render import Renderer
    from alerts.worker import Worker

    settings = settings_from(config)
    catalog = catalog_from(settings)
    if not settings.digests:
        fail("no [[digests]] are configured")
    if name is None:
        if len(settings.digests) > 1:
            fail("several digests are configured: choose one with --name " + ", ".join(d.name for d in settings.digests))
        chosen = settings.digests[0]
    else:
        matches = [d for d in settings.digests if d.name == name]
        if not matches:
            fail(f"no digest named {name!r} (configured: {', '.join(d.name for d in settings.digests)})")
        chosen = matches[0]
    if preview == send_now:
        fail("choose one of --preview or --send-now")
    engine = engine_from(settings)
    renderer = Renderer(user_dir=settings.templates.dir)
    if preview:
        rendered = digests.preview(engine, chosen, settings=settings, catalog=catalog, renderer=renderer, now=_now(),
                                   owner=owner)
        path = Path("var") / f"digest-{chosen.name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered.html, encoding="utf-8")
        out.print(f"Subject: {rendered.subject}\n", markup=False)
        out.print(rendered.text, markup=False)
        out.print(f"HTML written to {path}", markup=False)
        return
    n = digests.send_now(engine, chosen, settings=settings, catalog=catalog, renderer=renderer, now=_now())
    if n == 0:
        out.print("Nothing to send: the digest is empty (skip_if_empty) or has no recipients.")
        return
    # Leases and due times by the database's clock, as every replica keeps them (R2.2).
    worker = Worker(engine=engine, settings=settings, catalog=catalog, renderer=renderer, clock=_now)

    async def deliver() -> int:
        try:
            return await worker.deliver_due()
        finally:
            await worker.aclose()

    asyncio.run(deliver())
    from alerts.storage import Notification, session_scope

    with session_scope(engine) as session:
        from sqlmodel import select

        rows = session.exec(select(Notification).where(Notification.kind == "digest")
                            .order_by(Notification.id.desc()).limit(n)).all()
        failed = [r for r in rows if r.status != "sent"]
    if failed:
        fail(f"{len(failed)} of {n} digest message(s) not delivered yet: {failed[0].last_error or failed[0].status}", 1)
    if not settings.email.configured:  # no SMTP server: the file sink holds what would have been mailed
        out.print(f"digest {chosen.name!r} written to the file sink {settings.outbox.dir} ({n} message"
                  f"{'s' if n != 1 else ''}; set [email] host to mail it)", markup=False)
        return
    out.print(f"digest {chosen.name!r} sent ({n} message{'s' if n != 1 else ''})")


@app.command("test-notify")
def test_notify(
    receiver: Annotated[str, typer.Argument(help="Receiver name from [\\[receivers]] (\"file\" when none).")],
    config: ConfigOpt = None,
) -> None:
    """Send a sample alert through RECEIVER's real channels (Slack, email) and report each outcome."""
    import asyncio

    from alerts.testnotify import UnknownReceiver, send_test

    settings = settings_from(config)
    catalog = catalog_from(settings)
    try:
        outcomes = asyncio.run(send_test(settings, catalog, receiver, now=_now()))
    except UnknownReceiver as exc:
        fail(str(exc))
        return
    for o in outcomes:
        mark = "[green]sent[/green]" if o.ok else "[red]failed[/red]"
        out.print(f"{mark} {o.channel} {escape(o.address)}: {escape(o.detail)}", markup=True)
    if not outcomes:
        fail(f"receiver {receiver!r} has no channel to send to", 1)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def requeue(
    notification_ids: Annotated[list[int] | None, typer.Argument(
        help="Dead notifications' ids (alerts list --json, the dashboard).", show_default=False)] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead notification (after a long outage).")] = False,
    receiver: Annotated[str | None, typer.Option(help="With --all-dead: only this receiver's.")] = None,
    channel: Annotated[str | None, typer.Option(help="With --all-dead: only this channel's (slack, email, file).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Give dead notifications another round of attempts; the running service sends them."""
    from alerts import outbox

    if all_dead == bool(notification_ids):
        fail("name the dead notifications' ids, or --all-dead for all of them", 2)
    if (receiver or channel) and not all_dead:
        fail("--receiver and --channel select among --all-dead", 2)
    settings = settings_from(config)
    engine = engine_from(settings)
    now = _now()
    if all_dead:
        ids = outbox.requeue_dead(engine, now=now, receiver=receiver, channel=channel)
        which = " ".join(f"{k} {v!r}" for k, v in (("receiver", receiver), ("channel", channel)) if v)
        if not ids:
            out.print(f"no dead notifications{' of ' + escape(which) if which else ''}", markup=True)
            return
        shown = ", ".join(map(str, ids[:20])) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
        out.print(f"{len(ids)} notification{'s' if len(ids) != 1 else ''} requeued: {shown}")
        return
    missing = [i for i in notification_ids or [] if not outbox.requeue(engine, i, now=now)]
    for i in notification_ids or []:
        if i not in missing:
            out.print(f"notification {i} requeued")
    if missing:
        fail(f"notification{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
             f"{'do' if len(missing) > 1 else 'does'} not exist or {'are' if len(missing) > 1 else 'is'} not dead", 1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the database schema to the newest version."""
    from alerts import storage

    settings = settings_from(config)
    engine = engine_from(settings, upgrade=False)
    try:
        storage.upgrade(engine)
    except Exception as exc:
        fail(f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    out.print(f"database at revision {storage.current_revision(engine)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
