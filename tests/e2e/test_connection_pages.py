"""/api/connections in pages: at most 1,000 rows each, a cursor walks them all exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from echostat.service import Service
from tests.e2e.conftest import StartEchostat
from tests.helpers import LOCAL_PORTS, close_all, echo_once, get_json, stats_when

OPEN = 90
"""Connections open during a walk: below the default per-address echo limit of 100."""
PAGE = 20
CHURN = 4
"""Connections closed and opened between two pages of a walk."""

Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def client_port(client: Client) -> int:
    return int(client[1].get_extra_info("sockname")[1])


def row_port(row: dict[str, Any]) -> int:
    return int(row["peer"].rsplit(":", 1)[1])


async def walk(port: int, limit: int) -> list[dict[str, Any]]:
    """Every row of a cursor walk from ``cursor=0``."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = await get_json(port, f"/api/connections?limit={limit}&cursor={cursor}")
        assert len(page["connections"]) <= limit
        rows += page["connections"]
        cursor = page["next_cursor"]
    return rows


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=1001", "limit must be an integer 1..1000"),
        ("limit=100000", "limit must be an integer 1..1000"),
        ("cursor=x", "cursor must be 0 or the next_cursor of a page"),
        ("cursor=1-", "cursor must be 0 or the next_cursor of a page"),
    ],
)
async def test_more_than_a_page_or_a_bad_cursor_is_a_400_naming_it(
    service: Service, query: str, error: str
) -> None:
    """A page holds at most 1,000 rows: a larger limit is refused, as is a malformed cursor."""
    with pytest.raises(HTTPClientError) as refused:
        await get_json(service.status_port, f"/api/connections?{query}")
    assert refused.value.code == 400
    assert refused.value.response is not None
    assert error in refused.value.response.body.decode()


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/connections?limit=%C2%B2", "limit must be an integer 1..1000"),
        ("/api/connections?limit=" + "9" * 5000, "limit must be an integer 1..1000"),
        ("/api/peers?limit=%E2%91%A0", "limit must be an integer 1..100000"),
        ("/api/connections?cursor=%C2%B2-1", "cursor must be 0 or the next_cursor of a page"),
    ],
)
async def test_digits_python_reads_but_int_refuses_are_a_400_not_a_500(
    service: Service, path: str, error: str
) -> None:
    """A superscript or circled digit, or a number too long for `int`, is a 400 naming the
    parameter, not an internal error with a traceback in the log."""
    with pytest.raises(HTTPClientError) as refused:
        await get_json(service.status_port, path)
    assert refused.value.code == 400
    assert refused.value.response is not None
    assert error in refused.value.response.body.decode()


async def test_busiest_view_has_no_next_cursor(service: Service) -> None:
    """Without a cursor the rows are the busiest, as before, and next_cursor is null."""
    clients = [await echo_once(service.echo_port("main"), b"x" * n) for n in (1, 2, 3)]
    page = await get_json(service.status_port, "/api/connections?limit=2")
    assert page["total"] == 3 and page["next_cursor"] is None
    assert [row["bytes_received"] for row in page["connections"]] == [3, 2]
    await close_all([writer for _, writer in clients])


async def test_age_is_how_long_a_connection_has_been_open_whatever_the_wall_clock_does(
    service: Service,
) -> None:
    """The wall clock stepped an hour forward (NTP, a restored VM) while a client is
    connected: its age_s is still how long it has been open, not an hour more."""
    _, writer = await echo_once(service.echo_port("main"), b"x")
    service.registry.wall_clock = lambda: time.time() + 3600
    (row,) = (await get_json(service.status_port, "/api/connections"))["connections"]
    assert row["age_s"] < 60
    await close_all([writer])


async def test_a_walk_lists_each_connection_once_while_others_come_and_go(
    service: Service,
) -> None:
    """90 connections, pages of 20; after each page 4 not yet listed close and 4 open: each
    connection open throughout is listed exactly once, in order of acceptance, and none is
    listed after it closed."""
    port = service.echo_port("main")
    clients = [await echo_once(port, b"a") for _ in range(OPEN)]
    steady = {client_port(c) for c in clients[: OPEN // 2]}
    closed: set[int] = set()
    seen: set[int] = set()

    async def churn() -> None:
        for client in [c for c in clients[OPEN // 2 :] if client_port(c) not in seen][:CHURN]:
            clients.remove(client)
            closed.add(client_port(client))
            await close_all([client[1]])
        left = len(clients)
        await stats_when(service.status_port, lambda s: s["connections"]["active"] == left)
        for _ in range(CHURN):
            clients.append(await echo_once(port, b"b"))

    rows: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = await get_json(service.status_port, f"/api/connections?limit={PAGE}&cursor={cursor}")
        assert len(page["connections"]) <= PAGE
        rows += page["connections"]
        listed = [row_port(row) for row in page["connections"]]
        assert not closed & set(listed)
        seen.update(listed)
        cursor = page["next_cursor"]
        await churn()

    ports = [row_port(row) for row in rows]
    assert len(ports) == len(set(ports))
    assert steady <= set(ports)
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    await close_all([writer for _, writer in clients])


async def test_a_walk_over_two_workers_lists_every_connection_once(
    start_echostat: StartEchostat,
) -> None:
    """With two workers, a walk in pages of 15 lists each of 60 connections exactly once."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "workers=2", "--set", "shutdown_grace_s=2")
    clients = [await echo_once(echostat.echo_port, b"w") for _ in range(60)]
    await stats_when(echostat.status_port, lambda s: s["connections"]["active"] == 60)
    rows = await walk(echostat.status_port, 15)
    ports = [row_port(row) for row in rows]
    assert sorted(ports) == sorted(client_port(c) for c in clients)
    assert len({row["worker"] for row in rows}) == 2
    keys = [(row["worker"], row["id"]) for row in rows]
    assert keys == sorted(keys)
    await close_all([writer for _, writer in clients])
