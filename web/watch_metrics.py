"""The watcher's Prometheus metrics: ``echostat_watch_*``, one series per watched address."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from echostat.web.metrics import cumulative
from echostat.web.watch import HistogramView, WatchSource

LABELS = ["name", "address"]
"""`name` is the configured target; `address` tells apart the addresses a DNS name stands for."""


class WatchCollector(Collector):
    """Reads the watcher's state per scrape: up, round trips by outcome, RTT and connect time."""

    def __init__(self, source: WatchSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        targets = self._source.targets()
        if not targets:
            return  # the families appear only with watch targets (docs/api.md)
        up = GaugeMetricFamily(
            "echostat_watch_up",
            "1 when the last watch round verified at least one round trip, else 0.",
            labels=LABELS,
        )
        outcomes = CounterMetricFamily(
            "echostat_watch_round_trips",
            "Watch round trips by outcome: verified (every byte back), lost (never came back"
            " in time), failed (came back wrong, or the connection ended).",
            labels=[*LABELS, "outcome"],
        )
        loss = GaugeMetricFamily(
            "echostat_watch_loss_ratio",
            "Watch round trips lost over those sent in the last five minutes (absent while"
            " none were sent).",
            labels=LABELS,
        )
        late = CounterMetricFamily(
            "echostat_watch_late_rounds",
            "Watch rounds during which this process's event loop was late; their times are"
            " left out of the histograms.",
            labels=LABELS,
        )
        rtt = []
        connect = []
        for target in targets:
            if target.last_round is None:
                continue  # waiting for its first round: neither up nor down yet
            labels = [target.name, target.address or ""]
            up.add_metric(labels, 1 if target.up else 0)
            outcomes.add_metric([*labels, "verified"], target.verified_total)
            outcomes.add_metric([*labels, "lost"], target.lost_total)
            outcomes.add_metric([*labels, "failed"], target.failed_total)
            late.add_metric(labels, target.late_rounds_total)
            if (loss_ratio := target.loss_ratio_5m) is not None:  # a sum over five minutes
                loss.add_metric(labels, loss_ratio)
            rtt.append((labels, target.rtt))
            if target.protocol == "tcp":
                connect.append((labels, target.connect))
        yield up
        yield outcomes
        yield loss
        yield late
        yield _histogram(
            "echostat_watch_rtt_seconds",
            "Round-trip times of watch rounds (late rounds left out).",
            rtt,
        )
        if connect:
            yield _histogram(
                "echostat_watch_connect_seconds",
                "TCP handshake times of watch rounds (late rounds left out).",
                connect,
            )


def _histogram(
    name: str, documentation: str, rows: list[tuple[list[str], HistogramView]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=LABELS)
    for labels, histogram in rows:
        family.add_metric(labels, cumulative(histogram.bounds_s, histogram.counts), histogram.sum_s)
    return family
