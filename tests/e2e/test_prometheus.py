"""A real Prometheus scrapes two echostat instances with the shipped scrape config: fleet
totals equal what the clients did, every Grafana query answers with data, rules load."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient

from tests.e2e.conftest import StartEchostat
from tests.e2e.prometheus import PrometheusServer
from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    REPO,
    EchostatProcess,
    close_all,
    echo_once,
    payload,
    require_program,
    wait_until,
)

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "echostat-fleet.json"
SCRAPE_INTERVAL_S = 1
RATE_INTERVAL = "5s"
"""What Grafana's $__rate_interval becomes at this scrape interval (at least 4 scrapes)."""
UDP_LISTENER = tuple(
    arg
    for key, value in (("name", "udp"), ("protocol", "udp"), ("host", "127.0.0.1"), ("port", 0))
    for arg in ("--set", f"listeners.2.{key}={value}")
)
DATAGRAMS = 20
STATUS_CAP = 2
"""status.max_connections of one instance, which the test exceeds once."""


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start a Prometheus with deploy/prometheus/prometheus.yml, its targets replaced by the
    given echostat instances and its scrape interval shortened; killed after the test."""
    started: list[PrometheusServer] = []

    def start(*instances: EchostatProcess) -> PrometheusServer:
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=f"{SCRAPE_INTERVAL_S}s", scrape_timeout="1s")
        config["global"]["evaluation_interval"] = f"{SCRAPE_INTERVAL_S}s"
        config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [
            {"targets": [f"127.0.0.1:{instance.status_port}" for instance in instances]}
        ]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        server = PrometheusServer(path, tmp_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_grafana_sends(expr: str, instances: list[EchostatProcess]) -> str:
    """`expr` with the dashboard's variables replaced the way Grafana does for these targets."""
    # A regex inside a PromQL string literal: its backslashes are escaped once more.
    chosen = "|".join(re.escape(f"127.0.0.1:{i.status_port}") for i in instances)
    chosen = chosen.replace("\\", "\\\\")
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", "echostat")
        .replace("$instance", f"({chosen})")
    )


async def until_equal(prometheus: PrometheusServer, expected: dict[str, float]) -> None:
    """Wait until each query of `expected` yields its value; fail showing the last answers."""
    seen: dict[str, float | None] = {}

    async def all_equal() -> bool:
        for expr in expected:
            seen[expr] = await prometheus.value(expr)
        return seen == expected

    try:
        await wait_until(all_equal, "Prometheus to see the fleet totals")
    except AssertionError:
        assert seen == expected
        raise


