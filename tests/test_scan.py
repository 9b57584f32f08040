"""The sweep (alerts/scan.py): a prefilter that never misses, two engines with the same findings,
line bookkeeping across chunks, tracebacks, long lines, broken bytes."""

from __future__ import annotations

import gzip
import json
import random
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.catalog import Catalog
from alerts.redact import sanitize
from alerts.scan import (
    MAX_LINE,
    LineScanner,
    as_posix_ere,
    available_engines,
    build_plan,
    open_input,
    over_approximation,
    scan_stream,
)
from alerts.sources.logs import LineRules

CORPUS = Path(__file__).parent / "data" / "catalog_corpus.jsonl"
ENGINES = available_engines()  # hyperscan where its wheel exists, and always the pure-re engine
ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def scan_bytes(data: bytes, catalog: Catalog, *, engine: str = "re", fmt: str = "text", chunk: int | None = None,
               path: str = "app.log", rules: LineRules | None = None):
    plan = build_plan(catalog, rules or LineRules.default(fmt), engine=engine)
    scanner = LineScanner(plan, path=path)
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out += scanner.feed(data[i : i + step])
    out += scanner.finish()
    return out, scanner


def summary(findings) -> list[tuple]:
    return [(f.line_no, f.offset, f.integration_id, f.code, f.text, f.truncated) for f in findings]


def reference(data: bytes, catalog: Catalog, *, fmt: str = "text", path: str = "app.log") -> list[tuple]:
    """The slow, obvious definition: every line parsed and classified in Python."""
    rules = LineRules.default(fmt)
    out, context, offset = [], None, 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, raw in enumerate(lines, 1):
        rec = rules.parse(raw[:MAX_LINE])
        ident = rec.own or context or rules.fallback(path)
        for text in rec.texts:
            clean = sanitize(text) or ""
            from alerts.sources.logs import derived_provider

            provider = catalog.canonical_provider(ident.provider or derived_provider(ident.integration_id))
            found = catalog.classify(clean, provider, None)
            if found:
                out.append((n, offset, ident.integration_id, found.entry.code, clean, len(raw) > MAX_LINE))
                break
        if rec.own:
            context = rec.own
        offset += len(raw) + 1
    return out


# -- the prefilter over-approximates classify ---------------------------------------------------------


def _variants(text: str) -> list[str]:
    return [text, text.upper(), text.lower(), f"2024-05-01 12:00:00 ERROR {text} (retrying)", text.replace(" ", "\t")]


@pytest.mark.parametrize("engine", ENGINES)
def test_prefilter_never_misses_a_line_classify_accepts_on_the_corpus(catalog: Catalog, engine: str) -> None:
    text_plan = build_plan(catalog, LineRules.default("text"), engine=engine)
    json_plan = build_plan(catalog, LineRules.default("json"), engine=engine)
    accepted = 0
    for row in ROWS:
        for text in _variants(row["text"]):
            if catalog.classify(sanitize(text), row.get("provider"), row.get("auth_method")) is None:
                continue
            accepted += 1
            lines = [
                (text_plan, text.replace("\n", " ").encode() + b"\n"),
                (text_plan, text.replace("\n", " ").encode() + b"\r\n"),
                (json_plan, json.dumps({"message": text}).encode() + b"\n"),
                (json_plan, json.dumps({"message": text, "level": "error"}, ensure_ascii=False).encode() + b"\n"),
            ]
            for plan, line in lines:
                assert plan.candidates.hits(line, 0, len(line)), (engine, line)
    assert accepted > 100  # the corpus is what it claims to be


_FRAGMENTS = sorted({w for row in ROWS if row.get("expected") for w in re.findall(r"[\w./:'\"=-]+", row["text"])})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=8),
       st.lists(st.sampled_from([" ", "  ", "\t", ": ", ", ", "_", "-", "/", "é", "\x1b[31m", "\u202e", "ſ", "K"]),
                min_size=8, max_size=8),
       st.booleans())
def test_prefilter_never_misses_on_generated_lines(catalog: Catalog, words: list[str], seps: list[str],
                                                   as_json: bool) -> None:
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    for engine in ENGINES:
        plan = build_plan(catalog, LineRules.default("json" if as_json else "text"), engine=engine)
        line = (json.dumps({"msg": text}) if as_json else text).encode() + b"\n"
        if catalog.classify(sanitize(text)) is not None:
            assert plan.candidates.hits(line, 0, len(line)), (engine, line)


