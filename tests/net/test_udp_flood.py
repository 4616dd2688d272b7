"""One source floods echostat's UDP port while a second sends a datagram every 10 ms, in
namespaces: with the shipped nftables rules (deploy/nftables/) loaded on the server, the
second source keeps 99 % of its echoes; without them the kernel drops its datagrams with the
flood's, and echostat shows those drops as ``receive_buffer``, equal to the kernel's count."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import REPO, EchostatProcess, wait_for
from tests.net.topology import (
    DIRECT_SERVER_ADDRESS,
    SERVER_ADDRESS,
    Namespace,
    RoutedPath,
    routed_path,
)

RULES = REPO / "deploy" / "nftables" / "echostat-udp.nft"
SENDERS = REPO / "tests" / "net" / "flood.py"
FLOOD_DATAGRAMS = 1_000_000
FLOOD_SECONDS = 2.5
STEADY_SECONDS = 2.5
"""How long the second source sends, beside the flood: 250 datagrams."""

FETCH = """
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=30) as answer:
    print(answer.read().decode())
"""


@dataclass(frozen=True)
class Flooded:
    """echostat serving UDP in the server namespace of `path`, on the rules' port."""

    path: RoutedPath
    server: EchostatProcess
    port: int


@dataclass(frozen=True)
class FloodResult:
    flood_sent: int
    flood_seconds: float
    steady_sent: int
    steady_echoed: int
    receive_buffer_drops: int
    """What echostat's /api/stats gained in ``dropped_by_reason.receive_buffer``."""


def rules_port() -> int:
    """The UDP port the shipped rules protect (their ``define ECHO_PORT``)."""
    found = re.search(r"^define ECHO_PORT = (\d+)$", RULES.read_text(), re.MULTILINE)
    assert found, f"{RULES} defines no ECHO_PORT"
    return int(found[1])


def pinned(index: int) -> list[str]:
    """taskset to the `index`th CPU this process may use, when it may use two or more, so that
    the flood and the server each have one."""
    cpus = sorted(os.sched_getaffinity(0))
    return ["taskset", "-c", str(cpus[index])] if len(cpus) >= 2 else []


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flooded]:
    with routed_path() as path:
        port = rules_port()
        config = tmp_path_factory.mktemp("flood") / "config.yaml"
        config.write_text(
            f"listeners:\n  - {{name: udp, host: 0.0.0.0, port: {port}, protocol: udp}}\n"
            "status: {host: 127.0.0.1, port: 0}\nshutdown_grace_s: 1\n"
            # Echo all it reads, as for a load test from one address: each datagram then
            # costs echostat a send as well, well above what it costs the batching flooder,
            # so the flood outruns it on any machine, as a faster flood would with the bounds.
            "udp: {max_datagrams_per_s_per_ip: 0, max_datagrams_per_s: 0, max_bytes_per_s: 0}\n"
        )
        server = EchostatProcess(
            ["--config", str(config)], prefix=[*path.server.argv(), *pinned(0)]
        )
        try:
            server.start()
            yield Flooded(path, server, port)
        finally:
            server.stop()


def fetch(flooded: Flooded, path: str) -> str:
    """GET `path` from the status side, inside the server namespace."""
    status_port = str(flooded.server.status_port)
    return flooded.path.server.run(sys.executable, "-c", FETCH, status_port, path)


def udp_stats(flooded: Flooded) -> dict[str, object]:
    """The UDP listener's object of /api/stats."""
    listener: dict[str, object] = json.loads(fetch(flooded, "/api/stats"))["udp_listeners"][0]
    return listener


def receive_buffer_drops(flooded: Flooded) -> int:
    reasons = udp_stats(flooded)["dropped_by_reason"]
    assert isinstance(reasons, dict)
    return int(reasons.get("receive_buffer", 0))


def kernel_receive_buffer_errors(ns: Namespace) -> int:
    """The namespace's UDP ``RcvbufErrors`` from /proc/net/snmp."""
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").splitlines()]
    names, values = next(pair for pair in itertools.pairwise(lines) if pair[0][0] == "Udp:")
    return int(values[names.index("RcvbufErrors")])


