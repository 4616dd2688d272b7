"""Shared fixtures: a fresh event loop per test and a real echostat service on port 0."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from tornado.ioloop import IOLoop

from echostat.server.config import Config, LimitsConfig, ListenerConfig, StatusConfig, UDPConfig
from echostat.service import Service


@pytest.fixture
def io_loop() -> Iterator[IOLoop]:
    """A new asyncio loop per test, wrapped by Tornado without the deprecated make_current.

    Overrides pytest-tornasync's fixture of the same name, which predates Tornado 6.2.
    """
    yield from new_io_loop()


def new_io_loop() -> Iterator[IOLoop]:
    """A Tornado loop over a new asyncio loop, closed after its one item is used; for an
    `io_loop` fixture of any scope."""
    loop = asyncio.new_event_loop()

    async def current() -> IOLoop:
        return IOLoop.current()

    io_loop = loop.run_until_complete(current())
    yield io_loop
    io_loop.close(all_fds=True)


def loopback_config(**changes: object) -> Config:
    """A config bound to 127.0.0.1 on free ports; `changes` replace top-level fields.

    Every test client comes from 127.0.0.1, so the per-IP limit is off unless a test sets it.
    """
    base = Config(
        listeners=(ListenerConfig(name="main", host="127.0.0.1", port=0),),
        status=StatusConfig(host="127.0.0.1", port=0),
        limits=LimitsConfig(max_connections_per_ip=0),
        shutdown_grace_s=1.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


UDP_UNLIMITED = UDPConfig(max_datagrams_per_s_per_ip=0, max_datagrams_per_s=0, max_bytes_per_s=0)
"""Every test client comes from loopback, so the rate limits are off unless a test sets them."""


def udp_config(**changes: object) -> Config:
    """The loopback config plus a UDP listener ``udp`` on 127.0.0.1; `changes` replace
    fields of `UDP_UNLIMITED`."""
    base = loopback_config()
    listeners = (
        *base.listeners,
        ListenerConfig(name="udp", host="127.0.0.1", port=0, protocol="udp"),
    )
    udp = dataclasses.replace(UDP_UNLIMITED, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(base, listeners=listeners, udp=udp)


@pytest.fixture
def config() -> Config:
    """The config `service` starts with; override this fixture in a module to change it."""
    return loopback_config()


@pytest.fixture
def service(io_loop: IOLoop, config: Config) -> Iterator[Service]:
    """A started echostat service; stopped (and drained) after the test."""
    svc = Service(config)
    io_loop.run_sync(svc.start)
    yield svc
    io_loop.run_sync(svc.stop)
