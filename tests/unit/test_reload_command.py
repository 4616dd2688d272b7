"""``echostat reload`` signals only the echostat server, recognised by its command line."""

from __future__ import annotations

import pytest

from echostat.reload_command import is_echostat


@pytest.mark.parametrize(
    "argv",
    [
        ["/opt/venv/bin/python", "/opt/venv/bin/echostat"],
        ["/usr/bin/python3", "/usr/local/bin/echostat", "--config", "/etc/echostat/config.yaml"],
        ["python3", "-m", "echostat", "--set", "status.port=0"],
    ],
)
def test_the_server_is_recognised(argv: list[str]) -> None:
    """The console script and ``python -m echostat`` run the server."""
    assert is_echostat(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["/sbin/init"],
        ["/lib/systemd/systemd", "--system"],
        ["/opt/venv/bin/python", "/opt/venv/bin/echostat", "probe", "127.0.0.1:7007"],
        ["python3", "-m", "echostat.server.worker", "{}"],
        ["python3", "-m", "pytest"],
    ],
)
def test_anything_else_is_not(argv: list[str]) -> None:
    """Init, a probe (which SIGHUP would kill), a worker and other programs are not."""
    assert not is_echostat(argv)
