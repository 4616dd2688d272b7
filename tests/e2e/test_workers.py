"""Several workers: the kernel spreads connections, the page shows their sum, dead workers
come back, and SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import signal

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from tests.e2e.conftest import StartEchostat
from tests.helpers import (
    LOCAL_PORTS,
    close_all,
    echo_once,
    get_json,
    payload,
    run_cli,
    stats_when,
    wait_for,
    within_deadline,
)

TWO_WORKERS = (*LOCAL_PORTS, "--set", "workers=2", "--set", "shutdown_grace_s=2")


async def test_two_workers_share_the_load_and_the_page_shows_their_sum(
    start_echostat: StartEchostat,
) -> None:
    """40 clients: each echoes exactly; totals equal the sum over both workers and what the
    clients did; /api/connections and /metrics agree."""
    echostat = start_echostat(*TWO_WORKERS)
    data = [payload(1000 + n, seed=n) for n in range(40)]
    clients = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, d) for d in data))
    )
    sent = sum(map(len, data))
    stats = await stats_when(
        echostat.status_port,
        lambda s: s["connections"]["active"] == 40 and s["bytes"]["sent"] == sent,
    )
    workers = stats["workers"]
    assert len(workers) == 2
    assert all(w["active"] > 0 for w in workers), workers
    assert sum(w["active"] for w in workers) == 40
    assert sum(w["bytes_received"] for w in workers) == stats["bytes"]["received"] == sent
    table = await get_json(echostat.status_port, "/api/connections?limit=100")
    assert table["total"] == 40
    client_ports = {writer.get_extra_info("sockname")[1] for _, writer in clients}
    assert {int(row["peer"].rsplit(":", 1)[1]) for row in table["connections"]} == client_ports
    assert {row["worker"] for row in table["connections"]} == {w["pid"] for w in workers}
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{echostat.status_port}/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }
    per_worker = [
        v for (name, _), v in samples.items() if name == "echostat_worker_connections_active"
    ]
    assert sorted(per_worker) == sorted(float(w["active"]) for w in workers)
    await close_all([writer for _, writer in clients])
    await stats_when(echostat.status_port, lambda s: s["connections"]["closed"] == 40)


async def test_a_dead_worker_is_restarted_and_its_connections_stop_counting(
    start_echostat: StartEchostat,
) -> None:
    """SIGKILL one worker: it is logged, replaced and counted as a restart, its clients no
    longer count as active, the totals keep what it did, and new clients echo."""
    echostat = start_echostat(*TWO_WORKERS)
    clients = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, b"before") for _ in range(20)))
    )
    stats = await stats_when(echostat.status_port, lambda s: s["connections"]["active"] == 20)
    victim, survivor = stats["workers"]
    os.kill(victim["pid"], signal.SIGKILL)
    echostat.wait_for_line(f"(pid {victim['pid']}) died (killed by SIGKILL); restarting")
    stats = await stats_when(
        echostat.status_port,
        lambda s: len(s["workers"]) == 2 and victim["pid"] not in {w["pid"] for w in s["workers"]},
    )
    assert stats["connections"]["active"] == survivor["active"]
    assert stats["connections"]["accepted"] == 20
    assert stats["connections"]["closed"] == victim["active"]
    assert stats["worker_restarts"] == 1
    more = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, b"after") for _ in range(20)))
    )
    await stats_when(echostat.status_port, lambda s: s["connections"]["accepted"] == 40)
    await close_all([writer for _, writer in clients + more])


async def test_sigterm_drains_every_worker_and_exits_0(start_echostat: StartEchostat) -> None:
    """Open clients on both workers keep echoing through the grace period, then get EOF."""
    echostat = start_echostat(*TWO_WORKERS)
    clients = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, b"hello") for _ in range(10)))
    )
    await stats_when(echostat.status_port, lambda s: all(w["active"] for w in s["workers"]))
    echostat.signal(signal.SIGTERM)
    line = echostat.wait_for_line("/readyz is 503")
    assert line.rstrip("\n").endswith(
        "2 workers no longer accepting, then wait up to 2 s for 10 open connections to close"
    ), line
    for reader, writer in clients:
        writer.write(b" again")
        assert await within_deadline(reader.readexactly(6)) == b" again"
    for reader, _ in clients:
        assert await within_deadline(reader.read()) == b""
    assert await asyncio.to_thread(echostat.wait) == 0
    assert sum("exited with status 0" in line for line in echostat.log) == 2
    await close_all([writer for _, writer in clients])


def test_sigterm_during_a_restart_pause_stops_without_starting_the_worker(
    start_echostat: StartEchostat,
) -> None:
    """A worker that dies within a second of starting waits a second before it is started
    again; a SIGTERM meanwhile ends that wait, instead of a worker started after the drain
    began that nobody stops until the drain's deadline kills it."""
    echostat = start_echostat(*TWO_WORKERS)
    first = children(echostat.pid)
    os.kill(first[0], signal.SIGKILL)
    echostat.wait_for_line(f"(pid {first[0]}) died")
    restarted = wait_for(
        lambda: [pid for pid in children(echostat.pid) if pid not in first], "a new worker"
    )
    os.kill(restarted[0], signal.SIGKILL)
    echostat.wait_for_line(f"(pid {restarted[0]}) died")
    echostat.signal(signal.SIGTERM)
    assert echostat.wait() == 0
    drain = echostat.log[
        next(n for n, line in enumerate(echostat.log) if "shutting down" in line) :
    ]
    assert not [line for line in drain if "echoing:" in line or "did not exit" in line], drain


