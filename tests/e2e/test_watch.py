"""Watching: echostat probes its peers continuously and shows what it finds in /api/watch
and /metrics; wrong bytes, lost datagrams, names that resolve to several addresses and a
stalled event loop each show up as themselves."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from echostat.probe.watch import Watcher, WatchTarget
from echostat.server.config import WatchConfig, WatchTargetConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.e2e.conftest import StartEchostat
from tests.faulty_servers import DropsEveryNth, faulty_server, flips_byte
from tests.helpers import DEADLINE_S, LOCAL_PORTS, get_json, wait_until

INTERVAL_S = 0.5
WITHIN_TWO_ROUNDS_S = 2 * INTERVAL_S + 2.0
"""Two rounds, and a margin for a loaded machine."""


def watching(*targets: tuple[str, str], **settings: Any) -> WatchConfig:
    """A watch section of (name, target) pairs, every INTERVAL_S, short timeouts."""
    settings = {"interval_s": INTERVAL_S, "timeout_s": 1.0, **settings}
    return WatchConfig(tuple(WatchTargetConfig(n, t, **settings) for n, t in targets))


@pytest.fixture
def free_port() -> Iterator[int]:
    """A loopback port held by a bound socket that never listens: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def metric_samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` whose name starts echostat_watch, by name and labels."""
    body = (await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")).body.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name.startswith("echostat_watch")
    }


async def watched(service: Service) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = (await get_json(service.status_port, "/api/watch"))["targets"]
    return targets


@pytest.fixture
def mesh(io_loop: IOLoop) -> Iterator[list[Service]]:
    """Three echostat services on loopback ports, watching nothing yet; stopped after."""
    services = [Service(loopback_config()) for _ in range(3)]
    for service in services:
        io_loop.run_sync(service.start)
    yield services
    for service in services:
        io_loop.run_sync(service.stop)


async def test_three_instances_see_two_peers_up_and_a_dead_port_down(
    mesh: list[Service], free_port: int
) -> None:
    """Each of three instances, reconfigured to watch the other two and a port where nothing
    listens, shows two targets up and one down within two rounds, in the API and metrics."""
    for index, service in enumerate(mesh):
        peers = [
            (f"peer{other}", f"127.0.0.1:{peer.echo_port('main')}")
            for other, peer in enumerate(mesh)
            if other != index
        ]
        new = dataclasses.replace(
            service.config, watch=watching(*peers, ("nobody", f"127.0.0.1:{free_port}"))
        )
        # What a reload applies (the whole reload, log level included, runs in
        # test_watch_prometheus.py with SIGHUP; here it would set the root logger's level).
        service.reconfigure(new)

    async def all_settled() -> bool:
        for service in mesh:
            targets = await watched(service)
            if len(targets) != 3 or any(t["last_round"] is None for t in targets):
                return False
        return True

    await wait_until(all_settled, "a round against every target", WITHIN_TWO_ROUNDS_S)
    for service in mesh:
        targets = {t["name"]: t for t in await watched(service)}
        assert [t["up"] for t in targets.values()] == [False, True, True]  # nobody, peers
        assert "connection refused" in targets["nobody"]["last_round"]["error"]
        peer = next(t for name, t in targets.items() if name != "nobody")
        assert peer["last_round"]["verified"] == 5 and peer["protocol"] == "tcp"
        samples = await metric_samples(service.status_port)
        ups = {
            dict(labels)["name"]: v
            for (name, labels), v in samples.items()
            if name == "echostat_watch_up"
        }
        assert sorted(ups.values()) == [0.0, 1.0, 1.0] and ups["nobody"] == 0.0


async def start_watching(watch: WatchConfig) -> Service:
    service = Service(loopback_config(watch=watch))
    await service.start()
    return service


async def test_udp_target_losing_every_fifth_datagram_shows_a_fifth_lost() -> None:
    """Rounds of 5 datagrams through a server that drops every fifth: loss_ratio_5m 0.2, and
    the lost round trips counted in the metrics."""
    server = DropsEveryNth(5)
    service = await start_watching(
        watching(("lossy", f"udp://127.0.0.1:{server.port}"), timeout_s=1.0)
    )
    try:

        async def three_rounds() -> bool:
            targets = await watched(service)
            sent: int = sum(point["sent"] for t in targets for point in t["history"])
            return sent >= 15

        await wait_until(three_rounds, "three rounds", 10 * INTERVAL_S + 2)
        (target,) = await watched(service)
        assert target["protocol"] == "udp"
        assert target["loss_ratio_5m"] == pytest.approx(0.2, abs=0.05)
        assert target["up"] is True
        samples = await metric_samples(service.status_port)
        labels = (("address", "127.0.0.1"), ("name", "lossy"))
        lost = samples["echostat_watch_round_trips_total", (*labels, ("outcome", "lost"))]
        verified = samples["echostat_watch_round_trips_total", (*labels, ("outcome", "verified"))]
        assert lost >= 3 and lost / (lost + verified) == pytest.approx(0.2, abs=0.05)
    finally:
        await service.stop()
        server.close()


async def test_a_wrong_byte_counts_failed_and_the_target_down() -> None:
    """A TCP echo that flips one bit of byte 10: the round trip fails, `up` is false, and the
    failure names the byte."""
    with faulty_server(flips_byte(10)) as port:
        service = await start_watching(watching(("flips", f"127.0.0.1:{port}")))
        try:

            async def one_round() -> bool:
                return any(t["last_round"] for t in await watched(service))

            await wait_until(one_round, "a round", WITHIN_TWO_ROUNDS_S)
            (target,) = await watched(service)
            assert target["up"] is False
            assert target["last_round"]["failed"] == 1
            assert "byte 10 differs" in target["last_round"]["error"]
            samples = await metric_samples(service.status_port)
            labels = (("address", "127.0.0.1"), ("name", "flips"), ("outcome", "failed"))
            assert samples["echostat_watch_round_trips_total", labels] >= 1
            assert samples["echostat_watch_up", labels[:2]] == 0
        finally:
            await service.stop()


async def test_a_name_stands_for_every_address_it_resolves_to(service: Service) -> None:
    """A name resolving to two addresses is two targets; when it resolves to one again (a pod
    gone), the other target disappears by itself."""
    answers = {"fleet.test": ["127.0.0.1", "127.0.0.2"]}

    async def resolve(host: str, port: int, protocol: str) -> list[str]:
        return answers[host]

    port = service.echo_port("main")
    target = WatchTarget.parse("fleet", f"fleet.test:{port}", 0.2, 2, 64, 1.0)
    watcher = Watcher([target], max_targets=64, resolve=resolve)
    watcher.start()
    try:
        await wait_until(
            lambda: [t.address for t in watcher.targets() if t.last_round] == answers["fleet.test"],
            "two targets",
        )
        assert [t.up for t in watcher.targets()] == [True, False]  # nothing on 127.0.0.2
        answers["fleet.test"] = ["127.0.0.1"]
        await wait_until(lambda: len(watcher.targets()) == 1, "the second address gone")
        answers["fleet.test"] = [f"127.0.0.{n}" for n in range(1, 11)]
        watcher.reconfigure([target], max_targets=3)
        await wait_until(lambda: len(watcher.targets()) == 3, "three of ten addresses")
        first = watcher.targets()[0]
        rounds_later = first.verified_total + 3 * 2
        await wait_until(lambda: first.verified_total >= rounds_later, "three more rounds")
        assert len(watcher.targets()) == 3
    finally:
        await watcher.stop()


class StallingEcho(asyncio.Protocol):
    """An echo on the test's own loop that blocks the loop for STALL_S on its `stall_at`th read."""

    STALL_S = 0.4
    reads = 0
    stall_at = 12

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        StallingEcho.reads += 1
        if StallingEcho.reads == StallingEcho.stall_at:
            time.sleep(self.STALL_S)  # the deliberate stall of the loop the watcher runs on
        self.transport.write(data)


async def test_a_stalled_loop_marks_the_round_instead_of_reporting_latency() -> None:
    """A loop blocked for 0.4 s during a round: the round is marked late, and no round trip
    near 0.4 s reaches the RTT histogram or the round's figures."""
    server = await asyncio.get_running_loop().create_server(StallingEcho, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    watcher = Watcher([WatchTarget.parse("local", f"127.0.0.1:{port}", 0.3, 5, 64, 2.0)], 64)
    watcher.start()
    try:

        def stalled_round_recorded() -> bool:
            # Round 3 holds the stall; its round trips count once it is recorded.
            return any(t.verified_total >= 3 * 5 for t in watcher.targets())

        await wait_until(stalled_round_recorded, "the round with the stall")
        (target,) = watcher.targets()
        assert StallingEcho.reads >= StallingEcho.stall_at
        assert target.late_rounds_total >= 1
        over_quarter_second = sum(target.rtt.counts[target.rtt.bounds_s.index(0.25) + 1 :])
        assert over_quarter_second == 0  # the 0.4 s round trip stayed out of the histogram
        assert any(point.late_rounds for point in target.history())
        assert all(
            point.max_ms is None or point.max_ms < 250 for point in target.history()
        )  # and out of the chart
    finally:
        await watcher.stop()
        server.close()


async def test_with_workers_only_the_supervisor_watches(start_echostat: StartEchostat) -> None:
    """Two workers and a supervisor: the target sees one connection per round, all of them
    in the supervisor's /api/watch, never one per process."""
    connections = 0

    async def echo_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    target = await asyncio.start_server(echo_back, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    settings = {"name": "outside", "target": f"127.0.0.1:{port}", "interval_s": 0.2, "count": 1}
    supervisor = start_echostat(
        *LOCAL_PORTS,
        *("--set", "workers=2"),
        *(
            arg
            for key, value in settings.items()
            for arg in ("--set", f"watch.targets.0.{key}={value}")
        ),
    )
    try:

        async def rounds() -> int:
            targets = await get_json(supervisor.status_port, "/api/watch")
            return sum(point["sent"] for t in targets["targets"] for point in t["history"])

        async def five_rounds() -> bool:
            return await rounds() >= 5

        await wait_until(five_rounds, "five rounds")
        before = connections
        seen = await rounds()
        # Every round counted has connected, and at most one in flight has connected without
        # being counted yet; with every worker watching too, three would per round.
        assert before - 1 <= seen <= connections
    finally:
        target.close()


async def test_a_stop_in_the_turn_a_name_resolves_still_ends_the_watch(free_port: int) -> None:
    """A stop whose cancellation comes in the very turn the resolver answers: Python 3.11's
    `asyncio.wait_for` then returns the answer and the cancellation is lost. The watch still
    ends after that round, and the stop returns (it used to wait for ever, the round loop
    going on)."""
    asked, answer = asyncio.Event(), asyncio.Event()

    async def resolve(host: str, port: int, protocol: str) -> list[str]:
        asked.set()
        await answer.wait()
        return ["127.0.0.1"]

    target = WatchTarget.parse("t", f"name.invalid:{free_port}", 0.1, 1, 64, 2.0)
    watcher = Watcher([target], 64, resolve)
    watcher.start()
    await asyncio.wait_for(asked.wait(), DEADLINE_S)
    answer.set()  # the resolver's task runs first in the next turn, then the cancelled round
    await asyncio.wait_for(watcher.stop(), DEADLINE_S)
