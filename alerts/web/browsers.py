"""Browsers against the API and dashboard when nothing authenticates them (no ``[server] api_tokens``).

Without tokens, anyone who can reach the port may use the admin API — meant for a server bound to
loopback. A web page the operator has open can reach loopback too:

- by DNS rebinding: ``evil.example`` resolves to 127.0.0.1, so the page is same-origin with this server
  and may read alerts and post acknowledgements. Its requests name the attacker's host in ``Host``: on a
  loopback server only a loopback name or ``[server] public_url``'s host is answered.
- by a cross-site form (``text/plain`` and form bodies need no CORS preflight): a state-changing request
  whose ``Origin`` is not this server, or that the browser marks ``Sec-Fetch-Site: cross-site``, is refused.

Webhooks and Slack's buttons are signed, and health and metrics change nothing: those are left alone.
With ``api_tokens`` set, a browser cannot forge the bearer token, and the dashboard has its own login.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from alerts.config import Settings, is_loopback_host

EXEMPT = ("/v1/webhooks", "/v1/slack/", "/healthz", "/readyz", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@functools.lru_cache(maxsize=256)  # asked on every request; the same few Host values come again and again
def _foreign_host(host: str, public_url: str) -> str | None:
    """The name in ``Host`` if it is neither a loopback name nor ``public_url``'s host, else ``None``."""
    name = _host_name(host)
    public = (urlsplit(public_url).hostname or "").lower() if public_url else ""
    return None if is_loopback_host(name) or name == public else name


def _host_name(host: str) -> str:
    """``127.0.0.1:8080`` → ``127.0.0.1``, ``[::1]:8080`` → ``::1``, lower-cased."""
    try:
        return (urlsplit(f"//{host}").hostname or "").lower()
    except ValueError:
        return host.lower()


def _origin(url: str) -> str:
    """``scheme://host[:port]`` as a browser sends it in ``Origin`` (the default port left out)."""
    parts = urlsplit(url)
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}" + (f":{port}" if port and port != default else "")


def refusal(scope: Any, settings: Settings) -> str | None:
    """Why this request must not be answered (a sentence for the 403), or ``None``."""
    server = settings.server
    if server.api_tokens:
        return None
    path = scope.get("path", "")
    if path.startswith(EXEMPT):
        return None
    if path.startswith("/v1/events") and settings.webhooks.native.secrets:
        return None  # signed
    host = origin = fetch_site = None
    for key, value in scope.get("headers") or ():
        if key == b"host":
            host = value.decode("latin-1")
        elif key == b"origin":
            origin = value.decode("latin-1")
        elif key == b"sec-fetch-site":
            fetch_site = value.decode("latin-1")
    if host is not None and is_loopback_host(server.host):
        name = _foreign_host(host, str(server.public_url) if server.public_url else "")
        if name is not None:
            return (f"Host {name[:100]!r} does not name this server, which answers loopback names only without "
                    "[server] api_tokens (a DNS-rebinding page looks like this); behind a proxy, set "
                    "[server] public_url to the name it is reached by")
    if scope.get("method", "GET") in SAFE_METHODS:
        return None
    if fetch_site in ("cross-site", "same-site"):
        return "cross-site request refused: without [server] api_tokens the API takes no requests from other sites"
    public_origin = _origin(str(server.public_url)) if server.public_url else None
    if origin is not None and (origin == "null" or host is None or urlsplit(origin).netloc.lower() != host.lower()) \
            and _origin(origin) != public_origin:  # behind a proxy the browser's Origin is the public name
        return (f"Origin {origin[:100]!r} is not this server: without [server] api_tokens the API takes no "
                "requests from other sites")
    return None
