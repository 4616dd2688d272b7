"""Prometheus metrics: the registry's counters, read at scrape time, plus process metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from echostat.server import __version__
from echostat.server.path_quality import RTT_BUCKETS_S, TcpSnapshot
from echostat.server.registry import StatsSource
from echostat.server.udp_stats import UDPListenerSnapshot
from echostat.web.counters import StatusCounters


def metrics_registry(registry: StatsSource, status: StatusCounters) -> CollectorRegistry:
    """A private `CollectorRegistry` for one app, so several services in a process never clash."""
    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(registry))
    metrics.register(StatusCollector(status))
    ProcessCollector(registry=metrics)
    return metrics


class RegistryCollector(Collector):
    """Turns one stats snapshot per scrape into metric families; the echo path pays nothing."""

    def __init__(self, registry: StatsSource) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        snap = self._registry.snapshot()
        listeners = {listener.name: listener for listener in snap.listeners}
        workers = {str(worker.pid): worker for worker in snap.workers}
        yield _labelled(
            GaugeMetricFamily,
            "echostat_connections_active",
            "Open echo connections.",
            "listener",
            {name: listener.active for name, listener in listeners.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_connections_accepted",
            "Echo connections accepted since start.",
            "listener",
            {name: listener.accepted for name, listener in listeners.items()},
        )
        yield CounterMetricFamily(
            "echostat_connections_closed", "Echo connections closed since start.", snap.closed
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_connections_rejected",
            "Connections closed at accept time, by reason.",
            "reason",
            snap.rejected,
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_connections_closed_by_server",
            "Echo connections the server ended (timeouts, shutdown, faults), by reason.",
            "reason",
            snap.closed_by_server,
        )
        yield _labelled(
            GaugeMetricFamily,
            "echostat_worker_connections_active",
            "Open echo connections, by worker.",
            "pid",
            {pid: worker.active for pid, worker in workers.items()},
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_worker_connections_accepted",
            "Echo connections accepted since start, by worker.",
            "pid",
            {pid: worker.accepted for pid, worker in workers.items()},
        )
        yield CounterMetricFamily(
            "echostat_bytes_received",
            "Bytes read from echo clients since start.",
            snap.bytes_received,
        )
        yield CounterMetricFamily(
            "echostat_bytes_sent", "Bytes echoed back to clients since start.", snap.bytes_sent
        )
        yield CounterMetricFamily(
            "echostat_worker_restarts",
            "Worker processes restarted by the supervisor after they died.",
            snap.worker_restarts,
        )
        yield CounterMetricFamily(
            "echostat_config_reloads",
            "Reloads (SIGHUP) that put a new configuration in force.",
            snap.reloads,
        )
        yield CounterMetricFamily(
            "echostat_config_reload_failures",
            "Reloads refused: an invalid config, or a change that needs a restart.",
            snap.reloads_failed,
        )
        yield GaugeMetricFamily(
            "echostat_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded, in seconds since the epoch.",
            snap.config_loaded_at,
        )
        yield GaugeMetricFamily(
            "echostat_ready", "1 while /readyz answers 200, 0 once shutdown began.", snap.ready
        )
        yield GaugeMetricFamily(
            "echostat_accepting", "1 while the echo listeners accept connections.", snap.accepting
        )
        if snap.tcp.measured:
            yield from _path_quality(snap.tcp)
        yield GaugeMetricFamily(
            "echostat_buffered_bytes",
            "Echo buffers held for clients that read slower than they send.",
            snap.buffered_bytes,
        )
        yield GaugeMetricFamily(
            "echostat_uptime_seconds", "Seconds since the service started.", snap.uptime_seconds
        )
        yield InfoMetricFamily("echostat", "The running echostat.", {"version": __version__})
        yield from _udp_families(snap.udp_listeners)


_UDP_COUNTERS = (
    ("datagrams_received", "Datagrams received on UDP listeners since start."),
    ("datagrams_sent", "Datagrams echoed back by UDP listeners since start."),
    ("bytes_received", "Bytes received in datagrams on UDP listeners since start."),
    ("bytes_sent", "Bytes echoed back in datagrams by UDP listeners since start."),
    ("peers_evicted", "UDP peers forgotten early because the table was full (udp.max_peers)."),
)


def _udp_families(listeners: tuple[UDPListenerSnapshot, ...]) -> Iterator[Metric]:
    """Per UDP listener: datagram and byte counters, drops by reason, peers seen lately."""
    if not listeners:
        return
    for field, documentation in _UDP_COUNTERS:
        values = {udp.name: getattr(udp, field) for udp in listeners}
        yield _labelled(
            CounterMetricFamily, f"echostat_udp_{field}", documentation, "listener", values
        )
    dropped = CounterMetricFamily(
        "echostat_udp_datagrams_dropped",
        "Datagrams not echoed, by listener and reason (see README, UDP echo).",
        labels=["listener", "reason"],
    )
    for udp in listeners:
        for reason, count in sorted(udp.dropped.items()):
            dropped.add_metric([udp.name, reason], count)
    yield dropped
    yield _labelled(
        GaugeMetricFamily,
        "echostat_udp_peers",
        "UDP source addresses seen in the last udp.peer_idle_s.",
        "listener",
        {udp.name: udp.peers for udp in listeners},
    )


class StatusCollector(Collector):
    """The status side's own connections: open, refused beyond the cap, closed by a timeout."""

    def __init__(self, counters: StatusCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters
        yield GaugeMetricFamily(
            "echostat_status_connections_active",
            "Open connections to the status page, API and metrics.",
            counters.active,
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_status_connections_rejected",
            "Status connections refused at accept time, by reason.",
            "reason",
            counters.rejected,
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_status_connections_closed_by_server",
            "Status connections closed by a timeout (header_timeout, idle_timeout).",
            "reason",
            counters.closed_by_server,
        )


def _path_quality(tcp: TcpSnapshot) -> Iterator[Metric]:
    """The RTT histogram and retransmitted segments, from TCP_INFO; no per-connection labels."""
    cumulative = 0
    buckets = []
    for bound, count in zip([*map(str, RTT_BUCKETS_S), "+Inf"], tcp.rtt_buckets, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily(
        "echostat_tcp_rtt_seconds",
        "Smoothed RTT of echo connections (TCP_INFO), observed at close and at most once per"
        " tcp_info_interval_s while open.",
        buckets=buckets,
        sum_value=tcp.rtt_sum_s,
    )
    yield CounterMetricFamily(
        "echostat_tcp_retransmitted_segments",
        "TCP segments the server retransmitted on echo connections, open and closed.",
        tcp.retransmits,
    )


def _labelled(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    """A metric family with one sample per `values` item, labelled `label`, in label order."""
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric
