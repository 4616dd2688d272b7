"""The JSON documents of the status API and the push channel, as docs/api.md describes them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from echostat.server import __version__
from echostat.service import Service
from tests.helpers import REPO, close_all, echo_once, get_json

CONNECTION_FIELDS = {
    "id": int,
    "peer": str,
    "via": type(None),
    "worker": int,
    "listener": str,
    "connected_at": float,
    "age_s": float,
    "idle_s": float,
    "bytes_received": int,
    "bytes_sent": int,
    "tcp": dict,
    "syn": dict,
}

TCP_INFO_FIELDS = {
    "rtt_ms": float,
    "rttvar_ms": float,
    "min_rtt_ms": float,
    "retransmits": int,
    "lost": int,
    "cwnd": int,
    "delivery_rate_bps": int,
    "unacked": int,
}
"""A connection's ``tcp`` object on Linux."""


def assert_shape(document: dict[str, Any], fields: dict[str, type]) -> None:
    """`document` has exactly `fields`, each of its type (an int passes for a float)."""
    assert set(document) == set(fields)
    for key, kind in fields.items():
        allowed = (int, float) if kind is float else kind
        assert isinstance(document[key], allowed), f"{key}: {document[key]!r}"


def assert_stats_shape(stats: dict[str, Any]) -> None:
    """The stats part shared by /api/stats and every pushed message."""
    assert stats["version"] == __version__
    assert isinstance(stats["taken_at"], float)
    assert isinstance(stats["uptime_seconds"], int | float)
    assert isinstance(stats["accepting"], bool)
    assert isinstance(stats["ready"], bool)
    assert isinstance(stats["worker_restarts"], int)
    assert_shape(
        stats["config"],
        {"loaded_at": float, "age_s": float, "reloads": int, "reloads_failed": int},
    )
    (worker,) = stats["workers"]
    assert_shape(
        worker,
        {
            "pid": int,
            "active": int,
            "accepted": int,
            "closed": int,
            "bytes_received": int,
            "bytes_sent": int,
            "stale_s": float,
        },
    )
    assert_shape(
        stats["connections"],
        {
            "active": int,
            "accepted": int,
            "closed": int,
            "rejected": int,
            "rejected_by_reason": dict,
            "closed_by_server": dict,
        },
    )
    assert_shape(stats["bytes"], {"received": int, "sent": int, "buffered": int})
    assert_shape(
        stats["rates"],
        {
            "interval_s": float,
            "connections_per_s": float,
            "bytes_received_per_s": float,
            "bytes_sent_per_s": float,
            "datagrams_received_per_s": float,
            "datagrams_sent_per_s": float,
            "datagrams_dropped_per_s": float,
        },
    )
    assert stats["udp_listeners"] == []
    (listener,) = stats["listeners"]
    assert_shape(
        listener,
        {"name": str, "host": str, "port": int, "tls": bool, "active": int, "accepted": int},
    )
    assert_shape(
        stats["tcp"],
        {
            "available": bool,
            "connections_measured": int,
            "rtt_ms": dict,
            "retransmits": int,
            "retransmits_per_s": float,
            "rtt_observations": int,
            "rtt_observed_sum_s": float,
        },
    )
    assert set(stats["tcp"]["rtt_ms"]) == {"p50", "p90", "p99", "max"}


async def test_stats_document_has_documented_fields(service: Service) -> None:
    """GET /api/stats: totals, rates, listeners and limits, with the documented types."""
    _, writer = await echo_once(service.echo_port("main"), b"hello")
    stats = await get_json(service.status_port, "/api/stats")
    assert set(stats) == {
        "version",
        "taken_at",
        "uptime_seconds",
        "accepting",
        "ready",
        "connections",
        "bytes",
        "rates",
        "listeners",
        "limits",
        "workers",
        "udp_listeners",
        "worker_restarts",
        "config",
        "tcp",
        "status_connections",
        "access_log",
    }
    assert_stats_shape(stats)
    assert stats["access_log"] == {"errors": 0}
    assert stats["status_connections"] == {
        "active": 1,
        "max_connections": 256,
        "accepted": 1,
        "rejected": 0,
        "rejected_by_reason": {},
        "closed_by_server": {},
    }
    assert stats["connections"]["active"] == 1
    assert stats["bytes"] == {"received": 5, "sent": 5, "buffered": 0}
    assert stats["limits"] == dataclasses.asdict(service.config.limits)
    await close_all([writer])


