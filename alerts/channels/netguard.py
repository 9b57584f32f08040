"""Outbound connections go to public addresses only, the ones that were checked (R3.6).

Configuration already refuses URLs whose host is an IP literal or not on the allow-list; but a name
on the allow-list can still resolve to 127.0.0.1, 10.x or 169.254.169.254 (a poisoned resolver, DNS
rebinding). :class:`PublicOnlyResolver` sits in aiohttp's connector: it resolves the name, drops
every loopback, private, link-local, CGNAT, multicast, reserved and IPv4-mapped address, and returns
what is left — and aiohttp connects to exactly the addresses the resolver returned (TLS still checks
the certificate against the name). A name with no public address is refused before any connection.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver


class NonPublicAddress(OSError):
    """The host resolved only to addresses an outbound connection must not reach."""


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private (RFC 1918, ULA),
    link-local, CGNAT (100.64/10), multicast, reserved, unspecified and IPv4-mapped IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped is not None or ip.sixtofour is not None):
        return False
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """aiohttp resolver: the inner resolver's answers that :func:`is_public` accepts, or :class:`NonPublicAddress`."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise NonPublicAddress(f"{host} resolves to no public address ({', '.join(sorted({r['host'] for r in found}))}); "
                                   "refusing to connect")
        return public

    async def close(self) -> None:
        await self._inner.close()
