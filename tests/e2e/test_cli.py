"""The ``echostat`` command line run as a subprocess: bad config, --check-config, overrides."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e.conftest import StartEchostat
from tests.helpers import BAD_CONFIGS, LOCAL_PORTS, recv_exactly, run_cli

EXIT_BAD_CONFIG = 2


def _assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit status 2 and a stderr of exactly one line that ends with `message`."""
    assert result.returncode == EXIT_BAD_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(message), lines[0]


@pytest.mark.parametrize("mode", [(), ("--check-config",)], ids=["start", "check-config"])
@pytest.mark.parametrize(("text", "flags", "message"), BAD_CONFIGS)
def test_bad_config_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, mode: Sequence[str], text: str | None, flags: Sequence[str], message: str
) -> None:
    """Each kind of bad config exits 2 with one line naming the key or file, no traceback."""
    if text is not None:
        (tmp_path / "config.yaml").write_text(text)
    result = run_cli(*mode, "--config", "config.yaml", *flags, cwd=tmp_path)
    _assert_one_line_error(result, f"echostat: {message}")


@pytest.mark.parametrize(
    ("flag", "key"), [("listeners.0.port", "listeners[0].port"), ("status.port", "status.port")]
)
def test_port_in_use_exits_2_naming_the_key(flag: str, key: str) -> None:
    """A port another socket listens on exits 2 with one line naming the key and the port."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(*LOCAL_PORTS, "--set", f"{flag}={port}")
    _assert_one_line_error(
        result,
        f"{key}: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (another process uses it; pick another port, or 0 for any)",
    )


def test_check_config_accepts_the_repository_config() -> None:
    """--check-config exits 0 on the documented default config.yaml."""
    result = run_cli("--check-config", "--config", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "echostat: config.yaml: configuration is valid; max_connections"
    )


def test_environment_and_set_overrides_take_effect(start_echostat: StartEchostat) -> None:
    """ECHOSTAT_STATUS__PORT=0 and --set listeners.0.port=0 move both ports off config.yaml's."""
    moved = ("--set", "listeners.0.port=0", "--set", "listeners.1.port=0")
    echostat = start_echostat(*moved, env={"ECHOSTAT_STATUS__PORT": "0"})
    assert echostat.echo_port not in (0, 7007)
    assert echostat.status_port not in (0, 7070)
    with socket.create_connection(("127.0.0.1", echostat.echo_port)) as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
    status = http.client.HTTPConnection("127.0.0.1", echostat.status_port, timeout=30)
    status.request("GET", "/healthz")
    assert status.getresponse().status == 200
    status.close()


def test_the_probe_command_loads_neither_the_server_nor_the_page() -> None:
    """Parsing ``echostat probe ...`` imports the probe alone: no data plane, no web side."""
    script = (
        "import sys\n"
        "from echostat.cli import build_parser\n"
        "build_parser().parse_args(['probe', '127.0.0.1:7'])\n"
        "loaded = {'echostat.service', 'echostat.serve', 'echostat.web', 'tornado.web'}\n"
        "print(sorted(loaded & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize("mode", [(), ("--check-config",)], ids=["start", "check-config"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--set", "listeners.0.host=999.1.1.1"),
            "listeners[0].host: cannot resolve '999.1.1.1': Name or service not known",
        ),
        (
            ("--set", "access_log.enabled=true", "--set", "access_log.path=/no-such-dir/a.log"),
            "access_log.path: cannot open /no-such-dir/a.log: No such file or directory",
        ),
    ],
    ids=["unresolvable-host", "unopenable-access-log"],
)
def test_check_config_refuses_what_a_start_refuses(
    mode: Sequence[str], flags: Sequence[str], message: str
) -> None:
    """--check-config resolves hosts and opens the access log, as a start does, and both
    refuse with exit 2 and one line naming the key."""
    result = run_cli(*mode, "--config", "config.yaml", *LOCAL_PORTS, *flags)
    _assert_one_line_error(result, message)


def test_ipv6_addresses_in_the_startup_line_and_errors_are_in_brackets(
    start_echostat: StartEchostat,
) -> None:
    """``::1`` and a port read as one address without brackets (``::1:7007``): the startup
    line and a port-in-use error write ``[::1]:PORT``, as the probe takes it."""
    six = ("--set", "listeners.0.host=::1", "--set", "listeners.1.host=::1")
    udp = ("--set", "listeners.1.protocol=udp")
    echostat = start_echostat("--config", "config.yaml", *LOCAL_PORTS, *six, *udp)
    main, report = echostat.ports["main"], echostat.ports["report"]
    startup = next(line for line in echostat.log if "echoing:" in line)
    assert f"main on [::1]:{main}, report on [::1]:{report}/udp;" in startup, startup
    taken = run_cli(
        "--config", "config.yaml", *LOCAL_PORTS, *six, "--set", f"listeners.0.port={main}"
    )
    _assert_one_line_error(
        taken,
        f"listeners[0].port: cannot listen on [::1]:{main}: Address already in use"
        " (another process uses it; pick another port, or 0 for any)",
    )


@pytest.mark.parametrize(
    ("flags", "env", "origin"),
    [
        (("--set", "listeners.0.host=999.1.1.1"), {}, "--set listeners.0.host"),
        (
            ("--set", "access_log.enabled=true"),
            {"ECHOSTAT_ACCESS_LOG__PATH": "/no-such-dir/a.log"},
            "environment variable ECHOSTAT_ACCESS_LOG__PATH",
        ),
    ],
    ids=["unresolvable-host", "unopenable-access-log"],
)
def test_a_start_names_where_an_unusable_value_came_from(
    flags: Sequence[str], env: dict[str, str], origin: str
) -> None:
    """A host that doesn't resolve or an access log that can't be opened stops a start with
    the line --check-config prints: the flag or variable the value came from, then the key."""
    args = ("--config", "config.yaml", *LOCAL_PORTS, *flags)
    started, checked = run_cli(*args, env=env), run_cli("--check-config", *args, env=env)
    _assert_one_line_error(started, checked.stderr.strip())
    assert started.stderr.startswith(f"echostat: {origin}: "), started.stderr


@pytest.mark.parametrize(
    ("config", "flags", "message"),
    [
        (
            "config.yaml",
            ("--set", "status.port=1" + "0" * 400),
            "--set status.port: status.port: expected an integer 0..65535,"
            " got 10000000000000000000... (401 digits)",
        ),
        (
            "config.yaml",
            ("--set", "listeners.0.tls.handshake_timeout_s=x"),
            "--set listeners.0.tls.handshake_timeout_s: listeners[0].tls.handshake_timeout_s:"
            " expected a number 0.1..300, got 'x'",
        ),
        ("/dev/zero", (), "/dev/zero: larger than 1 MiB; not a config file?"),
    ],
    ids=["huge-integer", "key-inside-a-section", "endless-file"],
)
def test_config_edge_cases_exit_2_with_one_line(
    config: str, flags: Sequence[str], message: str
) -> None:
    """A number no float holds, a bad key inside an optional section, an endless file."""
    result = run_cli("--check-config", "--config", config, *flags)
    _assert_one_line_error(result, f"echostat: {message}")
