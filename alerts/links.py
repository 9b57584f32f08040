"""Reauthorize links (R3.6): the integration's configured one, else the event's, else the ``[links]`` template.

Only ``https`` URLs on port 443 whose host (a name, not an IP address) is allowed are ever put in a
message; anything else — ``http`` to localhost included — is dropped (and logged by the caller) and
the template is used instead. Templates pass the same checks when the configuration is loaded.
An event's link that carries a credential (``?access_token=…``, ``client_secret=…``: whatever
:func:`alerts.redact.redact` would hide) is dropped too: it would be stored and posted to a channel.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from alerts.config import LinkSettings, link_problem
from alerts.redact import redact

# Stitch's web app: an integration's page, where its "Re-authorize" button lives. The client id is the
# account id; the older UI addressed the same page as /client/{id}/pipeline/connections/{source_id}/summary.
STITCH_APP_URL = "https://app.stitchdata.com"
STITCH_SOURCE_PAGE = "https://app.stitchdata.com/client/{account_id}/pipeline/v2/sources/{integration_id}/"

# Known deep links, used when the user configured no template for that provider.
PROVIDER_DEFAULTS: dict[str, str] = {"stitch": STITCH_SOURCE_PAGE}

# Hosts of the known deep links: allowed for the events of their own source (a Stitch event may link to
# Stitch's web app; a HubSpot event from elsewhere may not).
KNOWN_HOSTS = {"stitch": frozenset({"app.stitchdata.com"}), "stitch-email": frozenset({"app.stitchdata.com"})}
# The longest link put in a message, percent-encoded as Slack gets it: a button's url may have 3000
# characters and an event's 2000 emoji would make 24,000 of them (Slack refuses the whole message).
URL_MAX = 2000
_URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"


def stitch_source_url(client_id: int | str, source_id: int | str, app_url: str = STITCH_APP_URL) -> str:
    """The Stitch page of one source (integration), where it is re-authorized."""
    return f"{app_url.rstrip('/')}/client/{quote(str(client_id), safe='')}/pipeline/v2/sources/{quote(str(source_id), safe='')}/"


def allowed_hosts(links: LinkSettings, *, source: str | None = None) -> set[str]:
    hosts = {h.lower() for h in links.allowed_hosts} | KNOWN_HOSTS.get(source or "", frozenset())
    for template in [links.reauthorize, *links.providers.values()]:
        if template:
            host = urlsplit(_fill(template, "x", "x", "x")).hostname
            if host:
                hosts.add(host.lower())
    return hosts


def is_safe_url(url: str | None, hosts: set[str]) -> bool:
    return bool(url) and unsafe_because(url, hosts) is None  # type: ignore[arg-type]


def unsafe_because(url: str, hosts: set[str]) -> str | None:
    """Why ``url`` may not go into a message (for the log: an operator must see what to allow), or ``None``."""
    problem = link_problem(url)
    if problem is not None:
        return problem
    if len(quote(url, safe=_URL_SAFE)) > URL_MAX:
        return f"longer than {URL_MAX} characters once percent-encoded"
    host = (urlsplit(url).hostname or "").lower()
    if host in hosts or any(h.startswith("*.") and host.endswith(h[1:]) for h in hosts):
        return None
    return f"host {host[:100]!r} is not in [links] allowed_hosts (nor a [links] template's host)"


def dropped_because(url: str, *, links: LinkSettings, source: str | None = None) -> str:
    """Why :func:`reauthorize_url` dropped ``url``, an event's link."""
    if redact(url) != url or "[REDACTED]" in url:
        return "it carries a credential"
    return unsafe_because(url, allowed_hosts(links, source=source)) or "refused"


def _fill(template: str, integration_id: str, account_id: str, provider: str) -> str:
    return (
        template.replace("{integration_id}", quote(integration_id, safe=""))
        .replace("{account_id}", quote(account_id, safe=""))
        .replace("{provider}", quote(provider, safe=""))
    )


def reauthorize_url(
    *,
    links: LinkSettings,
    integration_id: str,
    provider: str | None = None,
    account_id: str | None = None,
    candidates: tuple[str | None, ...] = (),
    configured: object | None = None,
    source: str | None = None,
) -> tuple[str | None, list[str]]:
    """``configured`` (the integration's own ``[[integrations]] reauthorize_url``: the operator's word,
    trusted as a ``[links]`` template is, its host need not be listed), else the first safe URL among
    ``candidates`` (the event's, from ``source``), else the template.

    Returns ``(url, rejected)`` where ``rejected`` lists the candidate URLs that failed the checks.
    """
    hosts = allowed_hosts(links, source=source)  # a provider's known page is a template: its host is added there
    rejected = []
    own_link = str(configured) if configured else None  # an HttpUrl from the config
    for url, trusted in [(own_link, True), *((c, False) for c in candidates)]:
        if not url:
            continue
        own = {(urlsplit(url).hostname or "").lower()} if trusted else set()
        if is_safe_url(url, hosts | own) and redact(url) == url and "[REDACTED]" not in url:  # stored redacted: broken
            return url, rejected
        rejected.append(url)
    default = PROVIDER_DEFAULTS.get(provider or "")
    if default and "{account_id}" in default and not account_id:
        default = None  # a known deep link needs the account (Stitch: the client id)
    template = links.providers.get(provider or "") or links.reauthorize or default
    if template:
        url = _fill(template, integration_id, account_id or "", provider or "")
        if is_safe_url(url, hosts | {urlsplit(url).hostname or ""}):
            return url, rejected
    return None, rejected
