"""The one small interface every channel implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from alerts.redact import redact
from alerts.render import Rendered


class DeliveryError(Exception):
    """A send failed. ``retryable`` says whether trying again can help; ``retry_after`` in seconds."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(redact(reason))
        self.reason = redact(reason)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class Outgoing:
    """One claimed outbox row, rendered, with what the channel needs to thread it."""

    notification_id: int
    idempotency_key: str
    kind: str
    alert_id: int | None
    address: dict[str, Any]
    rendered: Rendered
    message_id: str  # deterministic email Message-ID of this message
    thread_root_id: str | None = None  # email Message-ID this message replies to
    thread_ref: str | None = None  # channel reference of the alert's first message (Slack "channel:ts")
    extra: dict[str, Any] = field(default_factory=dict)
    instance: str = ""  # the database's id (storage.instance_id): keys repeat across deployments, this does not


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing) -> str | None:
        """Deliver ``message``; return an external reference (Slack ``channel:ts``, email Message-ID)."""
        ...

    async def aclose(self) -> None: ...
