"""Path reports on real loopback sockets: TCP speaks first only on report listeners; UDP
answers report requests, never with more bytes than asked."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from typing import Any

import pytest

from echostat.server import __version__
from echostat.server.config import Config, ListenerConfig
from echostat.service import Service
from tests.conftest import loopback_config, udp_config
from tests.helpers import (
    DEADLINE_S,
    close_all,
    echo_once,
    get_json,
    round_trip,
    stats_when,
    udp_socket,
    within_deadline,
)


def with_report_listeners(base: Config) -> Config:
    """`base` plus a TCP and a UDP listener with ``report: true`` on free loopback ports."""
    listeners = (
        *base.listeners,
        ListenerConfig(name="report", host="127.0.0.1", port=0, report=True),
        ListenerConfig(name="udp-report", host="127.0.0.1", port=0, protocol="udp", report=True),
    )
    return dataclasses.replace(base, listeners=listeners)


@pytest.fixture
def config() -> Config:
    return with_report_listeners(udp_config())


async def read_report(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await within_deadline(reader.readuntil(b"\r\n"))
    assert line.startswith(b"ECHOSTAT-REPORT {") and line.endswith(b"}\r\n"), line
    return json.loads(line[len(b"ECHOSTAT-REPORT ") :])  # type: ignore[no-any-return]


async def test_report_listener_speaks_first_then_echoes(service: Service) -> None:
    """One report line naming the client, the address reached and the SYN, then pure echo;
    the line is not counted as echoed bytes."""
    port = service.echo_port("report")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    report = await read_report(reader)
    client_port = writer.get_extra_info("sockname")[1]
    assert set(report) == {"version", "peer", "local", "syn", "proxy_source"}
    assert report["version"] == __version__
    assert report["peer"] == f"127.0.0.1:{client_port}"
    assert report["local"] == f"127.0.0.1:{port}"
    assert report["proxy_source"] is None
    assert (report["syn"]["ttl"], report["syn"]["hops"], report["syn"]["mss"]) == (64, 0, 65495)
    assert report["syn"]["sack"] and report["syn"]["timestamps"]
    writer.write(b"after the report")
    assert await within_deadline(reader.readexactly(16)) == b"after the report"
    (conn,) = service.registry.active_connections()
    assert conn.bytes_sent == conn.bytes_received == 16
    await close_all([writer])


async def test_plain_listener_never_speaks_first(service: Service) -> None:
    """Without report: the first bytes a client reads are its own echo (RFC 862)."""
    reader, writer = await echo_once(service.echo_port("main"), b"ping")
    writer.write(b"pong")
    assert await within_deadline(reader.readexactly(4)) == b"pong"
    await close_all([writer])


@pytest.mark.parametrize("config", [with_report_listeners(loopback_config(path_quality=False))])
async def test_report_without_path_quality_has_null_syn(service: Service) -> None:
    """With path quality off no SYN is kept: the report says null for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("report"))
    assert (await read_report(reader))["syn"] is None
    await close_all([writer])


def request(size: int) -> bytes:
    return b"ECHOSTAT-REPORT?" + b" " * (size - 16)


async def test_udp_report_request_is_answered_with_what_arrived(service: Service) -> None:
    """A 512-byte request: one report no longer than it, with its source, TTL and DSCP; the
    answer leaves with the request's DSCP."""
    port = service.echo_port("udp-report")
    with udp_socket() as client:
        client.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 10 << 2)
        client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 61)
        client.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        client.connect(("127.0.0.1", port))
        client.send(request(512))
        # The server runs on this loop: wait for the answer in a thread.
        client.settimeout(DEADLINE_S)
        answer, ancillary, _, _ = await asyncio.to_thread(
            client.recvmsg, 70000, socket.CMSG_SPACE(4)
        )
        assert len(answer) <= 512
        assert answer.startswith(b"ECHOSTAT-REPORT {") and answer.endswith(b"}\r\n")
        report = json.loads(answer[len(b"ECHOSTAT-REPORT ") :])
        assert report == {
            "version": __version__,
            "peer": f"127.0.0.1:{client.getsockname()[1]}",
            "local": f"127.0.0.1:{port}",
            "ttl": 61,
            "dscp": 10,
            "ecn": 0,
        }
        (tos,) = [data[0] for level, kind, data in ancillary if kind == socket.IP_TOS]
        assert tos >> 2 == 10


