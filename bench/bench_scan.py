"""Log scanning throughput: ``alerts scan --dry-run --json`` against ``LC_ALL=C grep -ciE`` on the same file.

    python bench/bench_scan.py                 # 1 GiB log under bench/out/ (generated once, ~30 s)
    python bench/bench_scan.py --size-mb 256   # quicker
    python bench/bench_scan.py --re-mb 32      # also time the pure-re engine on the first 32 MB

The log is generated (seeded) from Meltano, Airflow, Singer/Stitch and plain application lines, with
about one real authentication failure per 10,000 lines taken from the labelled corpus
(``tests/data/catalog_corpus.jsonl``). Noise lines that any catalog pattern could match are dropped
while generating, so "the lines grep counts" and "the lines alerts reports" must be the same set.

grep gets the same combined pattern: every catalog pattern, as it is now, written as a POSIX ERE
(``alerts.scan.as_posix_ere``, one per line of a ``-f`` file). Both read the file from the page cache
(it is read once before timing); each is run ``--runs`` times and the best wall time counts, including
``alerts``' interpreter start-up and pattern compilation. Peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from alerts.catalog import load_catalog
from alerts.scan import LineScanner, as_posix_ere, build_plan
from alerts.sources.logs import LineRules

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "catalog_corpus.jsonl"
OUT = ROOT / "bench" / "out"

TAPS = ["tap-hubspot", "tap-salesforce", "tap-google-ads", "tap-facebook", "tap-postgres", "tap-stripe",
        "tap-zendesk", "tap-shopify", "tap-github", "tap-quickbooks", "tap-xero", "tap-intercom"]
DAGS = ["hubspot_daily", "salesforce_sync", "ads_spend", "finance_ledger", "product_events"]
STREAMS = ["contacts", "deals", "companies", "orders", "invoices", "accounts", "tickets", "users", "events"]
WORDS = ("sync stream batch record page cursor bookmark schema table column partition chunk retry "
         "request response latency rows bytes upload download commit flush merge insert update").split()


def _ts(rng: random.Random) -> str:
    return (f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}Z")


def noise(rng: random.Random) -> str:
    tap, stream, n = rng.choice(TAPS), rng.choice(STREAMS), rng.randint(0, 99999)
    words = " ".join(rng.choices(WORDS, k=rng.randint(3, 9)))
    kind = rng.randrange(10)
    meltano = f" cmd_type=elb consumer=False name={tap} producer=True stdio=stderr string_id={tap}"
    if kind < 4:
        return (f'{_ts(rng)} [info     ] INFO METRIC: {{"type": "counter", "metric": "record_count", "value": {n}, '
                f'"tags": {{"endpoint": "{stream}"}}}}{meltano}')
    if kind < 6:
        return f"{_ts(rng)} [info     ] INFO {words} {stream} offset={n}{meltano}"
    if kind < 8:
        dag = rng.choice(DAGS)
        return (f"[{_ts(rng)[:10]}, {_ts(rng)[11:19]} UTC] {{logging_mixin.py:{rng.randint(100, 200)}}} INFO - "
                f"{words} {n} rows for {dag}.{stream}")
    if kind < 9:
        return f"{_ts(rng)[:19].replace('T', ' ')},{rng.randint(100, 999)}Z    tap - INFO {words} {stream}: {n}"
    return (f"{_ts(rng)} level=info msg=\"{words}\" status=200 duration_ms={n % 997} "
            f"path=/api/v2/{stream}/{n} bytes={n * 7}")


def auth_lines(rng: random.Random) -> list[str]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in rows:
        text = row["text"]
        if not row.get("expected") or not text.isascii() or "\n" in text or "\r" in text or len(text) > 400:
            continue
        tap = rng.choice(TAPS)
        out.append(f"{_ts(rng)} [error    ] {text} cmd_type=elb consumer=False name={tap} producer=True "
                   f"stdio=stderr string_id={tap}")
    return out


def generate(path: Path, size: int, seed: int) -> list[int]:
    """Write the log; return the 1-based numbers of the lines alerts must report."""
    rng = random.Random(seed)
    catalog = load_catalog()
    plan = build_plan(catalog, LineRules.default())
    # A pool of distinct noise lines, without any line a catalog pattern could match.
    pool = [noise(rng) for _ in range(50_000)]
    blob = ("\n".join(pool) + "\n").encode()
    hits = {blob.count(b"\n", 0, hit) for hit in plan.candidates.hits(blob, 0, len(blob))}
    pool = [line for i, line in enumerate(pool) if i not in hits]
    # Failure lines that the scanner reports on their own (no exclude, no provider-only pattern).
    failures = []
    for line in auth_lines(rng):
        scanner = LineScanner(plan, path=str(path))
        if len(scanner.feed(line.encode() + b"\n")) == 1:
            failures.append(line)
    expected: list[int] = []
    line_no = 0
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        written = 0
        while written < size:
            block = rng.choices(pool, k=10_000)
            at = rng.randrange(len(block))
            block[at] = rng.choice(failures)
            expected.append(line_no + at + 1)
            text = "\n".join(block) + "\n"
            fh.write(text)
            written += len(text)
            line_no += len(block)
    return expected


def catalog_key() -> str:
    catalog = load_catalog()
    return hashlib.sha256("\n".join(p.regex.pattern for p in catalog.patterns).encode()).hexdigest()[:16]


def run(cmd: list[str], stdout: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Wall seconds, exit status and peak RSS (KiB) of one child process."""
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if stdout:
        out.close()  # type: ignore[union-attr]
    if proc.returncode != 0 and not (cmd[0] == "grep" and proc.returncode == 1):  # grep: 1 = no match
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {stderr}")
    return elapsed, proc.returncode, usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--re-mb", type=int, default=0, help="also time the pure-re engine on this many MB")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"scan-{args.size_mb}m.log"
    meta_path = log.with_suffix(".json")
    key = {"size_mb": args.size_mb, "seed": args.seed, "catalog": catalog_key()}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and log.exists() else {}
    if {k: meta.get(k) for k in key} != key:
        print(f"generating {log} ({args.size_mb} MiB) ...", flush=True)
        started = time.perf_counter()
        expected = generate(log, args.size_mb * 1024 * 1024, args.seed)
        meta_path.write_text(json.dumps({**key, "expected": expected}))
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        expected = meta["expected"]
    size = log.stat().st_size

    catalog = load_catalog()
    patterns = args.out / "catalog.ere"
    patterns.write_bytes(b"\n".join(as_posix_ere(p.regex.pattern, p.regex.flags) for p in catalog.patterns) + b"\n")

    with open(log, "rb") as fh:  # into the page cache, for both
        while fh.read(16 << 20):
            pass

    env = {**os.environ, "LC_ALL": "C"}
    grep = ["grep", "-c", "-i", "-E", "-f", str(patterns), str(log)]
    alerts = [sys.executable, "-m", "alerts", "scan", "--dry-run", "--json", "--no-progress", "--engine", args.engine,
              str(log)]
    findings = args.out / "findings.jsonl"
    best_grep = best_alerts = float("inf")
    rss = 0
    for _ in range(args.runs):
        t, _, _ = run(grep, stdout=args.out / "grep.out", env=env)  # not /dev/null: grep would stop at the first match
        best_grep = min(best_grep, t)
        t, _, maxrss = run(alerts, stdout=findings)
        best_alerts = min(best_alerts, t)
        rss = max(rss, maxrss)

    grep_lines = subprocess.run(["grep", "-n", "-i", "-E", "-f", str(patterns), str(log)], env=env,
                                capture_output=True, check=False).stdout.decode().splitlines()
    grep_set = {int(line.split(":", 1)[0]) for line in grep_lines}
    ours = [json.loads(line)["line_no"] for line in findings.read_text().splitlines()]
    same = set(ours) == grep_set == set(expected) and len(ours) == len(expected)

    mb = size / 1e6
    print(f"file:      {log} ({size / 2**20:,.0f} MiB, {len(expected):,} failures)")
    print(f"grep -ciE: {mb / best_grep:8,.0f} MB/s  ({best_grep:.2f} s, {len(grep_set):,} lines)")
    print(f"alerts:    {mb / best_alerts:8,.0f} MB/s  ({best_alerts:.2f} s, {len(ours):,} findings, "
          f"engine {args.engine}, peak RSS {rss / 1024:,.0f} MB)")
    print(f"ratio:     {best_grep / best_alerts:.2f}x grep")
    print(f"findings:  {'identical' if same else 'DIFFERENT'} (grep, alerts and the generator's list)")
    if args.re_mb:
        part = args.out / f"scan-{args.re_mb}m-part.log"
        with open(log, "rb") as src, open(part, "wb") as dst:
            data = src.read(args.re_mb * 1024 * 1024)
            dst.write(data[: data.rfind(b"\n") + 1])
        t, _, _ = run([*alerts[:-2], "re", str(part)], stdout=args.out / "findings-re.jsonl")
        same_re = [json.loads(x)["line_no"] for x in (args.out / "findings-re.jsonl").read_text().splitlines()] \
            == [n for n in ours if n <= data[: data.rfind(b"\n") + 1].count(b"\n")]
        print(f"re engine: {part.stat().st_size / 1e6 / t:8,.1f} MB/s on {args.re_mb} MB "
              f"({'same findings' if same_re else 'DIFFERENT findings'})")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
