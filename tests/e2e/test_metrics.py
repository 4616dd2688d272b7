"""GET /metrics: Prometheus text exposition that agrees with /api/stats."""

from __future__ import annotations

import dataclasses

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from echostat.server import __version__
from echostat.server.registry import REJECT_REASONS, SERVER_CLOSE_REASONS
from echostat.server.udp_stats import DROP_REASONS, RECEIVE_BUFFER
from echostat.service import Service
from echostat.web.counters import STATUS_CLOSE_REASONS, STATUS_REJECT_REASONS
from tests.conftest import loopback_config, udp_config
from tests.helpers import close_all, echo_once, get_json, status_fetch, wait_until


async def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by name and sorted labels."""
    text = (await status_fetch(service, "/metrics")).body.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_equal_api_stats_after_echo_traffic(service: Service) -> None:
    """After real echo traffic every echostat metric equals its /api/stats field."""
    port = service.echo_port("main")
    connections = [await echo_once(port, bytes([n]) * 10_000 * (n + 1)) for n in range(3)]
    await close_all([connections[0][1]])
    await wait_until(lambda: service.registry.closed == 1, "the server to see one close")

    samples = await scrape(service)
    stats = await get_json(service.status_port, "/api/stats")

    assert samples[("echostat_connections_active", (("listener", "main"),))] == 2
    assert stats["connections"]["active"] == 2
    assert (
        samples[("echostat_connections_accepted_total", (("listener", "main"),))]
        == (stats["connections"]["accepted"])
    )
    main = (("listener", "main"),)
    assert samples[("echostat_connections_closed_total", main)] == stats["connections"]["closed"]
    assert samples[("echostat_bytes_received_total", main)] == stats["bytes"]["received"] == 60_000
    assert samples[("echostat_bytes_sent_total", main)] == stats["bytes"]["sent"] == 60_000
    rejected = [
        v for (name, _), v in samples.items() if name == "echostat_connections_rejected_total"
    ]
    assert sum(rejected) == stats["connections"]["rejected"]
    assert abs(samples[("echostat_uptime_seconds", ())] - stats["uptime_seconds"]) < 5
    assert samples[("echostat_info", (("version", __version__),))] == 1
    await close_all([writer for _, writer in connections[1:]])


async def test_metrics_include_process_metrics(service: Service) -> None:
    """The scrape carries prometheus_client's process metrics as well."""
    samples = await scrape(service)
    assert samples[("process_open_fds", ())] > 0
    assert ("process_cpu_seconds_total", ()) in samples


async def test_each_service_has_its_own_metrics_registry(service: Service) -> None:
    """Two services in one process report their own counts, not a shared global registry."""
    other = Service(loopback_config())
    await other.start()
    try:
        _, writer = await echo_once(other.echo_port("main"), b"x")
        assert (await scrape(other))[
            ("echostat_connections_accepted_total", (("listener", "main"),))
        ] == 1
        assert (await scrape(service))[
            ("echostat_connections_accepted_total", (("listener", "main"),))
        ] == 0
        assert REGISTRY.get_sample_value("echostat_uptime_seconds") is None
        await close_all([writer])
    finally:
        await other.stop()


async def test_metrics_speak_openmetrics_when_asked(service: Service) -> None:
    """A scraper that asks for OpenMetrics gets it, terminated by the mandatory # EOF."""
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{service.status_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


async def test_closed_and_byte_counters_are_labelled_by_listener(service: Service) -> None:
    """Closes and bytes are counted per listener, like accepts: a second listener's traffic
    shows under its own name, and the main listener's series exist at 0."""
    second = dataclasses.replace(service.config.listeners[0], name="second")
    other = Service(loopback_config(listeners=(*service.config.listeners, second)))
    await other.start()
    try:
        _, writer = await echo_once(other.echo_port("second"), b"x" * 500)
        await close_all([writer])
        await wait_until(lambda: other.registry.closed == 1, "the server to see the close")
        samples = await scrape(other)
        for name, value in (
            ("echostat_connections_accepted_total", 1),
            ("echostat_connections_closed_total", 1),
            ("echostat_bytes_received_total", 500),
            ("echostat_bytes_sent_total", 500),
        ):
            assert samples[(name, (("listener", "second"),))] == value, name
            assert samples[(name, (("listener", "main"),))] == 0, name
    finally:
        await other.stop()


async def test_every_known_reason_has_a_series_from_the_start(service: Service) -> None:
    """Before anything was refused or closed, each reason-labelled counter has a series at
    0 for every reason, so rate() and alerts see the first event."""
    samples = await scrape(service)
    for name, reasons in (
        ("echostat_connections_rejected_total", REJECT_REASONS),
        ("echostat_connections_closed_by_server_total", SERVER_CLOSE_REASONS),
        ("echostat_status_connections_rejected_total", STATUS_REJECT_REASONS),
        ("echostat_status_connections_closed_by_server_total", STATUS_CLOSE_REASONS),
    ):
        for reason in reasons:
            assert samples[(name, (("reason", reason),))] == 0, (name, reason)


async def scrape_new_udp_service() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one scrape of a service with a UDP listener, just started."""
    service = Service(udp_config())
    await service.start()
    try:
        return await scrape(service)
    finally:
        await service.stop()


async def test_every_udp_drop_reason_has_a_series_from_the_start() -> None:
    """A UDP listener's drop counter has a series at 0 for every reason before any drop."""
    samples = await scrape_new_udp_service()
    for reason in DROP_REASONS:
        label = (("listener", "udp"), ("reason", reason))
        assert samples[("echostat_udp_datagrams_dropped_total", label)] == 0, reason


async def test_the_kernels_receive_buffer_drops_have_a_series_from_the_start() -> None:
    """The drops a flood causes before echostat reads (receive_buffer) have a series at 0
    too, so an alert on their increase fires on the first flood, not from the second."""
    samples = await scrape_new_udp_service()
    label = (("listener", "udp"), ("reason", RECEIVE_BUFFER))
    assert samples[("echostat_udp_datagrams_dropped_total", label)] == 0


async def test_status_connections_accepted_has_a_counter_too(service: Service) -> None:
    """status_connections.accepted is in /metrics too, beside its refusals, so a dashboard can
    set refused status connections against accepted ones."""
    samples = await scrape(service)
    stats = await get_json(service.status_port, "/api/stats")
    # The scrape came first and took one connection; the API request took the next.
    accepted = samples[("echostat_status_connections_accepted_total", ())]
    assert accepted == stats["status_connections"]["accepted"] - 1


async def test_without_watch_targets_no_watch_family_is_exposed(service: Service) -> None:
    """The echostat_watch_* families appear only with watch targets, as docs/api.md says,
    not as empty families in every scrape."""
    text = (await status_fetch(service, "/metrics")).body.decode()
    assert "echostat_watch_" not in text
