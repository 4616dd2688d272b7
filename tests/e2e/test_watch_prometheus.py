"""A real Prometheus scrapes two echostat instances that watch each other and a dead port,
and evaluates the shipped watch alerts: the dead port fires, the live peers stay quiet."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.prometheus import PrometheusServer
from tests.faults.support import loopback_settings, write_config
from tests.helpers import REPO, EchostatProcess, wait_until

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
WATCH_ALERTS = {"EchostatWatchTargetDown", "EchostatWatchLossHigh", "EchostatWatchLatencyHigh"}


def watch_section(*targets: tuple[str, int]) -> dict[str, Any]:
    return {
        "targets": [
            {"name": name, "target": f"127.0.0.1:{port}", "interval_s": 0.5, "timeout_s": 1}
            for name, port in targets
        ]
    }


@pytest.fixture
def dead_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Processes (echostat, Prometheus) the test starts; killed by PID after it."""
    processes: list[Any] = []
    yield processes
    for process in processes:
        process.stop()


def immediate_rules(path: Path) -> Path:
    """The shipped alerts.yml with the watch alerts' `for` set to 0s: what fires at once is
    what would fire after the shipped wait."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in WATCH_ALERTS:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_prometheus_fires_target_down_for_the_dead_port_only(
    tmp_path: Path, dead_port: int, started: list[Any]
) -> None:
    """Two instances, each watching the other and a dead port, scraped every second: the mesh
    shows two paths up and two down, EchostatWatchTargetDown fires for the dead port from both
    instances, and no watch alert fires for the live paths."""
    config_a = write_config(tmp_path / "a.yaml", loopback_settings())
    a = EchostatProcess(["--config", str(config_a)])
    started.append(a)
    a.start()
    config_b = tmp_path / "b.yaml"
    write_config(
        config_b,
        loopback_settings(watch=watch_section(("peer", a.echo_port), ("nobody", dead_port))),
    )
    b = EchostatProcess(["--config", str(config_b)])
    started.append(b)
    b.start()
    write_config(
        config_a,
        loopback_settings(watch=watch_section(("peer", b.echo_port), ("nobody", dead_port))),
    )
    a.signal(signal.SIGHUP)
    a.wait_for_line("configuration reloaded")

    prometheus_config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(immediate_rules(tmp_path / "alerts.yml"))],
        "scrape_configs": [
            {
                "job_name": "echostat",
                "static_configs": [{"targets": [f"127.0.0.1:{p.status_port}" for p in (a, b)]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
    prometheus = PrometheusServer(tmp_path / "prometheus.yml", tmp_path)
    started.append(prometheus)
    prometheus.start()

    async def mesh_seen() -> bool:
        return (
            await prometheus.value('count(echostat_watch_up{job="echostat"} == 1)') == 2
            and await prometheus.value('count(echostat_watch_up{job="echostat"} == 0)') == 2
        )

    await wait_until(mesh_seen, "Prometheus to see two paths up and two down")
    firing: list[dict[str, str]] = []

    async def down_fires() -> bool:
        alerts = (await prometheus.api("alerts"))["alerts"]
        firing[:] = [alert["labels"] for alert in alerts if alert["state"] == "firing"]
        return sum(1 for labels in firing if labels["alertname"] in WATCH_ALERTS) >= 2

    await wait_until(down_fires, "EchostatWatchTargetDown to fire")
    watch_firing = [labels for labels in firing if labels["alertname"] in WATCH_ALERTS]
    assert {labels["alertname"] for labels in watch_firing} == {"EchostatWatchTargetDown"}
    assert {labels["name"] for labels in watch_firing} == {"nobody"}
    assert {labels["instance"] for labels in watch_firing} == {
        f"127.0.0.1:{p.status_port}" for p in (a, b)
    }
    groups = (await prometheus.api("rules"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert all(rule["health"] == "ok" for rule in rules), rules
    p90 = (
        "histogram_quantile(0.9, sum by (instance, address, le)"
        ' (rate(echostat_watch_rtt_seconds_bucket{name="peer"}[5s])))'
    )

    async def both_live_cells() -> bool:
        return len((await prometheus.api("query", query=p90))["result"]) == 2

    await wait_until(both_live_cells, "a p90 RTT for each live cell of the mesh")
