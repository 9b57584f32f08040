"""Route an alert to receivers by its facts (pure). Mirrors Alertmanager's route tree, flattened.

Routes are tried in order; the first that matches decides, unless it says ``continue = true``
(then later matching routes add their receivers too). A matching route with ``receivers = []``
sends nothing (a deliberate "drop"). An alert no route matches goes to ``[alerting]
default_receiver`` (default: the first receiver). With no receivers configured at all,
everything goes to the built-in file sink (``var/outbox/``).

Matchers (``[[routes]] match``) are globs (``sf-*``) or lists of globs (any may match) on
``integration_id``, ``integration_name``, ``provider``, ``code``, ``base_code``, ``severity``,
``auth_method``, ``account_id`` and any label (``team = "revops"`` or ``"labels.team" = ...``).
``code`` matches the alert's code *or* the base code it refines; ``provider`` compares canonical
provider ids, so ``meta`` matches ``facebook``.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.catalog import canonical_provider, load_catalog
from alerts.config import Receiver, Route, Settings

FILE_RECEIVER = Receiver(name="file", file=True)


@dataclass(frozen=True)
class Target:
    """One place one message goes: a receiver's channel and its address there."""

    receiver: str
    channel: str  # "slack" | "email" | "file"
    address: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _builtin_aliases() -> dict[str, str]:
    return dict(load_catalog().aliases)


def default_canonical(name: str) -> str:
    return canonical_provider(name, _builtin_aliases()) or ""


def _patterns(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def route_matches(
    match: Mapping[str, str | Sequence[str]],
    facts: Mapping[str, Any],
    *,
    canonical: Callable[[str], str] = default_canonical,
) -> bool:
    """Every matcher must hold. Values are globs or lists of globs; unknown keys name labels."""
    labels = facts.get("labels") or {}
    for key, wanted in match.items():
        patterns = _patterns(wanted)
        if key.startswith("labels."):
            values = [labels.get(key[7:])]
        elif key == "code":
            values = [facts.get("code"), facts.get("base_code")]
        elif key == "provider":
            values = [canonical(str(facts.get("provider") or ""))]
            patterns = [canonical(p) if not any(c in p for c in "*?[") else p.lower() for p in patterns]
        elif key in facts:
            values = [facts.get(key)]
        else:
            values = [labels.get(key)]
        if not any(
            v is not None and fnmatch.fnmatchcase(str(v), p) for v in values for p in patterns
        ):
            return False
    return True


def receivers_for(facts: Mapping[str, Any], settings: Settings) -> list[Receiver]:
    if not settings.receivers:
        return [FILE_RECEIVER]
    by_name = {r.name: r for r in settings.receivers}
    chosen: list[str] = []
    matched = False
    for route in settings.routes:
        if route_matches(route.match, facts):
            matched = True
            chosen.extend(n for n in route.receivers if n not in chosen)
            if not route.continue_:
                break
    if not matched:
        chosen = [settings.alerting.default_receiver or settings.receivers[0].name]
    return [by_name[n] for n in chosen]


def targets_for(facts: Mapping[str, Any], settings: Settings, *, owner: str | None = None) -> list[Target]:
    """Every (receiver, channel) the alert described by ``facts`` is sent to."""
    out: list[Target] = []
    for receiver in receivers_for(facts, settings):
        out.extend(receiver_targets(receiver, owner=owner))
    return out


def receiver_targets(receiver: Receiver, *, owner: str | None = None) -> list[Target]:
    """A receiver's targets. ``email = {owner = true}`` adds the integration's ``owner`` address."""
    out: list[Target] = []
    if receiver.slack:
        out.append(Target(receiver.name, "slack", {"channel": receiver.slack.channel}))
    if receiver.email:
        to = list(receiver.email.to)
        if receiver.email.owner and owner and owner.lower() not in {a.lower() for a in to}:
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


__all__ = [
    "FILE_RECEIVER",
    "Route",
    "Target",
    "facts_of",
    "receiver_targets",
    "receivers_for",
    "route_matches",
    "targets_for",
]
