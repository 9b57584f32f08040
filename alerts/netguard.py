"""Outbound connections go to public addresses only, the ones that were checked (R3.6).

Configuration already refuses URLs whose host is an IP literal or not on the allow-list; but a name
on the allow-list can still resolve to 127.0.0.1, 10.x or 169.254.169.254 (a poisoned resolver, DNS
rebinding), and a URL a remote API hands us (Stitch's redirect to an extraction log) names any host.
Both HTTP stacks get the same guard: it resolves the name, drops every loopback, private, link-local,
CGNAT, multicast, reserved and IPv4-mapped address, and connects to exactly what is left (TLS still
checks the certificate against the name). A name with no public address is refused before any
connection.

- aiohttp (Slack): :class:`PublicOnlyResolver`, the connector's resolver.
- httpx (the Stitch API and extraction log; Fivetran's Connect Card API): :func:`guarded_transport`
  and :func:`guarded_sync_transport`, whose network backends resolve and check before they open the
  TCP connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx
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
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None:
            return False
        if ip in _NAT64:  # 64:ff9b::/96 reaches the IPv4 address in its last 32 bits
            return is_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip in _IPV4_COMPATIBLE:  # ::a.b.c.d, deprecated; never a destination
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp resolver: the inner resolver's answers that :func:`is_public` accepts, or :class:`NonPublicAddress`."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public(r["host"])]
        if not public:
            raise _refusal(host, {r["host"] for r in found})
        return public

    async def close(self) -> None:
        await self._inner.close()


async def _addresses(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _addresses_sync(host: str, port: int) -> list[str]:
    return list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def _lookup_within(resolve: Callable[[str, int], list[str]], host: str, port: int, timeout: float | None) -> list[str]:
    """``resolve(host, port)``, given up on after ``timeout`` seconds (``TimeoutError``).

    ``getaddrinfo`` cannot be interrupted and its own patience is the resolver's (``resolv.conf``:
    5 s per try and server, several tries), so the lookup runs on a daemon thread of its own that is
    left to finish alone when it is too slow; the caller, a delivery or a webhook's thread, moves on."""
    if timeout is None:
        return resolve(host, port)
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, resolve(host, port)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=f"lookup {host}", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(host)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _allowed(address: str, allow_loopback: bool) -> bool:
    """Public, or (``allow_loopback``: the tests' local peers) loopback."""
    if is_public(address):
        return True
    try:
        return allow_loopback and ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refusal(host: str, found: Iterable[str]) -> NonPublicAddress:
    return NonPublicAddress(f"{host} resolves to no public address ({', '.join(sorted(set(found)))}); "
                            "refusing to connect")


def _checked(host: str, found: list[str], allow_loopback: bool) -> list[str]:
    allowed = [a for a in found if _allowed(a, allow_loopback)]
    if not allowed:
        raise _refusal(host, found)
    return allowed


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: resolve the host, keep the public addresses (with ``allow_loopback``,
    loopback too: the tests' local peers), connect to the first that answers; else :class:`NonPublicAddress`.

    httpcore still does TLS against the URL's host name (SNI and certificate): only the TCP connect
    gets the checked address."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, *, allow_loopback: bool = False,
                 resolve: Callable[[str, int], Awaitable[list[str]]] = _addresses) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback
        self._resolve = resolve

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):  # the name's lookup counts against the connect timeout
                found = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"{host}: name lookup timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        error: Exception | None = None
        for address in _checked(host, found, self._allow_loopback):
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise NonPublicAddress("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicOnlySyncBackend(httpcore.NetworkBackend):
    """:class:`PublicOnlyBackend` for httpx's blocking client."""

    def __init__(self, inner: httpcore.NetworkBackend, *, allow_loopback: bool = False,
                 resolve: Callable[[str, int], list[str]] = _addresses_sync) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            found = _lookup_within(self._resolve, host, port, timeout)  # the lookup counts against the timeout
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"{host}: name lookup timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        error: Exception | None = None
        for address in _checked(host, found, self._allow_loopback):
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise NonPublicAddress("unix sockets are not an outbound destination")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install(transport: Any, wrap: Callable[[Any], Any]) -> Any:
    pool = transport._pool  # httpx builds its httpcore pool with no way to pass a network backend
    inner = getattr(pool, "_network_backend", None)
    if inner is None:
        raise RuntimeError("httpx/httpcore changed: cannot install the public-address guard")
    pool._network_backend = wrap(inner)
    return transport


def guarded_transport(*, allow_loopback: bool = False,
                      resolve: Callable[[str, int], Awaitable[list[str]]] | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through :class:`PublicOnlyBackend`."""
    return _install(httpx.AsyncHTTPTransport(), lambda inner: PublicOnlyBackend(
        inner, allow_loopback=allow_loopback, resolve=resolve or _addresses))


def guarded_sync_transport(*, allow_loopback: bool = False,
                           resolve: Callable[[str, int], list[str]] | None = None) -> httpx.HTTPTransport:
    """The blocking twin of :func:`guarded_transport`."""
    return _install(httpx.HTTPTransport(), lambda inner: PublicOnlySyncBackend(
        inner, allow_loopback=allow_loopback, resolve=resolve or _addresses_sync))