@pytest.mark.parametrize(
    ("pattern", "line", "json_mode"),
    [
        pytest.param(r"(?<!not )invalid_grant", b"we got invalid_grant", False, id="lookbehind widened"),
        pytest.param(r"(a)\1 token", b"aa token", False, id="backreference widened"),
        pytest.param(r"grant$", b"invalid_grant\r", False, id="CRLF before the end anchor"),
        pytest.param(r"^invalid", b"invalid_grant", False, id="start anchor at a line start"),
        pytest.param(r"\binvalid_grant\b", b'{"msg": "x\\ninvalid_grant"}', True, id="boundary after a JSON escape"),
        pytest.param(r'error="invalid_token', b'{"m": "error=\\"invalid_token\\""}', True, id="escaped quote"),
        pytest.param(r"401 unauthorized", b'{"m": "401\\r\\nUnauthorized"}', True, id="newlines become one space"),
        pytest.param(r"[^\d]{3}x", b"abcx", False, id="negated class"),
        pytest.param(r"(?-i:Token) expired", b"Token EXPIRED", False, id="case-sensitive group"),
    ],
)
def test_translation_edge_cases(pattern: str, line: bytes, json_mode: bool) -> None:
    expr = over_approximation(pattern, re.IGNORECASE, json=json_mode)
    assert re.search(expr, line, re.MULTILINE), expr


def test_case_sensitive_group_stays_case_sensitive() -> None:
    expr = over_approximation(r"(?-i:Token) expired", re.IGNORECASE)
    assert not re.search(expr, b"TOKEN expired", re.MULTILINE)


def test_the_posix_form_for_grep_is_the_same_language() -> None:
    ere = as_posix_ere(r"\bapp(?:lication)? (?:was |has been )?(?:uninstalled|de-?authori[sz]ed)\b")
    assert ere == rb"\bapp(lication)? ((was |has been ))?(uninstalled|de(-)?authori[SZsz]ed)\b"


# -- findings -----------------------------------------------------------------------------------------


def _mixed_log(seed: int = 7) -> bytes:
    rng = random.Random(seed)
    failures = [r["text"] for r in ROWS if r.get("expected") and "\n" not in r["text"]]
    noise = [
        "INFO Syncing stream contacts: 1200 records",
        "tap - INFO METRIC: {\"type\": \"timer\", \"value\": 0.4, \"http_status_code\": 200}",
        "429 Too Many Requests: rate limit exceeded, retrying in 30s",
        "HTTP 503 Service Unavailable from api.example.com",
        "ETL für Kunden läuft — 5 000 Zeilen",  # non-ASCII, harmless
        "  File \"/usr/lib/python3.11/site-packages/requests/models.py\", line 1021, in raise_for_status",
        "\x1b[32mINFO\x1b[0m all good",
    ]
    out = []
    for i in range(2000):
        kind = rng.randrange(20)
        if kind == 0:
            out.append(rng.choice(failures))
        elif kind == 1:
            out.append(f"2024-05-01T12:00:{i % 60:02d}Z [info] x cmd_type=elb name=tap-{i % 5} string_id=tap-{i % 5}")
        elif kind == 2:
            out.append("\x1b[31mERROR\x1b[0m " + rng.choice(failures))  # colours around a failure
        elif kind == 3:
            out.append(rng.choice(failures).replace("a", "ä", 1))  # non-ASCII inside a failure
        else:
            out.append(rng.choice(noise))
    ends = [b"\n", b"\r\n"]
    return b"".join(line.encode() + rng.choice(ends) for line in out) + b"caf\xff invalid_grant without newline"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
def test_engines_and_chunk_sizes_give_the_reference_findings(catalog: Catalog, engine: str, chunk: int | None) -> None:
    data = _mixed_log()
    if chunk == 1:
        data = data[:20_000]  # byte-at-a-time is slow; the first lines are enough
    found, scanner = scan_bytes(data, catalog, engine=engine, chunk=chunk)
    expected = reference(data, catalog)
    assert summary(found) == expected
    assert len(expected) > (5 if chunk == 1 else 100)
    assert scanner.offset == len(data) and scanner.line_no == data.count(b"\n") + 1


def test_json_lines_from_meltano(catalog: Catalog) -> None:
    lines = [
        {"event": "Starting sync", "level": "info", "string_id": "tap-hubspot", "cmd_type": "elb"},
        {"event": "CRITICAL 401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3",
         "level": "info", "string_id": "tap-hubspot", "timestamp": "2024-05-01T12:00:00Z"},
        {"event": "CRITICAL invalid_grant: Token has been expired or revoked.", "string_id": "tap-google-ads"},
        {"event": "429 Too Many Requests", "string_id": "tap-hubspot"},
    ]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    for engine in ENGINES:
        found, _ = scan_bytes(data, catalog, engine=engine, fmt="json")
        assert [(f.line_no, f.integration_id, f.code) for f in found] == [
            (2, "tap-hubspot", "access_token_expired"), (3, "tap-google-ads", "invalid_grant")]
        assert found[0].provider == "hubspot" and found[0].occurred_at.isoformat() == "2024-05-01T12:00:00+00:00"


