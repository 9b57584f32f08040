#!/usr/bin/env python3
"""Webhook authentication cost: how cheap is refusing, and what does verifying add?

1. In process: microseconds per verification (Standard Webhooks, Fivetran HMAC, token match) for a
   4 KiB body, with 1 and 3 configured secrets (all are always tried, R1.2).
2. `alerts serve` under wrk (loopback, 2 threads, 32 connections, 10 s each) on four paths:
   a Fivetran request with a bad signature (401), the same after the address is rate-limited (429),
   a replayed signed Fivetran event (verified, decoded, a duplicate: 200), and an unknown source (401).
   Reports requests/s and p50/p99 latency.

    python bench/bench_webhooks.py [--duration 10] [--connections 32]

Needs Debian's `wrk` for part 2 (apt-get install -y wrk); part 1 runs anywhere.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from alerts.config import load_settings  # noqa: E402
from alerts.sources import signing  # noqa: E402
from tests.peers.server import ServerProcess  # noqa: E402

NATIVE = ["whsec_" + base64.b64encode(bytes([i]) * 32).decode() for i in range(3)]
FIVETRAN = [f"fivetran-bench-secret-{i:014d}" for i in range(3)]


def per_call(fn, n: int = 20_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def micro() -> None:
    print("verification, 4 KiB body (µs per call)")
    for count in (1, 3):
        for name, us in _micro(count):
            print(f"  {count} secret(s)  {name:28} {us:7.1f}")


def _micro(count: int) -> list[tuple[str, float]]:
    body = json.dumps({"integration_id": "sf-prod", "error": "x" * 4000}).encode()
    now = datetime.now(UTC)
    ts = str(int(now.timestamp()))
    s = load_settings(None, webhooks={"native": {"secrets": NATIVE[:count]}, "fivetran": {"secrets": FIVETRAN[:count]}})
    nkeys = signing.candidates(s.webhooks.native.secrets, now=now)
    fkeys = signing.candidates(s.webhooks.fivetran.secrets, now=now)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": ts,
               "webhook-signature": signing.sign_standard(NATIVE[count - 1], "msg_1", ts, body)}
    fsig = signing.sign_fivetran(FIVETRAN[count - 1], body)
    tolerance = s.webhooks.native.tolerance

    def bad_fivetran() -> None:
        try:
            signing.verify_fivetran("ab" * 32, body, fkeys)
        except signing.Unauthenticated:
            pass

    rows = [
        ("standard webhooks, valid", lambda: signing.verify_standard(headers, body, nkeys, now=now, tolerance=tolerance)),
        ("fivetran, valid", lambda: signing.verify_fivetran(fsig, body, fkeys)),
        ("fivetran, bad signature", bad_fivetran),
        ("path token, valid", lambda: signing.match_token(FIVETRAN[count - 1], fkeys)),
    ]
    return [(name, per_call(fn)) for name, fn in rows]


def wrk(url: str, *, duration: int, connections: int, script: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", fh.name, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "total": int(total.group(1)) if total else 0}


def lua(path: str, body: bytes | None, headers: dict[str, str]) -> str:
    hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    if body is None:
        return f'wrk.method = "GET"\nwrk.path = "{path}"\n'
    return f"""
wrk.method = "POST"
wrk.path = "{path}"
wrk.body = {json.dumps(body.decode())}
wrk.headers["Content-Type"] = "application/json"
{hdrs}
"""


def end_to_end(duration: int, connections: int) -> None:
    if not shutil.which("wrk"):
        print("wrk not installed: skipping the end-to-end part")
        return
    body = (ROOT / "tests/data/webhooks/fivetran_sync_end_failure.json").read_bytes()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = json.dumps({**json.loads(body), "created": now}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        cases = [
            ("GET /healthz (baseline)", 60, "/healthz", None),
            ("bad signature (401)", 1_000_000, "/v1/webhooks/fivetran", {"X-Fivetran-Signature-256": "ab" * 32}),
            ("rate-limited (429)", 1, "/v1/webhooks/fivetran", {"X-Fivetran-Signature-256": "ab" * 32}),
            ("unknown source (401)", 1_000_000, "/v1/webhooks/nosuch", {}),
            ("replayed signed event (200)", 1_000_000, "/v1/webhooks/fivetran",
             {"X-Fivetran-Signature-256": signing.sign_fivetran(FIVETRAN[0], body)}),
        ]
        print(f"\nalerts serve under wrk ({connections} connections, {duration} s, loopback)")
        for name, limit, path, headers in cases:
            send_body = None if headers is None else body
            headers = headers or {}
            config.write_text(f"[webhooks]\nmax_unauthorized_per_minute = {limit}\n"
                              f'[webhooks.fivetran]\nsecrets = ["{FIVETRAN[0]}"]\n')
            server = ServerProcess(cwd=Path(tmp), config=config).start()
            try:
                if send_body is not None:  # the first delivery, so the timed ones are replays
                    httpx.post(server.url + path, content=body, headers={"content-type": "application/json", **headers})
                r = wrk(server.url, duration=duration, connections=connections, script=lua(path, send_body, headers))
            finally:
                server.stop()
            print(f"  {name:30} {r['rps']:7.0f} req/s   p50 {r['p50']:>8}   p99 {r['p99']:>8}   "
                  f"non-2xx {r['non2xx']}/{r['total']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    micro()
    end_to_end(args.duration, args.connections)


if __name__ == "__main__":
    main()
