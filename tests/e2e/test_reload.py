"""Reload on SIGHUP: what can change in place does, without closing a connection; what
needs a restart, and any broken config, is refused in one line and the old config stays."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from tests.faults.support import loopback_settings, write_config
from tests.helpers import (
    DEADLINE_S,
    EchostatProcess,
    close_all,
    echo_once,
    get_json,
    payload,
    require_program,
    run_cli,
    stats_when,
    wait_until,
)

RELOADED = "configuration reloaded"
REFUSED = "reload refused"
Reloadable = Callable[..., tuple[EchostatProcess, Path]]


@pytest.fixture
def reloadable(tmp_path: Path) -> Iterator[Reloadable]:
    """Start echostat from a config file of `sections` that the test may rewrite; killed by
    PID after the test."""
    started: list[EchostatProcess] = []

    def start(**sections: Any) -> tuple[EchostatProcess, Path]:
        path = write_config(tmp_path / "config.yaml", loopback_settings(**sections))
        process = EchostatProcess(["--config", str(path)])
        started.append(process)
        return process.start(), path

    yield start
    for process in started:
        process.stop()


def rewrite(path: Path, **sections: Any) -> None:
    """Replace sections of the config file at `path`."""
    document = yaml.safe_load(path.read_text())
    document.update(sections)
    write_config(path, document)


async def fetch(port: int, path: str) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}")


def reload(echostat: EchostatProcess, outcome: str = RELOADED) -> str:
    """Send SIGHUP and return the log line that reports `outcome`."""
    echostat.signal(signal.SIGHUP)
    return echostat.wait_for_line(outcome).rstrip("\n")


async def test_client_echoing_across_sighup_keeps_its_connection_and_every_byte(
    reloadable: Reloadable,
) -> None:
    """Bytes in flight when SIGHUP arrives, and bytes sent after it, all come back on the
    one connection; the reload is counted in /api/stats and /metrics."""
    echostat, path = reloadable(limits={"max_connections_per_ip": 0})
    reader, writer = await asyncio.open_connection("127.0.0.1", echostat.echo_port)
    before, after = payload(2 << 20, seed=1), payload(2 << 20, seed=2)
    writer.write(before)
    rewrite(path, limits={"max_connections_per_ip": 0, "idle_timeout_s": 60}, log_level="debug")
    line = reload(echostat)
    assert "limits.idle_timeout_s" in line and "log_level" in line
    writer.write(after)
    echoed = await asyncio.wait_for(reader.readexactly(len(before) + len(after)), DEADLINE_S)
    assert echoed == before + after
    stats = await get_json(echostat.status_port)
    assert stats["connections"]["accepted"] == 1 and stats["connections"]["active"] == 1
    assert stats["config"]["reloads"] == 1 and stats["config"]["reloads_failed"] == 0
    assert stats["limits"]["idle_timeout_s"] == 60
    await close_all([writer])


async def test_new_max_connections_per_ip_takes_effect_for_new_connections(
    reloadable: Reloadable,
) -> None:
    """Lowering the per-IP limit keeps the open connections echoing and refuses new ones
    until the client is back under the new limit."""
    echostat, path = reloadable(limits={"max_connections_per_ip": 3})
    port = echostat.echo_port
    open_ = [await echo_once(port, b"before") for _ in range(3)]
    rewrite(path, limits={"max_connections_per_ip": 1})
    reload(echostat)
    for reader, writer in open_:
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
    assert await echo_or_refusal(port) is None
    await close_all([writer for _, writer in open_[1:]])
    await stats_when(echostat.status_port, lambda s: s["connections"]["active"] == 1)
    assert await echo_or_refusal(port) is None
    await close_all([open_[0][1]])
    await stats_when(echostat.status_port, lambda s: s["connections"]["active"] == 0)
    _, writer = await echo_once(port, b"welcome back")
    stats = await get_json(echostat.status_port)
    assert stats["connections"]["rejected_by_reason"] == {"max_connections_per_ip": 2}
    assert stats["limits"]["max_connections_per_ip"] == 1
    await close_all([writer])


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as ``NAME.crt``, ``NAME.key``."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            require_program("openssl", "openssl"),
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "2", "-subj", f"/CN={name}"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=DEADLINE_S,
    )
    return cert, key


def fingerprint(pem: bytes) -> str:
    """SHA-256 fingerprint of a PEM certificate, as ``openssl x509 -fingerprint`` prints it."""
    done = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pem,
        capture_output=True,
        check=True,
        timeout=DEADLINE_S,
    )
    return done.stdout.decode().strip().split("=", 1)[1]


def served_fingerprint(port: int) -> str:
    """The fingerprint of the certificate a new TLS client of `port` gets, via s_client."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEADLINE_S,
        check=False,
    )
    begin = done.stdout.index(b"-----BEGIN CERTIFICATE-----")
    end = done.stdout.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    return fingerprint(done.stdout[begin:end] + b"\n")


