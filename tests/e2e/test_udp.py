"""UDP echo over real sockets: exact datagrams, many sources, reflection safety, exact counts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from echostat.server.config import Config, ListenerConfig
from echostat.service import Service
from tests.conftest import udp_config
from tests.e2e.conftest import StartEchostat
from tests.helpers import (
    LOCAL_PORTS,
    get_json,
    payload,
    round_trip,
    stats_when,
    udp_socket,
    wait_until,
    within_deadline,
)


@pytest.fixture
def config() -> Config:
    return udp_config()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with udp_socket() as sock:
        yield sock


def udp_stats(service: Service, name: str = "udp") -> dict[str, Any]:
    snap = next(u for u in service.registry.snapshot().udp_listeners if u.name == name)
    return dataclasses.asdict(snap)


@pytest.mark.parametrize("size", [0, 1, 1472, 8192, 65507], ids=lambda size: f"{size}B")
async def test_datagram_of_any_size_comes_back_exactly(
    service: Service, client: socket.socket, size: int
) -> None:
    """A binary datagram of 0 to 65,507 bytes comes back unchanged, as one datagram."""
    data = payload(size)
    address = ("127.0.0.1", service.echo_port("udp"))
    assert await round_trip(client, address, data) == data


@contextlib.asynccontextmanager
async def ipv6_service(**changes: object) -> AsyncIterator[Service]:
    """A started service with a UDP listener ``udp6`` on ::1 too; `changes` replace fields of
    its `udp` section. Skips where the host has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    config = udp_config(**changes)
    udp6 = ListenerConfig(name="udp6", host="::1", port=0, protocol="udp")
    service = Service(dataclasses.replace(config, listeners=(*config.listeners, udp6)))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def test_ipv6_listener_echoes() -> None:
    """A listener on ::1 echoes a datagram from an IPv6 source."""
    async with ipv6_service() as service:
        with udp_socket(socket.AF_INET6) as sock:
            address = ("::1", service.echo_port("udp6"))
            assert await round_trip(sock, address, b"over six") == b"over six"
        peers = service.registry.peers()
        assert [(p.listener, p.peer.startswith("[::1]:")) for p in peers] == [("udp6", True)]


async def test_largest_ipv6_datagram_fits_the_smallest_bytes_bound() -> None:
    """With udp.max_bytes_per_s 1000, a 65,527-byte datagram (the largest over IPv6) still
    comes back: the bytes budget holds one largest datagram over either IP version."""
    async with ipv6_service(max_bytes_per_s=1000) as service:
        with udp_socket(socket.AF_INET6) as sock:
            data = payload(65_527)
            assert await round_trip(sock, ("::1", service.echo_port("udp6")), data) == data


async def test_200_sources_each_get_their_own_datagrams(service: Service) -> None:
    """200 sources send 5 distinct datagrams each at once; each gets exactly its own back."""
    address = ("127.0.0.1", service.echo_port("udp"))
    loop = asyncio.get_running_loop()
    sockets = [udp_socket() for _ in range(200)]

    async def exchange(n: int, sock: socket.socket) -> list[bytes]:
        sent = [payload(100 + n, seed=n * 10 + i) for i in range(5)]
        sock.connect(address)  # from the server only (see round_trip)
        for data in sent:
            sock.sendto(data, address)
        got = [await loop.sock_recv(sock, 70000) for _ in sent]
        assert sorted(got) == sorted(sent)
        return got

    try:
        await within_deadline(asyncio.gather(*(exchange(n, s) for n, s in enumerate(sockets))))
    finally:
        for sock in sockets:
            sock.close()
    stats = udp_stats(service)
    assert stats["datagrams_received"] == stats["datagrams_sent"] == 1000
    assert stats["peers"] == 200


def privileged_socket() -> socket.socket:
    """A UDP socket bound to a free port below 1024 (needs root)."""
    for port in range(1023, 600, -1):
        try:
            return udp_socket(bind=("127.0.0.1", port))
        except PermissionError:
            pytest.skip("binding a port below 1024 needs root")
        except OSError:
            continue
    raise AssertionError("no free port below 1024")


