"""Prometheus metrics: the registry's counters, read at scrape time, plus process metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from server import __version__
from server.stats import StatsSource


def metrics_registry(registry: StatsSource) -> CollectorRegistry:
    """A private `CollectorRegistry` for one app, so several services in a process never clash."""
    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(registry))
    ProcessCollector(registry=metrics)
    return metrics


class RegistryCollector(Collector):
    """Turns one stats snapshot per scrape into metric families; the echo path pays nothing."""

    def __init__(self, registry: StatsSource) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        snap = self._registry.snapshot()
        active = GaugeMetricFamily(
            "echostat_connections_active", "Open echo connections.", labels=["listener"]
        )
        accepted = CounterMetricFamily(
            "echostat_connections_accepted",
            "Echo connections accepted since start.",
            labels=["listener"],
        )
        for listener in snap.listeners:
            active.add_metric([listener.name], listener.active)
            accepted.add_metric([listener.name], listener.accepted)
        rejected = CounterMetricFamily(
            "echostat_connections_rejected",
            "Connections closed at accept time, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(snap.rejected.items()):
            rejected.add_metric([reason], count)
        closed_by_server = CounterMetricFamily(
            "echostat_connections_closed_by_server",
            "Echo connections the server ended (timeouts, shutdown), by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(snap.closed_by_server.items()):
            closed_by_server.add_metric([reason], count)
        worker_active = GaugeMetricFamily(
            "echostat_worker_connections_active",
            "Open echo connections, by worker.",
            labels=["pid"],
        )
        worker_accepted = CounterMetricFamily(
            "echostat_worker_connections_accepted",
            "Echo connections accepted since start, by worker.",
            labels=["pid"],
        )
        for worker in snap.workers:
            worker_active.add_metric([str(worker.pid)], worker.active)
            worker_accepted.add_metric([str(worker.pid)], worker.accepted)
        yield worker_active
        yield worker_accepted
        yield closed_by_server
        yield active
        yield accepted
        yield CounterMetricFamily(
            "echostat_connections_closed", "Echo connections closed since start.", snap.closed
        )
        yield rejected
        yield CounterMetricFamily(
            "echostat_bytes_received",
            "Bytes read from echo clients since start.",
            snap.bytes_received,
        )
        yield CounterMetricFamily(
            "echostat_bytes_sent", "Bytes echoed back to clients since start.", snap.bytes_sent
        )
        yield GaugeMetricFamily(
            "echostat_uptime_seconds", "Seconds since the service started.", snap.uptime_seconds
        )
        yield InfoMetricFamily("echostat", "The running echostat.", {"version": __version__})
