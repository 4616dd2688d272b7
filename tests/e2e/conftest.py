"""Fixtures of the end-to-end tests: echostat run as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import EchostatProcess

StartEchostat = Callable[..., EchostatProcess]


@pytest.fixture
def start_echostat() -> Iterator[StartEchostat]:
    """Start ``python -m echostat ARGS`` and wait for its startup line; killed after the test."""
    started: list[EchostatProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, fd_limit: int | None = None
    ) -> EchostatProcess:
        process = EchostatProcess(args, env, fd_limit)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