async def test_rotated_certificate_is_served_to_the_next_client_while_an_old_one_echoes(
    reloadable: Reloadable, tmp_path: Path
) -> None:
    """Replace cert and key files in place and SIGHUP: openssl s_client sees the new
    certificate, and a TLS connection made before keeps echoing under the old one."""
    old_cert, old_key = make_certificate(tmp_path, "old")
    new_cert, new_key = make_certificate(tmp_path, "new")
    served_cert, served_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(old_cert, served_cert)
    shutil.copy(old_key, served_key)
    tls = {"cert": str(served_cert), "key": str(served_key)}
    echostat, _ = reloadable(
        listeners=[{"name": "tls", "host": "127.0.0.1", "port": 0, "tls": tls}]
    )
    port = echostat.ports["tls"]
    context = ssl.create_default_context(cafile=str(old_cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"
    assert served_fingerprint(port) == fingerprint(old_cert.read_bytes())

    shutil.copy(new_cert, served_cert)
    shutil.copy(new_key, served_key)
    reload(echostat)

    assert served_fingerprint(port) == fingerprint(new_cert.read_bytes())
    data = payload(300_000)
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), DEADLINE_S) == data
    old_peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert (
        hashlib.sha256(old_peer).digest()
        == hashlib.sha256(ssl.PEM_cert_to_DER_cert(old_cert.read_text())).digest()
    )
    await close_all([writer])


async def test_tls_turned_on_and_off_by_reload_is_what_the_listener_reports(
    reloadable: Reloadable, tmp_path: Path
) -> None:
    """A reload that gives a plain listener TLS, then takes it away, changes what its next
    clients speak, and /api/stats says so in ``listeners[].tls`` each time."""
    cert, key = make_certificate(tmp_path, "added")
    plain = {"name": "main", "host": "127.0.0.1", "port": 0}
    echostat, path = reloadable(listeners=[plain])
    port = echostat.echo_port

    rewrite(path, listeners=[{**plain, "tls": {"cert": str(cert), "key": str(key)}}])
    assert "listeners[0].tls" in reload(echostat)
    context = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(b"over tls")
    assert await reader.readexactly(8) == b"over tls"
    (listener,) = (await get_json(echostat.status_port))["listeners"]
    assert listener["tls"] is True
    await close_all([writer])

    rewrite(path, listeners=[plain])
    assert "listeners[0].tls" in reload(echostat)
    _, writer = await echo_once(port, b"plain again")
    (listener,) = (await get_json(echostat.status_port))["listeners"]
    assert listener["tls"] is False
    await close_all([writer])


async def test_broken_config_on_reload_keeps_the_old_one_and_logs_one_line(
    reloadable: Reloadable,
) -> None:
    """An invalid file is refused with the message a start would give, in one line; the
    service keeps echoing under the old config and counts the failure."""
    echostat, path = reloadable(limits={"max_connections_per_ip": 5})
    good = path.read_text()
    path.write_text("limits:\n  max_connections_per_ip: -1\n")
    start_error = run_cli("--check-config", "--config", str(path)).stderr.strip()
    assert start_error.startswith("echostat: ")
    before = len(echostat.log)
    line = reload(echostat, REFUSED)
    assert start_error.removeprefix("echostat: ") in line
    assert "the running configuration stays in force" in line
    _, writer = await echo_once(echostat.echo_port, b"still serving")
    path.write_text(good)
    reload(echostat)
    between = echostat.log[before:-1]
    assert between == [line]
    stats = await get_json(echostat.status_port)
    assert stats["config"]["reloads_failed"] == 1 and stats["config"]["reloads"] == 1
    assert stats["limits"]["max_connections_per_ip"] == 5
    metrics = (await fetch(echostat.status_port, "/metrics")).body.decode()
    assert "echostat_config_reload_failures_total 1.0" in metrics
    assert "echostat_config_reloads_total 1.0" in metrics
    await close_all([writer])