async def test_udp_bytes_sent_count_the_report_not_the_request(service: Service) -> None:
    """A 600-byte request answered with a shorter report, then a 5-byte echo: the listener's
    and the peer's bytes_sent are the report's length plus 5, what really went back, not 605."""
    address = ("127.0.0.1", service.echo_port("udp-report"))
    with udp_socket() as client:
        client.connect(address)
        client.send(request(600))
        client.settimeout(DEADLINE_S)
        answer = await asyncio.to_thread(client.recv, 70000)
        assert answer.startswith(b"ECHOSTAT-REPORT {") and len(answer) < 600
        client.setblocking(False)  # round_trip reads it on this loop
        assert await round_trip(client, address, b"hello") == b"hello"
    stats = await stats_when(
        service.status_port,
        lambda s: any(u["bytes_received"] == 605 for u in s["udp_listeners"]),
    )
    (listener,) = [u for u in stats["udp_listeners"] if u["name"] == "udp-report"]
    assert (listener["bytes_received"], listener["bytes_sent"]) == (605, len(answer) + 5)
    (peer,) = [
        p
        for p in (await get_json(service.status_port, "/api/peers"))["peers"]
        if p["listener"] == "udp-report"
    ]
    assert (peer["bytes_received"], peer["bytes_sent"]) == (605, len(answer) + 5)


@pytest.mark.parametrize(
    "data", [request(511), b"ECHOSTAT-REPORT?", b"hello", b"x" * 600], ids=["511", "16", "5", "600"]
)
async def test_udp_report_listener_echoes_everything_else(service: Service, data: bytes) -> None:
    """A request shorter than 512 bytes, or any other datagram, comes back as it was sent."""
    with udp_socket() as client:
        assert (
            await round_trip(client, ("127.0.0.1", service.echo_port("udp-report")), data) == data
        )


async def test_plain_udp_listener_echoes_a_report_request(service: Service) -> None:
    """Without report: a request is just a datagram, echoed byte for byte."""
    with udp_socket() as client:
        data = request(512)
        assert await round_trip(client, ("127.0.0.1", service.echo_port("udp")), data) == data


PROXIED = ListenerConfig(
    name="proxied",
    host="127.0.0.1",
    port=0,
    report=True,
    proxy_protocol=True,
    proxy_trusted=("127.0.0.0/8",),
)
IPV6 = ListenerConfig(name="report6", host="::1", port=0, protocol="udp", report=True)


@pytest.mark.parametrize("config", [loopback_config(listeners=(PROXIED, IPV6))])
async def test_report_behind_a_balancer_names_both(service: Service) -> None:
    """After a trusted PROXY header the report names the balancer as peer and the client
    as proxy_source."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("proxied"))
    writer.write(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 7008\r\nhi")
    report = await read_report(reader)
    assert report["peer"] == f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
    assert report["proxy_source"] == "198.51.100.7:40000"
    assert await within_deadline(reader.readexactly(2)) == b"hi"
    await close_all([writer])


@pytest.mark.parametrize("config", [loopback_config(listeners=(PROXIED, IPV6))])
async def test_udp_report_over_ipv6_gives_hop_limit_and_traffic_class(service: Service) -> None:
    """Over IPv6: the hop limit and traffic class of the request, addresses in brackets."""
    port = service.echo_port("report6")
    with udp_socket(socket.AF_INET6) as client:
        client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 46 << 2)
        client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 99)
        answer = await round_trip(client, ("::1", port), request(600))
        report = json.loads(answer[len(b"ECHOSTAT-REPORT ") :])
        assert (report["ttl"], report["dscp"], report["ecn"]) == (99, 46, 0)
        assert report["peer"] == f"[::1]:{client.getsockname()[1]}"
        assert report["local"] == f"[::1]:{port}"