def children(pid: int) -> list[int]:
    """The processes `pid` started that are running now, from /proc."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


async def test_the_drain_line_counts_connections_opened_just_before_sigterm(
    start_echostat: StartEchostat,
) -> None:
    """The supervisor's shutting-down line asks the workers how many connections are open, as
    the API does, instead of reading reports up to half a second old that lacked the newest."""
    echostat = start_echostat(*TWO_WORKERS)
    clients = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, b"late") for _ in range(10)))
    )
    echostat.signal(signal.SIGTERM)
    line = echostat.wait_for_line("shutting down: /readyz is 503")
    assert "then wait up to 2 s for 10 open connections to close" in line, line
    await close_all([writer for _, writer in clients])
    assert await asyncio.to_thread(echostat.wait) == 0


async def test_two_workers_hold_twice_the_connections_of_one(
    start_echostat: StartEchostat,
) -> None:
    """Under a 128-descriptor limit each process holds 96 clients; two workers hold ~twice."""
    limits = ("--set", "limits.max_connections=96", "--set", "limits.max_connections_per_ip=0")
    one = start_echostat(*LOCAL_PORTS, *limits, fd_limit=128)
    held_by_one = await count_held(one.echo_port, 150)
    two = start_echostat(*TWO_WORKERS, *limits, fd_limit=128)
    held_by_two = await count_held(two.echo_port, 180)
    assert held_by_one == 96
    assert held_by_two >= 1.5 * held_by_one, held_by_two


async def count_held(port: int, clients: int) -> int:
    """Open `clients` connections at once; return how many echo (the rest are refused)."""

    async def attempt() -> asyncio.StreamWriter | None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"?")
        try:
            if await reader.read(1) == b"?":
                return writer
        except ConnectionResetError:
            pass
        writer.close()
        return None

    writers = await within_deadline(asyncio.gather(*(attempt() for _ in range(clients))))
    held = [writer for writer in writers if writer is not None]
    await close_all(held)
    return len(held)


def test_a_port_another_fleet_serves_is_in_use(start_echostat: StartEchostat) -> None:
    """A second echostat with workers on the TCP or UDP port of a running one exits 2 naming
    the key, as a single process does, instead of sharing the port through SO_REUSEPORT."""
    udp = ("--set", "listeners.1.protocol=udp")
    running = start_echostat(*TWO_WORKERS, *udp)
    for index, name in enumerate(["main", "report"]):
        port = running.ports[name]
        second = run_cli(*TWO_WORKERS, *udp, "--set", f"listeners.{index}.port={port}")
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.splitlines()
        assert line.rstrip("\n").endswith(
            f"listeners[{index}].port: cannot listen on 127.0.0.1:{port}: Address already in use"
            " (another process uses it; pick another port, or 0 for any)"
        ), line
