"""R3.6: Slack and Stitch-log connections go only to public addresses, the ones the guard checked.

The Slack peer listens on 127.0.0.1; "localhost" resolves to it through the system resolver, which
stands in for a name on the allow-list that a poisoned resolver or DNS rebinding points at loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from aiohttp.abc import AbstractResolver
from pydantic import SecretStr

from alerts.channels import DeliveryError
from alerts.channels.slack import SlackChannel
from alerts.config import SlackSettings
from alerts.netguard import NonPublicAddress, PublicOnlyResolver, guarded_sync_transport, guarded_transport, is_public
from tests.conftest import Clock
from tests.peers.slack import TOKEN, SlackPeer
from tests.test_slack import outgoing


@pytest.fixture
def peer(clock: Clock) -> Iterator[SlackPeer]:
    p = SlackPeer(clock=clock).start()
    yield p
    p.stop()


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("0.0.0.0", False), ("::", False),
    ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False), ("fc00::1", False),
    ("169.254.169.254", False), ("fe80::1%eth0", False), ("100.64.0.1", False), ("100.127.255.254", False),
    ("224.0.0.251", False), ("ff02::1", False), ("240.0.0.1", False), ("255.255.255.255", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", False), ("2002:7f00:1::1", False), ("not an ip", False),
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::7f00:1", False), ("64:ff9b::808:808", True),  # NAT64
    ("::7f00:1", False), ("::808:808", False),  # IPv4-compatible
])
def test_only_globally_routable_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


class Answers(AbstractResolver):  # fixed answers: no DNS on this machine
    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(self, host, port=0, family=0):  # noqa: ANN001, ANN201
        return [{"hostname": host, "host": h, "port": port, "family": family, "proto": 0, "flags": 0}
                for h in self.hosts]

    async def close(self) -> None:
        return None


def test_the_resolver_keeps_the_public_answers_and_refuses_a_name_with_none() -> None:
    kept = asyncio.run(PublicOnlyResolver(Answers("10.0.0.7", "8.8.4.4", "::ffff:8.8.8.8", "1.1.1.1"))
                       .resolve("slack.com", 443))
    assert [r["host"] for r in kept] == ["8.8.4.4", "1.1.1.1"]
    with pytest.raises(NonPublicAddress, match=r"slack\.com resolves to no public address \(10\.0\.0\.7, 169"):
        asyncio.run(PublicOnlyResolver(Answers("169.254.169.254", "10.0.0.7")).resolve("slack.com", 443))


def rebound(peer: SlackPeer, *, allow_loopback: bool) -> SlackChannel:
    """A channel whose base_url names a host that resolves to loopback (built past the config check,
    which refuses such a URL when it is written down: this is what a rebinding resolver does later)."""
    settings = SlackSettings.model_construct(bot_token=SecretStr(TOKEN), base_url=f"http://localhost:{peer.port}/api",
                                             allow_loopback_base_url=allow_loopback)
    return SlackChannel(settings)


def test_a_name_that_resolves_to_loopback_is_never_connected_to(peer: SlackPeer) -> None:
    with pytest.raises(DeliveryError, match="resolves to no public address") as info:
        asyncio.run(rebound(peer, allow_loopback=False).send(outgoing()))
    assert info.value.retryable  # DNS may come right; the attempt budget bounds it
    assert peer.requests == []  # nothing reached the peer: refused before connecting
    # The same channel with the loopback explicitly allowed (tests) reaches the peer: the refusal above
    # was the resolver's doing, not a broken URL.
    assert asyncio.run(rebound(peer, allow_loopback=True).send(outgoing()))
    assert [r.path for r in peer.requests] == ["/api/chat.postMessage"]


def test_the_guarded_connector_is_aiohttps_own_resolver_path(peer: SlackPeer) -> None:
    """A plain aiohttp request through the channel's connector: refused as a DNS failure, with our reason."""
    async def get() -> None:
        async with aiohttp.ClientSession(connector=rebound(peer, allow_loopback=False)._connector()) as session:
            await session.get(f"http://localhost:{peer.port}/api/api.test")

    with pytest.raises(aiohttp.ClientConnectorError) as info:
        asyncio.run(get())
    assert isinstance(info.value.os_error, NonPublicAddress)
    assert peer.requests == []


