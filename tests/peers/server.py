"""Run ``alerts serve`` as a real process on port 0 and find out where it listens."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

_PORT = re.compile(r"running on https?://[^:]+:(\d+)")


class ServerProcess:
    def __init__(self, *, cwd: Path, config: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 30) -> ServerProcess:
        cmd = [sys.executable, "-m", "alerts", "serve", "--port", "0"]
        if self.config:
            cmd += ["--config", str(self.config)]
        self.port = None
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def reader() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.lines.append(line)
                m = _PORT.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()

        threading.Thread(target=reader, daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-30:]))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_records(self) -> list[dict]:
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_for(self, predicate, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError("condition not met in time")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)