def flood_beside_a_steady_source(flooded: Flooded) -> FloodResult:
    """Flood over the direct link while a second source sends through the router."""
    client, port = flooded.path.client, str(flooded.port)
    drops_before = receive_buffer_drops(flooded)
    kernel_before = kernel_receive_buffer_errors(flooded.path.server)
    flood_args = [DIRECT_SERVER_ADDRESS, port, str(FLOOD_DATAGRAMS), str(FLOOD_SECONDS)]
    flood = subprocess.Popen(
        client.argv(*pinned(1), sys.executable, str(SENDERS), "flood", *flood_args),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        steady_args = [SERVER_ADDRESS, port, str(STEADY_SECONDS)]
        steady = client.run(sys.executable, str(SENDERS), "steady", *steady_args)
        flood_out, _ = flood.communicate(timeout=30)
    finally:
        flood.kill()
        flood.wait()
    kernel = kernel_receive_buffer_errors(flooded.path.server) - kernel_before

    def counted_as_the_kernel_did() -> tuple[int] | None:
        drops = receive_buffer_drops(flooded) - drops_before
        return (drops,) if drops == kernel else None  # a tuple: 0 drops is an answer too

    (drops,) = wait_for(
        counted_as_the_kernel_did, f"echostat's receive_buffer drops to match the kernel's {kernel}"
    )
    flood_sent, flood_seconds = flood_out.split()
    steady_sent, steady_echoed = steady.split()
    return FloodResult(
        int(flood_sent), float(flood_seconds), int(steady_sent), int(steady_echoed), drops
    )


def report(result: FloodResult, rules: str) -> str:
    return (
        f"{rules}: flood {result.flood_sent} datagrams in {result.flood_seconds} s"
        f" ({result.flood_sent / result.flood_seconds:,.0f}/s); second source"
        f" {result.steady_echoed}/{result.steady_sent} echoed"
        f" ({100 * result.steady_echoed / result.steady_sent:.1f} %); receive_buffer drops"
        f" {result.receive_buffer_drops}"
    )


def test_the_shipped_nftables_rules_keep_a_second_source_echoed_under_a_flood(
    flooded: Flooded, record_property: Callable[[str, object], None]
) -> None:
    """With deploy/nftables/echostat-udp.nft on the server: >= 99 % echoed to the second
    source, and the rules' counter shows the flood was cut in the kernel."""
    server = flooded.path.server
    server.nft(RULES.read_text())
    try:
        result = flood_beside_a_steady_source(flooded)
        listing = server.run("nft", "list", "table", "inet", "echostat_udp")
    finally:
        server.run("nft", "delete", "table", "inet", "echostat_udp")
    print(report(result, "with the rules"))
    record_property("with_rules", report(result, "with the rules"))
    cut = sum(map(int, re.findall(r"counter packets (\d+)", listing)))
    assert cut > result.flood_sent // 2, listing
    assert result.steady_echoed >= 0.99 * result.steady_sent, report(result, "with the rules")


def test_without_the_rules_a_flood_costs_the_second_source_and_is_counted(
    flooded: Flooded, record_property: Callable[[str, object], None]
) -> None:
    """The same flood with no rules: the kernel drops datagrams at the full receive buffer,
    and echostat's receive_buffer count equals the kernel's RcvbufErrors."""
    result = flood_beside_a_steady_source(flooded)
    print(report(result, "without the rules"))
    record_property("without_rules", report(result, "without the rules"))
    assert result.receive_buffer_drops > 0, report(result, "without the rules")
    metric = 'echostat_udp_datagrams_dropped_total{listener="udp",reason="receive_buffer"}'
    exposed = re.search(rf"^{re.escape(metric)} (\S+)$", fetch(flooded, "/metrics"), re.MULTILINE)
    assert exposed and float(exposed[1]) >= result.receive_buffer_drops
