"""Secrets reload without a restart (R1.4): the configuration file is watched, and a change puts its
webhook secrets and Slack signing secret in force within :data:`INTERVAL` (every worker process and
replica watches its own file). An invalid file is logged and ignored: the secrets in force stay."""

from __future__ import annotations

import asyncio
import logging
import os

from alerts.config import ConfigError, Settings, reload_secrets

log = logging.getLogger("alerts.config")

INTERVAL = 2.0


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


async def watch(settings: Settings, interval: float = INTERVAL) -> None:
    path = settings.config_path
    if path is None:
        return
    seen = _stamp(path)
    while True:
        await asyncio.sleep(interval)
        now = _stamp(path)
        if now == seen or now is None:  # unchanged, or mid-replacement (an editor's rename): look again
            continue
        seen = now
        try:
            changed = await asyncio.to_thread(reload_secrets, settings)
        except ConfigError as exc:
            log.error("configuration changed but is invalid; the secrets in force stay",
                      extra={"path": path, "error": str(exc)})
            continue
        if changed:
            log.warning("configuration reloaded: new secrets in force", extra={"path": path, "changed": changed})
        else:
            log.info("configuration changed; no secret changed (other settings need a restart)", extra={"path": path})
