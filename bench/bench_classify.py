"""Classification throughput: ``Catalog.classify`` against a plain ``re`` loop, on the same lines.

    python bench/bench_classify.py                  # 1,000,000 lines (~10 minutes on 2 cores, mostly the baseline)
    python bench/bench_classify.py --lines 100000   # quicker

The log is generated (seeded): Singer tap output, Airflow task logs, Python tracebacks, access logs,
database logs and the near-misses the catalog must stay silent on (429s, 5xx, timeouts, "401 rows",
streams named ``oauth_tokens`` …), with about one real authentication failure per 1,000 lines taken from
the labelled corpus (``tests/data/catalog_corpus.jsonl``). Each line carries the provider and auth
method of the integration that wrote it, as the log scanner would pass them.

The baseline is what one writes without a prefilter: search every pattern and every exclude on every
line, then pick the winner by the same documented ranking. Both must agree on every line; the script
also checks that every injected failure got its label and that no noise line was classified.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from alerts.catalog import AUTH_METHODS, Catalog, Pattern, load_catalog
from alerts.redact import sanitize

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "catalog_corpus.jsonl"

STREAMS = ["contacts", "deals", "companies", "orders", "invoices", "accounts", "tickets", "users", "events",
           "campaigns", "ad_insights", "oauth_tokens", "auth_tokens", "password_resets", "token_usage"]
TAPS = ["tap-hubspot", "tap-salesforce", "tap-google-ads", "tap-facebook", "tap-postgres", "tap-stripe",
        "tap-zendesk", "tap-shopify", "tap-github", "tap-quickbooks", "tap-xero", "tap-intercom"]
PROVIDERS = {"tap-hubspot": ("hubspot", "oauth2"), "tap-salesforce": ("salesforce", "oauth2"),
             "tap-google-ads": ("google", "oauth2"), "tap-facebook": ("facebook", "oauth2"),
             "tap-postgres": ("postgres", "basic"), "tap-stripe": ("stripe", "api_key"),
             "tap-zendesk": ("zendesk", "api_key"), "tap-shopify": ("shopify", "api_key"),
             "tap-github": ("github", "api_key"), "tap-quickbooks": ("quickbooks", "oauth2"),
             "tap-xero": ("xero", "oauth2"), "tap-intercom": ("intercom", "api_key")}
HOSTS = ["api.hubapi.com", "graph.facebook.com", "api.stripe.com", "example.zendesk.com", "api.github.com",
         "example.myshopify.com", "quickbooks.api.intuit.com", "api.xero.com", "api.intercom.io"]


def noise(rng: random.Random) -> str:
    """One ordinary log line (never an authentication failure)."""
    tap = rng.choice(TAPS)
    stream = rng.choice(STREAMS)
    n = rng.randint(0, 5000)
    ts = f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)} {rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}"
    host = rng.choice(HOSTS)
    kind = rng.randrange(40)
    if kind < 10:
        return (f'{tap} | INFO METRIC: {{"type": "counter", "metric": "record_count", "value": {n}, '
                f'"tags": {{"endpoint": "{stream}"}}}}')
    if kind < 15:
        return (f'{tap} | INFO METRIC: {{"type": "timer", "metric": "http_request_duration", "value": {n / 997:.3f}, '
                f'"tags": {{"endpoint": "{stream}", "http_status_code": 200, "status": "succeeded"}}}}')
    if kind < 18:
        return f"{tap} | INFO Syncing stream: {stream}"
    if kind < 20:
        return f'{tap} | INFO Writing state: {{"bookmarks": {{"{stream}": {{"updated_at": "{ts}"}}}}}}'
    if kind < 23:
        return (f"[{ts},123] {{taskinstance.py:{n}}} INFO - Dependencies all met for <TaskInstance: "
                f"elt_{stream}.load scheduled__{ts.replace(' ', 'T')}+00:00 [queued]>")
    if kind < 25:
        return rng.choice([
            "Traceback (most recent call last):",
            f'  File "/usr/local/lib/python3.11/site-packages/requests/models.py", line {n}, in raise_for_status',
            "    raise HTTPError(http_error_msg, response=self)",
            f'  File "/app/{tap}/client.py", line {n % 400}, in request_records',
            "    resp = self._session.send(prepared, timeout=self.timeout)",
            f'  File "/usr/lib/python3.11/site-packages/singer/utils.py", line {n % 300}, in wrapped',
        ])
    if kind < 29:
        status = rng.choice([200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500])
        return (f'10.0.{n % 255}.{n % 7} - - [{ts} +0000] "GET /v1/{stream}?page={n} HTTP/1.1" {status} '
                f'{n * 3} "-" "python-requests/2.31.0"')
    if kind < 31:
        return rng.choice([
            f"{ts} UTC [{n}] LOG:  checkpoint complete: wrote {n} buffers (0.1%); 0 WAL file(s) added",
            f"{ts} UTC [{n}] LOG:  duration: {n / 13:.3f} ms  statement: SELECT * FROM {stream} WHERE id > {n}",
            f"{ts} UTC [{n}] LOG:  connection authorized: user=etl database=analytics application_name=tap-postgres",
            f"{ts} UTC [{n}] LOG:  automatic vacuum of table \"analytics.public.{stream}\": index scans: 1",
        ])
    if kind < 33:
        return json.dumps({"level": "info", "ts": ts, "msg": "request completed", "status": 200,
                           "path": f"/v1/{stream}", "duration_ms": n, "token_refreshed": n % 2 == 0})
    if kind < 36:  # near-misses: rate limits, server errors, timeouts, numbers
        return rng.choice([
            f"{tap} | WARNING Backing off request(...) for {n % 60}s (requests.exceptions.HTTPError: 429 Client Error: "
            f"Too Many Requests for url: https://{host}/v1/{stream})",
            f"{tap} | ERROR requests.exceptions.HTTPError: 503 Server Error: Service Unavailable for url: "
            f"https://{host}/v1/{stream}",
            f"{tap} | ERROR requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='{host}', port=443): "
            f"Read timed out. (read timeout=60)",
            f"Loaded {n} records into raw.{stream}; 401 rows inserted into analytics.{stream}",
            f"{tap} | INFO Refreshing access token; previous token expired at {ts}",
            f"{tap} | INFO Access token will expire in {n} seconds; refreshing proactively",
            f'{tap} | ERROR {{"message": "API rate limit exceeded for 10.0.0.{n % 255}.", "status": "403"}}',
            f"Done. PASS={n} WARN=0 ERROR=0 SKIP=0 TOTAL={n}",
        ])
    return f"{tap} | INFO Sync completed: {n} records for stream {stream} (took {n / 100:.2f}s)"


def make_log(lines: int, seed: int, failures: list[dict]) -> list[tuple[str, str | None, str | None, str | None]]:
    """``(line, provider, auth_method, expected code or None)``, about one failure per 1,000 lines."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        if rng.random() < 0.001:
            f = rng.choice(failures)
            out.append((f["text"], f["provider"], f["auth_method"], f["code"]))
        else:
            provider, auth = PROVIDERS[rng.choice(TAPS)]
            out.append((noise(rng), provider, auth, None))
    return out


