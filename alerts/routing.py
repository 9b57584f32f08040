"""Route an alert to receivers by its labels (pure). Mirrors Alertmanager's route tree, flattened.

Routes are tried in order; the first that matches decides, unless it says ``continue = true``.
An alert no route matches goes to ``[alerting] default_receiver`` (default: the first receiver).
With no receivers configured at all, everything goes to the built-in file sink (``var/outbox/``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.config import Receiver, Route, Settings

FILE_RECEIVER = Receiver(name="file", file=True)


@dataclass(frozen=True)
class Target:
    """One place one message goes: a receiver's channel and its address there."""

    receiver: str
    channel: str  # "slack" | "email" | "file"
    address: dict[str, Any] = field(default_factory=dict)


def route_matches(match: Mapping[str, str], facts: Mapping[str, Any]) -> bool:
    """Every matcher must hold. Values are globs (``sf-*``); labels are matched by name."""
    labels = facts.get("labels") or {}
    for key, pattern in match.items():
        if key.startswith("labels."):
            value = labels.get(key[7:])
        elif key in facts:
            value = facts.get(key)
        else:
            value = labels.get(key)
        if value is None or not fnmatch.fnmatchcase(str(value), pattern):
            return False
    return True


def receivers_for(facts: Mapping[str, Any], settings: Settings) -> list[Receiver]:
    if not settings.receivers:
        return [FILE_RECEIVER]
    by_name = {r.name: r for r in settings.receivers}
    chosen: list[str] = []
    for route in settings.routes:
        if route_matches(route.match, facts):
            chosen.extend(n for n in route.receivers if n not in chosen)
            if not route.continue_:
                break
    if not chosen:
        chosen = [settings.alerting.default_receiver or settings.receivers[0].name]
    return [by_name[n] for n in chosen]


def targets_for(facts: Mapping[str, Any], settings: Settings, *, owner: str | None = None) -> list[Target]:
    """Every (receiver, channel) the alert described by ``facts`` is sent to."""
    out: list[Target] = []
    for receiver in receivers_for(facts, settings):
        out.extend(receiver_targets(receiver, owner=owner))
    return out


def receiver_targets(receiver: Receiver, *, owner: str | None = None) -> list[Target]:
    out: list[Target] = []
    if receiver.slack:
        out.append(Target(receiver.name, "slack", {"channel": receiver.slack.channel}))
    if receiver.email:
        to = list(receiver.email.to)
        if receiver.email.owner and owner and owner not in to:
            to.append(owner)
        if to:
            out.append(Target(receiver.name, "email", {"to": to}))
    if receiver.file:
        out.append(Target(receiver.name, "file", {}))
    return out


def facts_of(alert: Any, *, base_code: str | None = None) -> dict[str, Any]:
    """The fields routes match on, from an alert row."""
    return {
        "integration_id": alert.integration_id,
        "integration_name": alert.integration_name or "",
        "provider": alert.provider or "",
        "auth_method": alert.auth_method or "",
        "code": alert.code,
        "base_code": base_code or alert.code,
        "severity": alert.severity,
        "account_id": alert.account_id or "",
        "labels": dict(alert.labels or {}),
    }


__all__ = ["FILE_RECEIVER", "Route", "Target", "facts_of", "receiver_targets", "receivers_for", "targets_for"]