async def test_connections_lists_most_active_first_up_to_limit(service: Service) -> None:
    """GET /api/connections?limit=1: the total open and the busiest connection's row."""
    port = service.echo_port("main")
    quiet = await echo_once(port, b"a")
    busy = await echo_once(port, b"b" * 1000)
    document = await get_json(service.status_port, "/api/connections?limit=1")
    assert document["total"] == 2
    (row,) = document["connections"]
    assert_shape(row, CONNECTION_FIELDS)
    assert_shape(row["tcp"], TCP_INFO_FIELDS)
    assert row["bytes_received"] == row["bytes_sent"] == 1000
    assert row["listener"] == "main"
    busy_port = busy[1].get_extra_info("sockname")[1]
    assert row["peer"] == f"127.0.0.1:{busy_port}"
    await close_all([quiet[1], busy[1]])


@pytest.mark.parametrize("limit", ["0", "abc", "100001"])
async def test_connections_rejects_a_bad_limit(service: Service, limit: str) -> None:
    """A limit outside 1..100000 is a 400, not a crash or an empty list."""
    with pytest.raises(HTTPClientError) as error:
        await get_json(service.status_port, f"/api/connections?limit={limit}")
    assert error.value.code == 400


async def test_history_has_one_column_per_series(service: Service) -> None:
    """GET /api/history: equal-length columns, oldest first, at most 300 points."""
    history = await get_json(service.status_port, "/api/history")
    columns = [
        "taken_at",
        "active",
        "connections_per_s",
        "bytes_received_per_s",
        "bytes_sent_per_s",
        "retransmits_per_s",
        "datagrams_received_per_s",
        "datagrams_sent_per_s",
        "datagrams_dropped_per_s",
    ]
    assert set(history) == {"capacity", *columns}
    assert history["capacity"] == 300
    lengths = {len(history[column]) for column in columns}
    assert len(lengths) == 1 and 1 <= lengths.pop() <= 300
    assert history["taken_at"] == sorted(history["taken_at"])


async def read_events(service: Service, count: int) -> list[tuple[str, Any]]:
    """The first `count` events of /api/events as (event name, parsed data)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.status_port, limit=2**20)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    events: list[tuple[str, Any]] = []
    name = "message"
    try:
        while len(events) < count:
            line = (await asyncio.wait_for(reader.readline(), 5)).rstrip(b"\r\n")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                events.append((name, json.loads(line[6:])))
                name = "message"
    finally:
        await close_all([writer])
    return events


async def test_push_channel_sends_limits_history_then_stats_with_table(service: Service) -> None:
    """/api/events: a config and a history event on connect, then stats plus top_connections."""
    _, writer = await echo_once(service.echo_port("main"), b"ping")
    (config_name, limits), (history_name, history), (tick_name, tick) = await read_events(
        service, 3
    )
    assert (config_name, history_name, tick_name) == ("config", "history", "message")
    assert limits == dataclasses.asdict(service.config.limits)
    assert "taken_at" in history
    assert_stats_shape(tick)
    table = tick["top_connections"]
    assert table["total"] == len(table["connections"]) == tick["connections"]["active"]
    for row in table["connections"]:
        assert_shape(row, CONNECTION_FIELDS)
    await close_all([writer])


async def test_each_tick_is_the_stats_document_but_what_docs_api_md_leaves_out(
    service: Service,
) -> None:
    """A pushed tick has every field of /api/stats except those docs/api.md names as left
    out, so a script reading the stream finds what the page says it finds."""
    text = " ".join((REPO / "docs" / "api.md").read_text().split())
    said = re.search(r"the `/api/stats` document without ((?:`\w+`(?:, | and )?)+)", text)
    assert said is not None
    left_out = set(re.findall(r"`(\w+)`", said.group(1)))
    stats = await get_json(service.status_port, "/api/stats")
    (_, tick), *_ = [event for event in await read_events(service, 3) if event[0] == "message"]
    assert set(tick) - {"top_connections"} == set(stats) - left_out
