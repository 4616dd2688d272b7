"""Prometheus metrics: the registry's counters, read at scrape time, plus process metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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
from echostat.server.path_quality import RTT_BUCKETS_S, SYN_MSS_BUCKETS, TcpSnapshot
from echostat.server.registry import REJECT_REASONS, SERVER_CLOSE_REASONS, StatsSource
from echostat.server.socket_memory import SO_MEMINFO
from echostat.server.syn import OPTION_NAMES
from echostat.server.udp_stats import DROP_REASONS, RECEIVE_BUFFER, UDPListenerSnapshot
from echostat.web.counters import STATUS_CLOSE_REASONS, STATUS_REJECT_REASONS, StatusCounters


def metrics_registry(registry: StatsSource, status: StatusCounters) -> CollectorRegistry:
    """A private `CollectorRegistry` for one app, so several services in a process never clash."""
    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(registry))
    metrics.register(StatusCollector(status))
    ProcessCollector(registry=metrics)
    return metrics


_Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
_Column = tuple[_Family, str, str, str]
"""A metric family read from one attribute: its type, name, help text and the attribute."""

_PER_LISTENER: tuple[_Column, ...] = (
    (GaugeMetricFamily, "echostat_connections_active", "Open echo connections.", "active"),
    (
        CounterMetricFamily,
        "echostat_connections_accepted",
        "Echo connections accepted since start.",
        "accepted",
    ),
    (
        CounterMetricFamily,
        "echostat_connections_closed",
        "Echo connections closed since start.",
        "closed",
    ),
    (
        CounterMetricFamily,
        "echostat_bytes_received",
        "Bytes read from echo clients since start.",
        "bytes_received",
    ),
    (
        CounterMetricFamily,
        "echostat_bytes_sent",
        "Bytes echoed back to clients since start.",
        "bytes_sent",
    ),
)
_PER_WORKER: tuple[_Column, ...] = (
    (
        GaugeMetricFamily,
        "echostat_worker_connections_active",
        "Open echo connections, by worker.",
        "active",
    ),
    (
        CounterMetricFamily,
        "echostat_worker_connections_accepted",
        "Echo connections accepted since start, by worker.",
        "accepted",
    ),
)
_BY_REASON: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "echostat_connections_rejected",
        "Connections closed at accept time, by reason.",
        "rejected",
        REJECT_REASONS,
    ),
    (
        "echostat_connections_closed_by_server",
        "Echo connections the server ended (timeouts, shutdown, faults), by reason.",
        "closed_by_server",
        SERVER_CLOSE_REASONS,
    ),
)
_TOTALS: tuple[_Column, ...] = (
    (
        CounterMetricFamily,
        "echostat_worker_restarts",
        "Worker processes restarted by the supervisor after they died.",
        "worker_restarts",
    ),
    (
        CounterMetricFamily,
        "echostat_config_reloads",
        "Reloads (SIGHUP) that put a new configuration in force.",
        "reloads",
    ),
    (
        CounterMetricFamily,
        "echostat_config_reload_failures",
        "Reloads refused: an invalid config, or a change that needs a restart.",
        "reloads_failed",
    ),
    (
        CounterMetricFamily,
        "echostat_access_log_errors",
        "Access log lines (or a final flush) that could not be written, e.g. on a full disk.",
        "access_log_errors",
    ),
    (
        GaugeMetricFamily,
        "echostat_config_loaded_timestamp_seconds",
        "When the configuration in force was loaded, in seconds since the epoch.",
        "config_loaded_at",
    ),
    (
        GaugeMetricFamily,
        "echostat_ready",
        "1 while /readyz answers 200, 0 once shutdown began.",
        "ready",
    ),
    (
        GaugeMetricFamily,
        "echostat_accepting",
        "1 while the echo listeners accept connections.",
        "accepting",
    ),
    (
        GaugeMetricFamily,
        "echostat_buffered_bytes",
        "Echo buffers held for clients that read slower than they send.",
        "buffered_bytes",
    ),
    (
        GaugeMetricFamily,
        "echostat_uptime_seconds",
        "Seconds since the service started.",
        "uptime_seconds",
    ),
)


class RegistryCollector(Collector):
    """Turns one stats snapshot per scrape into metric families; the echo path pays nothing."""

    def __init__(self, registry: StatsSource) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        snap = self._registry.snapshot()
        yield from _per(
            "listener", {listener.name: listener for listener in snap.listeners}, _PER_LISTENER
        )
        yield from _per("pid", {str(worker.pid): worker for worker in snap.workers}, _PER_WORKER)
        for name, documentation, attribute, reasons in _BY_REASON:
            yield _labelled(
                CounterMetricFamily,
                name,
                documentation,
                "reason",
                _every(reasons, getattr(snap, attribute)),
            )
        for family, name, documentation, attribute in _TOTALS:
            yield family(name, documentation, getattr(snap, attribute))
        if snap.tcp.measured:
            yield from _path_quality(snap.tcp)
            yield from _syn_families(snap.tcp)
        yield InfoMetricFamily("echostat", "The running echostat.", {"version": __version__})
        yield from _udp_families(snap.udp_listeners)


_PER_UDP_LISTENER: tuple[_Column, ...] = (
    *(
        (CounterMetricFamily, f"echostat_udp_{attribute}", documentation, attribute)
        for attribute, documentation in (
            ("datagrams_received", "Datagrams received on UDP listeners since start."),
            ("datagrams_sent", "Datagrams echoed back by UDP listeners since start."),
            ("bytes_received", "Bytes received in datagrams on UDP listeners since start."),
            ("bytes_sent", "Bytes echoed back in datagrams by UDP listeners since start."),
            (
                "peers_evicted",
                "UDP peers forgotten early because the table was full (udp.max_peers).",
            ),
        )
    ),
    (
        GaugeMetricFamily,
        "echostat_udp_peers",
        "UDP source addresses seen in the last udp.peer_idle_s.",
        "peers",
    ),
)


_UDP_DROP_REASONS = (*DROP_REASONS, RECEIVE_BUFFER) if SO_MEMINFO is not None else DROP_REASONS
"""Every drop reason, the kernel's receive buffer's too where its drop counter is read."""


def _udp_families(listeners: tuple[UDPListenerSnapshot, ...]) -> Iterator[Metric]:
    """Per UDP listener: datagram and byte counters, drops by reason, peers seen lately."""
    if not listeners:
        return
    yield from _per("listener", {udp.name: udp for udp in listeners}, _PER_UDP_LISTENER)
    dropped = CounterMetricFamily(
        "echostat_udp_datagrams_dropped",
        "Datagrams not echoed, by listener and reason (see README, UDP echo).",
        labels=["listener", "reason"],
    )
    for udp in listeners:
        for reason, count in sorted(_every(_UDP_DROP_REASONS, udp.dropped).items()):
            dropped.add_metric([udp.name, reason], count)
    yield dropped


class StatusCollector(Collector):
    """The status side's own connections: open, refused beyond a cap, closed by a timeout or
    the buffer budget; open push streams and bytes queued."""

    def __init__(self, counters: StatusCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters
        yield GaugeMetricFamily(
            "echostat_status_connections_active",
            "Open connections to the status page, API and metrics.",
            counters.active,
        )
        yield CounterMetricFamily(
            "echostat_status_connections_accepted",
            "Connections to the status page, API and metrics served since start.",
            counters.accepted,
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_status_connections_rejected",
            "Status connections refused at accept time, by reason.",
            "reason",
            _every(STATUS_REJECT_REASONS, counters.rejected),
        )
        yield _labelled(
            CounterMetricFamily,
            "echostat_status_connections_closed_by_server",
            "Status connections closed by the server: a timeout (header_timeout, idle_timeout)"
            " or the buffer budget (max_buffered_bytes).",
            "reason",
            _every(STATUS_CLOSE_REASONS, counters.closed_by_server),
        )
        yield GaugeMetricFamily(
            "echostat_status_streams_active",
            "Open push streams (/api/events).",
            counters.streams,
        )
        yield GaugeMetricFamily(
            "echostat_status_buffered_bytes",
            "Bytes of responses queued for status clients, not yet taken by the kernel.",
            counters.buffered_bytes,
        )


def _path_quality(tcp: TcpSnapshot) -> Iterator[Metric]:
    """The RTT histogram and retransmitted segments, from TCP_INFO; no per-connection labels."""
    yield HistogramMetricFamily(
        "echostat_tcp_rtt_seconds",
        "Smoothed RTT of echo connections (TCP_INFO), observed at close and at most once per"
        " tcp_info_interval_s while open.",
        buckets=cumulative(RTT_BUCKETS_S, tcp.rtt_buckets),
        sum_value=tcp.rtt_sum_s,
    )
    yield CounterMetricFamily(
        "echostat_tcp_retransmitted_segments",
        "TCP segments the server retransmitted on echo connections, open and closed.",
        tcp.retransmits,
    )


def _syn_families(tcp: TcpSnapshot) -> Iterator[Metric]:
    """What arrived in the SYNs of echo connections: the MSS histogram, SYNs per option."""
    yield HistogramMetricFamily(
        "echostat_syn_mss_bytes",
        "MSS option of echo connections' SYNs as they arrived (a clamp on the path lowers it).",
        buckets=cumulative(SYN_MSS_BUCKETS, tcp.syn_mss_buckets),
        sum_value=tcp.syn_mss_sum,
    )
    yield _labelled(
        CounterMetricFamily,
        "echostat_syn_options",
        "SYNs of echo connections that arrived carrying each TCP option.",
        "option",
        dict(zip(OPTION_NAMES, tcp.syn_options, strict=True)),
    )


def cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Histogram buckets as Prometheus wants them: cumulative counts, `+Inf` last."""
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def _per(label: str, rows: Mapping[str, object], columns: tuple[_Column, ...]) -> Iterator[Metric]:
    """One family per column, with one sample per row (a listener, a worker), labelled `label`."""
    for family, name, documentation, attribute in columns:
        values = {key: getattr(row, attribute) for key, row in rows.items()}
        yield _labelled(family, name, documentation, label, values)


def _every(reasons: tuple[str, ...], counts: Mapping[str, int]) -> dict[str, int]:
    """`counts` with every one of `reasons` present, at 0 until it first happens: a series
    that appears only with its first event makes ``rate()`` and alerts miss that event."""
    return {**dict.fromkeys(reasons, 0), **counts}


def _labelled(
    family: _Family,
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