async def test_datagrams_from_privileged_ports_are_dropped(
    service: Service, client: socket.socket
) -> None:
    """A datagram from source port < 1024 is counted as dropped and never answered, while
    one from an ordinary port is echoed."""
    address = ("127.0.0.1", service.echo_port("udp"))
    with privileged_socket() as privileged:
        privileged.connect(address)
        privileged.sendto(b"loop?", address)
        assert await round_trip(client, address, b"fine") == b"fine"
        await wait_until(lambda: udp_stats(service)["datagrams_received"] == 2)
        with pytest.raises(BlockingIOError):
            privileged.recv(100)
    stats = udp_stats(service)
    assert stats["dropped"] == {"privileged_source_port": 1}
    assert stats["datagrams_sent"] == 1
    assert stats["peers"] == 1  # the dropped source never enters the peers table


async def test_privileged_ports_are_served_when_allowed() -> None:
    """With udp.allow_privileged_source_ports, a source port < 1024 gets its echo."""
    service = Service(udp_config(allow_privileged_source_ports=True))
    await service.start()
    try:
        with privileged_socket() as privileged:
            address = ("127.0.0.1", service.echo_port("udp"))
            assert await round_trip(privileged, address, b"trusted") == b"trusted"
    finally:
        await service.stop()


async def test_flood_from_one_address_is_cut_to_its_rate_while_another_is_served() -> None:
    """1,000 datagrams at once from 127.0.0.1 with a limit of 50/s: at most 50 plus the
    refill during the flood come back, the rest count as source_rate drops, and every
    datagram from 127.0.0.2 meanwhile is echoed."""
    rate = 50
    service = Service(udp_config(max_datagrams_per_s_per_ip=rate))
    await service.start()
    address = ("127.0.0.1", service.echo_port("udp"))
    loop = asyncio.get_running_loop()
    try:
        with udp_socket() as flooder, udp_socket(bind=("127.0.0.2", 0)) as other:
            flooder.connect(address)
            started = time.monotonic()
            for n in range(1000):
                flooder.sendto(n.to_bytes(4, "big"), address)
                if n % 50 == 0:
                    assert await round_trip(other, address, b"me too") == b"me too"
            await wait_until(lambda: udp_stats(service)["datagrams_received"] == 1020)
            elapsed_s = time.monotonic() - started
            echoed = 0
            while True:
                try:
                    await asyncio.wait_for(loop.sock_recv(flooder, 100), 0.2)
                except TimeoutError:
                    break
                echoed += 1
    finally:
        await service.stop()
    assert rate <= echoed <= rate + rate * elapsed_s + 1, (echoed, elapsed_s)
    stats = udp_stats(service)
    assert stats["dropped"] == {"source_rate": 1000 - echoed}
    assert stats["datagrams_sent"] == echoed + 20


def has_read(service: Service, count: int) -> Callable[[], bool]:
    """Whether the `udp` listener of `service` has read `count` datagrams."""
    return lambda: bool(udp_stats(service)["datagrams_received"] == count)


async def test_pushing_a_source_out_of_the_peers_table_gives_it_no_new_bucket() -> None:
    """50 datagrams/s per IP and a table of 100 peers: 5 rounds of 50 datagrams from
    127.0.0.1, each followed by one from each of 100 other addresses, which push it out of the
    table. 127.0.0.1 still gets at most 50 plus the refill over the run; before, its bucket
    went with its last peer and came back full each round: all 250."""
    rate, rounds, others = 50, 5, 100
    service = Service(udp_config(max_datagrams_per_s_per_ip=rate, max_peers=others))
    await service.start()
    address = ("127.0.0.1", service.echo_port("udp"))
    try:
        with contextlib.ExitStack() as sockets:
            crowd = [
                sockets.enter_context(udp_socket(bind=(f"127.0.1.{n}", 0)))
                for n in range(1, others + 1)
            ]
            target = sockets.enter_context(udp_socket())
            started = time.monotonic()
            for round_ in range(1, rounds + 1):
                for _ in range(rate):
                    target.sendto(b"t", address)
                for sock in crowd:
                    sock.sendto(b"o", address)
                await wait_until(has_read(service, round_ * (rate + others)))
            elapsed_s = time.monotonic() - started
            stats = udp_stats(service)
    finally:
        await service.stop()
    assert stats["peers_evicted"] >= rounds, stats
    target_echoes = rounds * rate - stats["dropped"].get("source_rate", 0)
    assert stats["datagrams_sent"] == target_echoes + rounds * others, stats
    assert rate <= target_echoes <= rate + rate * elapsed_s + 1, (target_echoes, elapsed_s)


async def test_listener_rate_drops_beyond_its_budget() -> None:
    """With a per-listener limit of 10/s, a burst of 40 from 40 sources gets 10 echoes plus
    the refill during the burst; the rest count as listener_rate drops."""
    service = Service(udp_config(max_datagrams_per_s=10))
    await service.start()
    sockets = [udp_socket() for _ in range(40)]
    try:
        started = time.monotonic()
        for sock in sockets:
            sock.sendto(b"x" * 100, ("127.0.0.1", service.echo_port("udp")))
        await wait_until(lambda: udp_stats(service)["datagrams_received"] == 40)
        elapsed_s = time.monotonic() - started
        stats = udp_stats(service)
    finally:
        for sock in sockets:
            sock.close()
        await service.stop()
    assert 10 <= stats["datagrams_sent"] <= 10 + 10 * elapsed_s + 1, (stats, elapsed_s)
    assert stats["dropped"] == {"listener_rate": 40 - stats["datagrams_sent"]}


async def test_bytes_bound_drops_what_would_exceed_it(client: socket.socket) -> None:
    """With udp.max_bytes_per_s 1000 the budget still holds one largest datagram: the first
    40,000-byte datagram is echoed, the second counts as a bytes_rate drop."""
    service = Service(udp_config(max_bytes_per_s=1000))
    await service.start()
    try:
        await send_one_over_the_bytes_bound(service, client)
        await wait_until(lambda: udp_stats(service)["datagrams_received"] == 2)
        assert udp_stats(service)["dropped"] == {"bytes_rate": 1}
    finally:
        await service.stop()


async def send_one_over_the_bytes_bound(service: Service, client: socket.socket) -> None:
    """With udp.max_bytes_per_s 1000: a 40,000-byte datagram echoed, then one more sent."""
    address = ("127.0.0.1", service.echo_port("udp"))
    data = payload(40_000)
    assert await round_trip(client, address, data) == data
    client.sendto(data, address)


async def test_counts_in_api_stats_peers_and_metrics_are_exact(
    service: Service, client: socket.socket
) -> None:
    """After 3 sources sent known datagrams, /api/stats, /api/peers and /metrics agree with
    what the clients did, to the byte."""
    address = ("127.0.0.1", service.echo_port("udp"))
    with udp_socket() as second, udp_socket() as third:
        sent = 0
        for n, sock in enumerate([client, second, third]):
            for i in range(n + 1):
                data = payload(500 + i, seed=n)
                assert await round_trip(sock, address, data) == data
                sent += len(data)
        stats = await stats_when(
            service.status_port,
            lambda s: any(u["datagrams_sent"] == 6 for u in s["udp_listeners"]),
        )
        udp = next(u for u in stats["udp_listeners"] if u["name"] == "udp")
        assert udp == {
            "name": "udp",
            "host": "127.0.0.1",
            "port": address[1],
            "datagrams_received": 6,
            "datagrams_sent": 6,
            "bytes_received": sent,
            "bytes_sent": sent,
            "dropped": 0,
            "dropped_by_reason": {},
            "peers": 3,
            "peers_evicted": 0,
        }
        table = await get_json(service.status_port, "/api/peers?limit=2")
        assert table["total"] == 3
        assert [row["datagrams_received"] for row in table["peers"]] == [3, 2]
        third_port = third.getsockname()[1]
        assert table["peers"][0]["peer"] == f"127.0.0.1:{third_port}"
        assert table["peers"][0]["bytes_sent"] == 500 + 501 + 502
        assert table["peers"][0]["first_seen"] <= table["peers"][0]["last_seen"] <= time.time()
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{service.status_port}/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }
    label = (("listener", "udp"),)
    assert samples[("echostat_udp_datagrams_received_total", label)] == 6
    assert samples[("echostat_udp_bytes_sent_total", label)] == sent
    assert samples[("echostat_udp_peers", label)] == 3