def load_failures() -> list[dict]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"text": sanitize(r["text"]), "provider": r.get("provider"), "auth_method": r.get("auth_method"),
             "code": r.get("expected_code") or r["expected"]} for r in rows if r["expected"]]


# -- the baseline: every pattern and exclude searched on every line --------------------------------


def baseline(catalog: Catalog, line: str, provider: str | None, auth_method: str | None) -> str | None:
    matched = [p for p in catalog.patterns if p.regex.search(line)]
    vetoed = any(x.search(line) for x in catalog.excludes)
    if not matched or vetoed:
        return None
    hint = catalog.canonical_provider(provider)
    hint = hint if hint in catalog.providers else None
    auth = auth_method or catalog.default_auth.get(hint or "")
    auth = auth if auth in AUTH_METHODS else None
    order = {id(p): i for i, p in enumerate(catalog.patterns)}

    def rank(p: Pattern) -> tuple | None:
        if p.auth_method is not None and p.auth_method != auth:
            return None
        if p.provider is not None and p.provider != hint and p.strict:
            return None
        tier = 2 if p.provider is None else 0 if p.provider == hint else 1
        return (p.weak, tier, p.auth_method is None, order[id(p)])

    ranked = sorted((r, p) for p in matched if (r := rank(p)) is not None)
    if not ranked:
        return None
    best = ranked[0][1]
    for _, p in ranked:  # a matching refinement of the winner says more
        if catalog.entries[p.code].refines == best.code:
            return p.code
    return best.code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()

    catalog = load_catalog()
    t0 = time.perf_counter()
    log = make_log(args.lines, args.seed, load_failures())
    injected = sum(1 for *_, code in log if code)
    print(f"generated {len(log):,} lines ({injected:,} authentication failures) in {time.perf_counter() - t0:.1f}s; "
          f"{len(catalog.patterns)} patterns, {len(catalog.excludes)} excludes")

    t0 = time.perf_counter()
    engine = catalog.prepare()
    print(f"prefilter: {engine} (built in {time.perf_counter() - t0:.2f}s)")

    def run(cat: Catalog) -> tuple[list[str | None], float]:
        classify = cat.classify
        codes = []
        t0 = time.perf_counter()
        for line, provider, auth, _ in log:
            found = classify(line, provider, auth)
            codes.append(found.entry.code if found else None)
        return codes, time.perf_counter() - t0

    fast, t_fast = run(catalog)
    plain, t_plain = run(load_catalog(accelerate=False))

    t0 = time.perf_counter()
    slow = [baseline(catalog, line, provider, auth) for line, provider, auth, _ in log]
    t_slow = time.perf_counter() - t0

    disagree = [i for i, (a, b, c) in enumerate(zip(fast, plain, slow, strict=True)) if not a == b == c]
    wrong = [i for i, (got, row) in enumerate(zip(fast, log, strict=True)) if got != row[3]]
    fp = sum(1 for got, row in zip(fast, log, strict=True) if got and not row[3])
    n = len(log)
    print(f"Catalog.classify (hyperscan prefilter) {t_fast:7.2f}s {n / t_fast:11,.0f} lines/s "
          f"{t_slow / t_fast:7.1f}x the plain loop")
    print(f"Catalog.classify (re anchor prefilter) {t_plain:7.2f}s {n / t_plain:11,.0f} lines/s "
          f"{t_slow / t_plain:7.1f}x the plain loop")
    print(f"plain re loop (every pattern, line)    {t_slow:7.2f}s {n / t_slow:11,.0f} lines/s")
    print(f"agreement: {len(log) - len(disagree):,}/{len(log):,} lines; labels: {len(log) - len(wrong):,}/{len(log):,} "
          f"right; false positives on noise: {fp}")
    for i in (disagree + wrong)[:10]:
        print(f"  line {i}: classify={fast[i]} re-prefilter={plain[i]} baseline={slow[i]} expected={log[i][3]} "
              f":: {log[i][0][:150]}")
    return 1 if disagree or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