def test_traceback_belongs_to_the_integration_named_before_it_even_chunks_away(catalog: Catalog) -> None:
    head = b"2024-05-01 INFO starting integration=sf-prod\n"
    filler = b"DEBUG fetched page of accounts, 200 rows, nothing to see here\n" * 5_000  # ~300 KB: past every window
    tb = (b"Traceback (most recent call last):\n"
          b'  File "tap.py", line 10, in sync\n'
          b"google.auth.exceptions.RefreshError: ('invalid_grant: Token has been expired or revoked.', {})\n")
    other = b"2024-05-01 INFO starting integration=hubspot-eu\n" + tb
    data = head + filler + tb + other
    for engine in ENGINES:
        for chunk in (None, 65536):
            found, _ = scan_bytes(data, catalog, engine=engine, chunk=chunk)
            assert [(f.integration_id, f.via, f.code) for f in found] == [
                ("sf-prod", "context", "invalid_grant"), ("hubspot-eu", "context", "invalid_grant")]


def test_a_one_mib_line_then_a_real_failure(catalog: Catalog) -> None:
    big = b"x" * (1 << 20)
    data = b"INFO ok\n" + big + b" invalid_grant\n" + b"ERROR invalid_grant: Token has been expired or revoked.\n"
    for engine in ENGINES:
        found, scanner = scan_bytes(data, catalog, engine=engine, chunk=65536)
        assert [(f.line_no, f.truncated) for f in found] == [(3, False)]  # the failure past 64 KiB is cut off
        assert scanner.offset == len(data)
    # a failure at the start of an over-long line is found and flagged
    data = b"invalid_grant " + b"y" * (MAX_LINE * 3) + b"\nnext\n"
    found, scanner = scan_bytes(data, catalog, chunk=4096)
    assert [(f.line_no, f.truncated, len(f.text) <= 4096) for f in found] == [(1, True, True)]
    assert scanner.offset == len(data) and scanner.line_no == 2


def test_memory_stays_bounded_on_a_long_line_without_newline(catalog: Catalog) -> None:
    plan = build_plan(catalog, LineRules.default(), engine=ENGINES[0])
    scanner = LineScanner(plan, path="big.log")
    block = b"z" * (1 << 20)
    tracemalloc.start()
    for _ in range(64):  # 64 MiB, no newline
        scanner.feed(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert scanner.pending == 64 << 20 and scanner.offset == 0
    assert peak < 4 << 20, peak  # a block in flight plus a 64 KiB prefix, not the line
    found = scanner.feed(b"\nERROR invalid_grant\n")
    assert [(f.line_no, f.offset) for f in found] == [(2, (64 << 20) + 1)]


def test_invalid_utf8_bytes_do_not_hide_a_failure(catalog: Catalog) -> None:
    data = b"\xff\xfe\x80 ERROR invalid_grant: Token has been expired or revoked. \xc3\x28\n"
    for engine in ENGINES:
        found, _ = scan_bytes(data, catalog, engine=engine)
        assert len(found) == 1 and found[0].text.startswith("\ufffd\ufffd\ufffd ERROR invalid_grant")


def test_plain_gzip_and_stdin_streams(tmp_path: Path, catalog: Catalog) -> None:
    data = _mixed_log(3)
    plain = tmp_path / "tap.log"
    plain.write_bytes(data)
    packed = tmp_path / "tap.log.gz"
    packed.write_bytes(gzip.compress(data))
    plan = build_plan(catalog, LineRules.default(), engine=ENGINES[0])
    results = []
    for path in (plain, packed):
        with open_input(str(path)) as stream:
            results.append(summary(scan_stream(stream, plan, path="tap.log", chunk=10_000)))
    assert results[0] == results[1] == reference(data, catalog, path="tap.log")


def test_a_traceback_takes_the_time_and_integration_of_the_lines_before_it(catalog: Catalog) -> None:
    data = (b"[2024-05-01, 12:00:00 UTC] {taskinstance.py:1103} INFO - Dependencies all met for "
            b"dep_context=non-requeueable deps ti=<TaskInstance: gsheets_sync.extract manual__x [queued]>\n"
            b"[2024-05-01, 12:00:03 UTC] {taskinstance.py:1937} ERROR - Task failed with exception\n"
            b"Traceback (most recent call last):\n"
            b'  File "/opt/airflow/dags/gsheets.py", line 12, in extract\n'
            b"google.auth.exceptions.RefreshError: ('invalid_grant: Token has been expired or revoked.', {})\n")
    for engine in ENGINES:
        [f], _ = scan_bytes(data, catalog, engine=engine)
        assert (f.line_no, f.integration_id, f.via, f.code) == (5, "gsheets_sync", "context", "invalid_grant")
        assert f.occurred_at.isoformat() == "2024-05-01T12:00:03+00:00"