async def test_prometheus_sees_fleet_totals_and_answers_every_dashboard_query(
    start_echostat: StartEchostat, prometheus_for: Any
) -> None:
    """Two instances scraped by the shipped config: Prometheus' fleet sums equal the clients'
    traffic, each dashboard query returns data without error, and the alert rules load."""
    # Both watch an echo outside the fleet, so the mesh panels have data without adding to
    # the fleet's own counts.
    outside = await asyncio.start_server(echo_back, "127.0.0.1", 0)
    watch = watching(outside.sockets[0].getsockname()[1])
    limited = start_echostat(
        *LOCAL_PORTS,
        *watch,
        *("--set", "limits.max_connections_per_ip=2"),
        *UDP_LISTENER,
        *("--set", "udp.max_datagrams_per_s_per_ip=1"),
    )
    timing_out = start_echostat(
        *LOCAL_PORTS,
        *watch,
        *("--set", "limits.idle_timeout_s=1"),
        *("--set", f"status.max_connections={STATUS_CAP}"),
    )
    instances = [limited, timing_out]
    prometheus = prometheus_for(*instances)
    began = time.time()
    await wait_until(
        lambda: prometheus_targets_up(prometheus, 2), "both targets to be scraped and up"
    )

    sent = [payload(1000 * n, seed=n) for n in range(1, 6)]
    kept = [await echo_once(limited.echo_port, data) for data in sent[:2]]
    refused_reader, refused_writer = await asyncio.open_connection("127.0.0.1", limited.echo_port)
    assert await refused_reader.read() == b"", "the third connection from one IP is refused"
    done = [await echo_once(timing_out.echo_port, data) for data in sent[2:]]
    await close_all([writer for _, writer in done])
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", timing_out.echo_port)
    assert await asyncio.wait_for(idle_reader.read(), DEADLINE_S) == b"", "idle timeout"
    await close_all([kept[0][1], refused_writer, idle_writer])
    await fill_the_status_side(timing_out.status_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for n in range(DATAGRAMS):  # one per second may come back, the others are dropped
            udp.sendto(b"datagram %d" % n, ("127.0.0.1", limited.ports["udp"]))

    await until_equal(
        prometheus,
        {
            'sum(echostat_bytes_received_total{job="echostat"})': sum(map(len, sent)),
            'sum(echostat_bytes_sent_total{job="echostat"})': sum(map(len, sent)),
            'sum(echostat_connections_accepted_total{job="echostat"})': len(sent) + 1,
            'sum(echostat_connections_active{job="echostat"})': 1,
            'sum(echostat_connections_rejected_total{job="echostat"})': 1,
            # Every reason has a series from the start, at 0: exactly one reason counted one.
            'sum by (reason) (echostat_connections_closed_by_server_total{job="echostat"} > 0)': 1,
            'sum(echostat_worker_restarts_total{job="echostat"})': 0,
            'count(echostat_ready{job="echostat"} == 1)': 2,
            'sum(echostat_udp_datagrams_received_total{job="echostat"})': DATAGRAMS,
            'sum(echostat_udp_datagrams_sent_total{job="echostat"})'
            ' + sum(echostat_udp_datagrams_dropped_total{job="echostat"})': DATAGRAMS,
        },
    )
    # Rates need a few scrapes after the traffic; wait one rate interval's worth of them.
    await wait_until(
        lambda: time.time() > began + 2 * int(RATE_INTERVAL[:-1]), "a rate interval of scrapes"
    )
    for expr in dashboard_queries():
        query = as_grafana_sends(expr, instances)
        data = await prometheus.api(
            "query_range", query=query, start=began, end=time.time(), step=SCRAPE_INTERVAL_S
        )
        values = [float(v) for series in data["result"] for _, v in series["values"]]
        assert any(math.isfinite(v) for v in values), f"no data for the dashboard query {query}"
        if '"target"' in expr:  # a mesh table's column: name and address, as its panel groups
            assert all(series["metric"]["target"] for series in data["result"]), query
    for variable in ("job", "instance"):
        values = await prometheus.api(f"label/{variable}/values", **{"match[]": "echostat_info"})
        assert values, variable
    groups = (await prometheus.api("rules"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), rules
    await close_all([kept[1][1]])
    outside.close()


def watching(port: int) -> tuple[str, ...]:
    """Flags that make an instance watch the TCP echo on `port` every half second."""
    target = {"name": "outside", "target": f"127.0.0.1:{port}", "interval_s": 0.5}
    return tuple(
        arg for key, value in target.items() for arg in ("--set", f"watch.targets.0.{key}={value}")
    )


async def echo_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def fill_the_status_side(port: int) -> None:
    """Open more status connections than `STATUS_CAP` allows, Prometheus' own included: the
    first one refused gets its 503 at once. Then close them all, so scrapes succeed again."""
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(STATUS_CAP + 1)]
    reads = [asyncio.ensure_future(reader.read()) for reader, _ in clients]
    done, _ = await asyncio.wait(reads, timeout=DEADLINE_S, return_when=asyncio.FIRST_COMPLETED)
    assert done and b" 503 " in next(iter(done)).result()
    for read in reads:
        read.cancel()
    await close_all([writer for _, writer in clients])


async def prometheus_targets_up(prometheus: PrometheusServer, count: int) -> bool:
    targets = (await prometheus.api("targets"))["activeTargets"]
    return len(targets) == count and all(target["health"] == "up" for target in targets)


async def test_promtool_check_metrics_accepts_our_exposition(
    start_echostat: StartEchostat,
) -> None:
    """`promtool check metrics` finds no problem in a real /metrics scrape after traffic."""
    promtool = require_program("promtool", "prometheus")
    echostat = start_echostat(*LOCAL_PORTS)
    _, writer = await echo_once(echostat.echo_port, b"lint me")
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{echostat.status_port}/metrics")
    await close_all([writer])
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=response.body,
        capture_output=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"echostat_bytes_received_total" in response.body