@pytest.mark.parametrize(
    ("listeners", "key"),
    [
        ([{"name": "main", "host": "127.0.0.1", "port": 1}], "listeners[0].port"),
        ([{"name": "main", "host": "127.0.0.2", "port": 0}], "listeners[0].host"),
        (
            [
                {"name": "main", "host": "127.0.0.1", "port": 0},
                {"name": "more", "host": "127.0.0.1", "port": 0},
            ],
            "listeners",
        ),
    ],
    ids=["moved", "rebound", "added"],
)
async def test_listener_change_is_refused_naming_the_key_and_nothing_is_applied(
    reloadable: Reloadable, listeners: list[dict[str, Any]], key: str
) -> None:
    """A listener moved or added needs a restart: refused in one line naming the key, and
    the limit changed in the same file is not applied either."""
    echostat, path = reloadable(limits={"max_connections_per_ip": 5})
    rewrite(path, listeners=listeners, limits={"max_connections_per_ip": 1})
    line = reload(echostat, REFUSED)
    assert f"reload refused: {key}: changing this needs a restart" in line
    _, writer = await echo_once(echostat.echo_port, b"same port")
    stats = await get_json(echostat.status_port)
    assert stats["limits"]["max_connections_per_ip"] == 5
    assert stats["config"]["reloads_failed"] == 1
    await close_all([writer])


async def test_reload_with_workers_is_validated_once_and_reaches_every_worker(
    reloadable: Reloadable,
) -> None:
    """With two workers the supervisor reloads, then each worker: the new per-IP limit holds
    in both, an open connection keeps echoing, and the page counts one reload."""
    echostat, path = reloadable(workers=2, limits={"max_connections_per_ip": 0})
    reader, writer = await echo_once(echostat.echo_port, b"before")
    rewrite(path, workers=2, limits={"max_connections_per_ip": 1})
    lines = [reload(echostat), *(echostat.wait_for_line(RELOADED) for _ in range(2))]
    who = sorted(line.split("echostat.server.reload: ")[1].split(":")[0] for line in lines)
    assert who == ["configuration reloaded", "worker 0", "worker 1"], lines
    writer.write(b"after")
    assert await reader.readexactly(5) == b"after"
    await close_all([writer])
    await stats_when(echostat.status_port, lambda s: s["connections"]["active"] == 0)
    tries = [await echo_or_refusal(echostat.echo_port) for _ in range(8)]
    accepted = [writer for writer in tries if writer is not None]
    assert 1 <= len(accepted) <= 2  # one per worker at most, whichever the kernel picks
    stats = await get_json(echostat.status_port)
    assert stats["config"]["reloads"] == 1 and stats["limits"]["max_connections_per_ip"] == 1
    await close_all(accepted)


async def echo_or_refusal(port: int) -> asyncio.StreamWriter | None:
    """A connection that echoes (kept open and returned), or None if the server refused it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"?")
    try:
        echoed = await asyncio.wait_for(reader.read(1), DEADLINE_S)
    except ConnectionResetError:
        echoed = b""
    if echoed:
        return writer
    writer.close()
    with contextlib.suppress(ConnectionResetError):
        await writer.wait_closed()  # re-raises the server's reset, if it sent one
    return None


async def test_access_log_turned_on_by_reload_logs_the_next_close_and_a_bad_path_is_refused(
    reloadable: Reloadable, tmp_path: Path
) -> None:
    """Enabling the access log on SIGHUP logs connections that end from then on; a new path
    that can't be opened refuses the reload and the log in force keeps its file."""
    log_path = tmp_path / "access.log"
    echostat, path = reloadable()
    _, writer = await echo_once(echostat.echo_port, b"before")
    await close_all([writer])
    await stats_when(echostat.status_port, lambda s: s["connections"]["closed"] == 1)

    rewrite(path, access_log={"enabled": True, "format": "json", "path": str(log_path)})
    assert "access_log" in reload(echostat)
    _, writer = await echo_once(echostat.echo_port, b"after the reload")
    await close_all([writer])
    await wait_until(lambda: log_path.exists() and log_path.read_text().count("\n") == 1)
    record = json.loads(log_path.read_text())
    assert record["event"] == "close" and record["bytes_received"] == len(b"after the reload")

    unwritable = tmp_path / "missing" / "access.log"
    rewrite(path, access_log={"enabled": True, "format": "json", "path": str(unwritable)})
    assert "access_log.path" in reload(echostat, REFUSED)
    _, writer = await echo_once(echostat.echo_port, b"still logged")
    await close_all([writer])
    await wait_until(lambda: log_path.read_text().count("\n") == 2)
    assert not unwritable.parent.exists()