async def test_idle_peers_are_forgotten() -> None:
    """A peer silent for udp.peer_idle_s leaves the peers table and the count."""
    service = Service(udp_config(peer_idle_s=1))
    await service.start()
    try:
        with udp_socket() as sock:
            address = ("127.0.0.1", service.echo_port("udp"))
            assert await round_trip(sock, address, b"hi") == b"hi"
            assert udp_stats(service)["peers"] == 1
            await wait_until(lambda: udp_stats(service)["peers"] == 0)
            assert service.registry.peers() == []
    finally:
        await service.stop()


UDP_LISTENER = (
    *LOCAL_PORTS,
    *("--set", "listeners.2.name=udp", "--set", "listeners.2.protocol=udp"),
    *("--set", "listeners.2.port=0"),
)
"""CLI flags for the repo's config.yaml plus a UDP listener ``udp`` on a free port."""


async def test_workers_share_a_udp_listener(start_echostat: StartEchostat) -> None:
    """With two workers, 40 sources each get their echo, both workers serve some of them
    (SO_REUSEPORT), and the page shows the sum."""
    echostat = start_echostat(
        *UDP_LISTENER, "--set", "workers=2", "--set", "udp.max_datagrams_per_s_per_ip=0"
    )
    address = ("127.0.0.1", echostat.ports["udp"])
    sockets = [udp_socket() for _ in range(40)]
    try:
        for n, sock in enumerate(sockets):
            assert await round_trip(sock, address, payload(n, seed=n)) == payload(n, seed=n)
    finally:
        for sock in sockets:
            sock.close()
    stats = await stats_when(
        echostat.status_port,
        lambda s: bool(s["udp_listeners"]) and s["udp_listeners"][0]["datagrams_sent"] == 40,
    )
    assert stats["udp_listeners"][0]["peers"] == 40
    assert stats["udp_listeners"][0]["bytes_sent"] == sum(range(40))
    table = await get_json(echostat.status_port, "/api/peers")
    assert table["total"] == 40
    assert {row["worker"] for row in table["peers"]} == {w["pid"] for w in stats["workers"]}
    assert len(stats["workers"]) == 2


def kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped for a full receive buffer on the UDP `port`, from
    /proc/net/udp (the last column)."""
    drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            drops += int(fields[-1])
    return drops


async def test_burst_from_1000_sources_keeps_the_peers_table_bounded_and_memory_flat(
    start_echostat: StartEchostat,
) -> None:
    """Two bursts of 100,000 datagrams from 1,000 new sources each: the table never holds
    more than udp.max_peers (the oldest are evicted), every datagram is accounted for (echoed,
    dropped by a rate limit, or dropped by the kernel for a full buffer), and the server's
    memory after the second burst is what it was after the first."""
    echostat = start_echostat(*UDP_LISTENER, "--set", "udp.max_peers=100")
    port = echostat.ports["udp"]
    rss: list[int] = []
    for burst in range(1, 3):
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1000)]
        try:
            for round_ in range(100):
                data = round_.to_bytes(2, "big") * 8
                for sock in sockets:
                    sock.sendto(data, ("127.0.0.1", port))
        finally:
            for sock in sockets:
                sock.close()
        stats = await stats_when(
            echostat.status_port,
            lambda s, burst=burst: (  # type: ignore[misc]
                s["udp_listeners"][0]["datagrams_received"] + kernel_drops(port) == burst * 100_000
            ),
        )
        udp = stats["udp_listeners"][0]
        assert udp["peers"] <= 100
        seen = udp["datagrams_received"]
        assert udp["datagrams_sent"] + udp["dropped"] == seen
        assert udp["peers_evicted"] >= burst * 1000 - 100 - (burst * 100_000 - seen), udp
        rss.append(echostat.rss_bytes())
    assert rss[1] - rss[0] < 4 * 1024 * 1024, rss
    assert echostat.tracebacks() == []


async def test_a_single_drop_is_warned_about_as_one_datagram(
    client: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    """One datagram over udp.max_bytes_per_s: the warning names it as one datagram dropped."""
    caplog.set_level(logging.WARNING, logger="echostat.server.udp")
    service = Service(udp_config(max_bytes_per_s=1000))
    await service.start()
    try:
        await send_one_over_the_bytes_bound(service, client)
        await wait_until(lambda: any("dropped" in r.getMessage() for r in caplog.records))
    finally:
        await service.stop()
    warning = next(r.getMessage() for r in caplog.records if "dropped" in r.getMessage())
    assert "dropped 1 datagram since the last report (since start: bytes_rate 1)" in warning
