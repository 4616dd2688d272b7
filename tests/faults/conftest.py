"""Fixtures of the fault suite: echostat in this process or as a subprocess, and TLS files."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from echostat.server.config_loading import load_config
from echostat.service import Service
from tests.faults.support import loopback_settings, write_config
from tests.helpers import EchostatProcess

StartService = Callable[..., Awaitable[Service]]
StartEchostat = Callable[..., EchostatProcess]


@pytest.fixture
def start_service(io_loop: IOLoop, tmp_path: Path) -> Iterator[StartService]:
    """Start a `Service` in this process from config sections, loaded as a file would be.

    Going through `load_config` matters for TLS, whose context is built while loading.
    Every service started is stopped after the test.
    """
    started: list[Service] = []

    async def start(**sections: Mapping[str, Any]) -> Service:
        path = write_config(tmp_path / f"config{len(started)}.yaml", loopback_settings(**sections))
        service = Service(load_config(path))
        started.append(service)
        await service.start()
        return service

    yield start
    for service in started:
        io_loop.run_sync(service.stop)


@pytest.fixture
def start_echostat(tmp_path: Path) -> Iterator[StartEchostat]:
    """Run echostat as a subprocess from config sections; killed by PID after the test.

    Returns once it serves, or at once with ``ready=False`` (for a start expected to fail).
    """
    started: list[EchostatProcess] = []

    def start(
        fd_limit: int | None = None, ready: bool = True, **sections: Mapping[str, Any]
    ) -> EchostatProcess:
        path = write_config(tmp_path / f"config{len(started)}.yaml", loopback_settings(**sections))
        process = EchostatProcess(["--config", str(path)], fd_limit=fd_limit)
        started.append(process)
        return process.start() if ready else process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 with its key, plus an unrelated second key."""
    directory = tmp_path_factory.mktemp("tls")
    files = {name: directory / f"{name}.pem" for name in ("cert", "key", "other_key")}
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(files["key"]),
            "-out",
            str(files["cert"]),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(files["other_key"]),
        ],
        check=True,
        capture_output=True,
    )
    return files