# -- httpx (the Stitch extraction log): the same guard in the network backend ---------------------


def fetch(url: str, **guard) -> httpx.Response:  # noqa: ANN003
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=guarded_transport(**guard), timeout=5) as client:
            return await client.get(url)

    return asyncio.run(get())


def test_the_httpx_guard_refuses_loopback_unless_allowed(peer: SlackPeer) -> None:
    with pytest.raises(NonPublicAddress, match=r"127\.0\.0\.1 resolves to no public address"):
        fetch(f"http://127.0.0.1:{peer.port}/api/api.test")
    with pytest.raises(NonPublicAddress, match="localhost resolves to no public address"):
        fetch(f"http://localhost:{peer.port}/api/api.test")
    assert peer.requests == []  # refused before connecting
    assert fetch(f"http://127.0.0.1:{peer.port}/api/api.test", allow_loopback=True).status_code == 200
    assert [r.path for r in peer.requests] == ["/api/api.test"]


def test_the_httpx_guard_connects_to_the_address_it_checked(peer: SlackPeer) -> None:
    """A name resolving to a private and a (here allowed) loopback address: the private one is dropped,
    the connection goes to the one that passed, and the request still names the host."""
    asked: list[str] = []

    async def answers(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"logs.example": ["10.0.0.7", "127.0.0.1"], "meta.example": ["169.254.169.254", "fd00::1"]}[host]

    r = fetch(f"http://logs.example:{peer.port}/api/api.test", allow_loopback=True, resolve=answers)
    assert r.status_code == 200
    assert peer.requests[-1].headers.get("Host") == f"logs.example:{peer.port}"
    with pytest.raises(NonPublicAddress, match=r"meta\.example resolves to no public address \(169\.254\.169\.254, fd00::1\)"):
        fetch("https://meta.example/latest/meta-data/", allow_loopback=True, resolve=answers)
    assert asked == ["logs.example", "meta.example"]


def test_the_blocking_httpx_guard_is_the_same_guard(peer: SlackPeer) -> None:
    def get(url: str, **guard) -> httpx.Response:  # noqa: ANN003
        with httpx.Client(transport=guarded_sync_transport(**guard), timeout=5) as client:
            return client.get(url)

    with pytest.raises(NonPublicAddress, match=r"127\.0\.0\.1 resolves to no public address"):
        get(f"http://127.0.0.1:{peer.port}/api/api.test")
    assert peer.requests == []
    r = get(f"http://logs.example:{peer.port}/api/api.test", allow_loopback=True,
            resolve=lambda host, port: ["192.168.0.9", "127.0.0.1"])
    assert r.status_code == 200 and peer.requests[-1].headers.get("Host") == f"logs.example:{peer.port}"


def test_a_name_lookup_that_does_not_answer_is_a_connect_timeout(peer: SlackPeer) -> None:
    """The lookup counts against the connect timeout, on both httpx stacks; nothing is connected to."""
    import threading
    import time

    release = threading.Event()

    def stuck(host: str, port: int) -> list[str]:
        release.wait(30)
        return ["127.0.0.1"]

    async def stuck_async(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["127.0.0.1"]

    async def get_async() -> httpx.Response:
        async with httpx.AsyncClient(transport=guarded_transport(allow_loopback=True, resolve=stuck_async),
                                     timeout=0.3) as client:
            return await client.get(f"http://logs.example:{peer.port}/api/api.test")

    try:
        for attempt in ("blocking", "async"):
            start = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout, match="logs.example: name lookup timed out"):
                if attempt == "blocking":
                    with httpx.Client(transport=guarded_sync_transport(allow_loopback=True, resolve=stuck),
                                      timeout=0.3) as client:
                        client.get(f"http://logs.example:{peer.port}/api/api.test")
                else:
                    asyncio.run(get_async())
            assert time.monotonic() - start < 5, attempt
    finally:
        release.set()
    assert peer.requests == []
    # an answer within the timeout connects as before
    with httpx.Client(transport=guarded_sync_transport(allow_loopback=True, resolve=lambda h, p: ["127.0.0.1"]),
                      timeout=2) as client:
        assert client.get(f"http://logs.example:{peer.port}/api/api.test").status_code == 200
