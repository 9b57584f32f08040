"""The file sink: with no Slack or SMTP configured, each notification becomes two files in
``var/outbox/``: ``<id>.json`` (the Slack payload) and ``<id>.eml`` (the email), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from alerts.channels.base import DeliveryError, Outgoing
from alerts.channels.mime import build_email


class FileSink:
    name = "file"

    def __init__(self, directory: str | os.PathLike[str], *, from_addr: str) -> None:
        self.directory = Path(directory)
        self.from_addr = from_addr

    async def send(self, message: Outgoing) -> str | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = self.directory / str(message.notification_id)
            payload = dict(message.rendered.slack)
            if payload:  # digests are email only
                _atomic_write(stem.with_suffix(".json"), json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
            email = build_email(
                message.rendered,
                from_addr=self.from_addr,
                to=list(message.address.get("to", [])),
                message_id=message.message_id,
                in_reply_to=message.thread_root_id,
            )
            _atomic_write(stem.with_suffix(".eml"), email.as_string())
        except OSError as exc:
            raise DeliveryError(f"file sink: {exc.strerror or exc}", retryable=True) from None
        return str(stem)

    async def aclose(self) -> None:
        return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