def test_echostat_reload_sends_sighup_without_a_shell(reloadable: Reloadable) -> None:
    """``echostat reload --pid PID``, the path for images without a shell, reloads the
    running echostat as SIGHUP does."""
    echostat, path = reloadable()
    rewrite(path, limits={"max_connections_per_ip": 0, "idle_timeout_s": 60})
    sent = run_cli("reload", "--pid", str(echostat.pid))
    assert sent.returncode == 0, sent.stderr
    assert f"sent SIGHUP to process {echostat.pid}" in sent.stdout
    assert "limits.idle_timeout_s" in echostat.wait_for_line(RELOADED)


def test_echostat_reload_refuses_a_process_that_is_not_echostat() -> None:
    """A process that is not the echostat server (here a sleeping Python) is not signalled:
    exit 2 naming what it runs, and it keeps running."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        refused = run_cli("reload", "--pid", str(other.pid))
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"echostat reload: process {other.pid} is not echostat")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("pid", ["0", "-1", "x"])
def test_echostat_reload_refuses_what_is_no_process_id_as_a_usage_error(pid: str) -> None:
    """0 and -1 name process groups (-1 every process) to kill(2), never one server: like a
    pid that is no number, exit 2 naming the flag, not exit 1 "no process"."""
    refused = run_cli("reload", "--pid", pid)
    assert refused.returncode == 2
    assert f"argument --pid: expected a process id (1 or more), got '{pid}'" in refused.stderr


def test_echostat_reload_of_a_worker_names_its_supervisor(reloadable: Reloadable) -> None:
    """A worker's pid (what ps shows beside the supervisor's) is refused with exit 2 naming
    the supervisor's pid to pass instead, and the worker is not signalled."""
    echostat, _ = reloadable(workers=2)
    worker = int(Path(f"/proc/{echostat.pid}/task/{echostat.pid}/children").read_text().split()[0])
    refused = run_cli("reload", "--pid", str(worker))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"echostat reload: process {worker} is a worker of echostat {echostat.pid};"
        f" pass --pid {echostat.pid}\n"
    )
    assert not any("SIGHUP" in line for line in echostat.log)


async def test_with_workers_an_access_log_that_cannot_be_opened_refuses_the_reload(
    reloadable: Reloadable, tmp_path: Path
) -> None:
    """With workers, each of which opens its own access log, a new path none can open is
    refused by the supervisor in one line, before any worker or the page takes the config."""
    echostat, path = reloadable(workers=2, limits={"max_connections_per_ip": 5})
    unwritable = tmp_path / "missing" / "access.log"
    rewrite(
        path,
        limits={"max_connections_per_ip": 1},
        access_log={"enabled": True, "path": str(unwritable)},
    )
    before = len(echostat.log)
    line = reload(echostat, REFUSED)
    assert f"reload: reload refused: access_log.path: cannot open {unwritable}" in line
    rewrite(path, limits={"max_connections_per_ip": 2}, access_log={"enabled": False})
    lines = [reload(echostat), *(echostat.wait_for_line(RELOADED) for _ in range(2))]
    assert [entry for entry in echostat.log[before:] if REFUSED in entry] == [line], lines
    stats = await get_json(echostat.status_port)
    assert stats["config"]["reloads_failed"] == 1 and stats["config"]["reloads"] == 1
    assert stats["limits"]["max_connections_per_ip"] == 2


async def test_a_config_file_emptied_when_sighup_comes_is_refused(tmp_path: Path) -> None:
    """A file truncated to be written again (the state ``>`` and many editors pass through)
    is refused in one line naming it, not read as every key at its default: the limit from
    the file stays in force."""
    path = write_config(tmp_path / "config.yaml", {"limits": {"idle_timeout_s": 30}})
    ports = ("--set", "listeners.0.port=0", "--set", "status.port=0")
    echostat = EchostatProcess(["--config", str(path), *ports]).start()
    try:
        path.write_text("")
        line = reload(echostat, "echostat.server.reload: ")
        assert f"reload refused: {path}: empty" in line, line
        stats = await get_json(echostat.status_port)
        assert stats["limits"]["idle_timeout_s"] == 30 and stats["config"]["reloads_failed"] == 1
    finally:
        echostat.stop()
