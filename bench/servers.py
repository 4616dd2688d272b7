"""The servers under test: which ones run (echostat, the baselines, the C epoll floor, an older
checkout), and starting, pinning and stopping them."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from source_tree import import_root, server_module

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Server:
    """One server under test: echostat (with a config) or a baseline script."""

    name: str
    script: str | None = None
    """Baseline file under bench/baselines/; None for echostat."""
    uvloop: bool = False
    """Baselines: pass --uvloop. echostat: config ``event_loop: uvloop`` (else asyncio)."""
    holds_many: bool = True
    """False for servers that cannot hold thousands of connections (select's 1024 limit)."""
    source: Path | None = None
    """Run echostat from this source tree (an extracted git ref) instead of the installed one."""
    overrides: tuple[str, ...] = ()
    """echostat: ``KEY=VALUE`` settings passed as ``--set`` on top of the config file."""
    binary: Path | None = None
    """A compiled baseline (the C epoll echo), run directly."""
    tls: bool = False
    """Serves TLS too (echostat's TLS listener, or a baseline with echostat's SSLContext)."""

    @property
    def is_echostat(self) -> bool:
        return self.script is None


OFF = ("path_quality=false",)
ACCESS_LOG = ("access_log.enabled=true", "access_log.format=json", "access_log.path=/dev/null")
"""The access log written in full (JSON, one write per line), to a sink that costs no disk."""

REFERENCE = "echostat (uvloop)"
"""The row whose ratio to every other row the report gives."""

FLOOR = "C epoll echo"
"""The floor: a bare epoll loop in C (`baselines/epoll_echo.c`), what the machine itself costs."""


def servers(echostat_ref: str | None, ref_tree: Path | None, floor: Path | None) -> list[Server]:
    """Every server run.py measures: echostat four ways (and at `echostat_ref` if given), the
    Python baselines with and without uvloop, and the C floor if it was built."""
    found = [
        Server(REFERENCE, uvloop=True, tls=True),
        Server("echostat (asyncio)", tls=True),
        Server("echostat (uvloop, path quality off)", uvloop=True, overrides=OFF),
        Server("echostat (uvloop, access log)", uvloop=True, overrides=ACCESS_LOG),
    ]
    if echostat_ref is not None:
        found.append(Server(f"echostat @ {echostat_ref} (its defaults)", source=ref_tree))
    for script, title in (
        ("asyncio_protocol.py", "asyncio Protocol"),
        ("asyncio_streams.py", "asyncio streams"),
        ("tornado_loop.py", "Tornado plain loop"),
    ):
        tls = script == "asyncio_protocol.py"
        found.append(Server(f"{title} + uvloop", script, uvloop=True, tls=tls))
        found.append(Server(title, script, tls=tls))
    found.append(Server("select.select loop", "select_loop.py", holds_many=False))
    if floor is not None:
        found.append(Server(FLOOR, "epoll_echo.c", binary=floor))
    return found


def build_floor(workdir: Path, notes: list[str]) -> Path | None:
    """Compile the C epoll echo baseline with `cc`; None (and a note why) if it can't be."""
    compiler = shutil.which("cc")
    if compiler is None:
        notes.append(f"{FLOOR} skipped: no C compiler (cc) on this machine.")
        return None
    binary = workdir / "epoll_echo"
    source = BENCH / "baselines" / "epoll_echo.c"
    built = subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        notes.append(f"{FLOOR} skipped: cc failed: {built.stderr.strip()[:200]}")
        return None
    return binary


def make_certificate(workdir: Path, notes: list[str]) -> tuple[Path, Path] | None:
    """A throwaway RSA-2048 certificate and key for the TLS cells (openssl); None without it."""
    openssl = shutil.which("openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    if openssl is not None:
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        names = ["-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(cert)]
        made = subprocess.run([openssl, *request, *names], capture_output=True, check=False)
        if made.returncode == 0:
            return cert, key
    notes.append("TLS cells skipped: openssl could not make a certificate.")
    return None


def extract_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` of this repository, extracted under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True
    ).stdout
    tree = into / "echostat-ref"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    """`argv` run on the CPUs of the taskset list `cpus` ("0", "0-5"), or unpinned."""
    return argv if cpus is None else ["taskset", "-c", cpus, *argv]


def pin_cpus(requested: bool, loadgen_procs: int) -> tuple[str | None, list[str | None]]:
    """The server's CPUs (a taskset list) and one CPU per load generator: the load generators
    get the last `loadgen_procs` CPUs, the server (and its workers) all the others."""
    available = sorted(os.sched_getaffinity(0))
    if not requested or not shutil.which("taskset") or len(available) < 2:
        return None, [None] * loadgen_procs
    if len(available) <= loadgen_procs:
        raise SystemExit(
            f"bench: --loadgen-procs {loadgen_procs} needs at least {loadgen_procs + 1} CPUs"
            f" (one or more for the server), this machine offers {len(available)}"
        )
    server = ",".join(str(cpu) for cpu in available[: len(available) - loadgen_procs])
    if loadgen_procs == 1:
        server = str(available[0])  # the classic layout: CPU 0 and CPU 1, the rest idle
        return server, [str(available[1])]
    return server, [str(cpu) for cpu in available[-loadgen_procs:]]


@dataclass
class Running:
    """A started server: its process and the ports the load generator talks to."""

    process: subprocess.Popen[bytes]
    echo_port: int
    status_port: int | None
    proxy_pid: int | None = None
    """A proxy between the load generator and the server, measured apart."""
    tls_port: int | None = None


BENCH_LIMITS = "limits:\n  max_connections: 12000\n  max_connections_per_ip: 0\n"
"""Room for the 10,000-connection cell, all of whose clients share one address."""


def echostat_config(
    workdir: Path,
    echo_port: int,
    status_port: int,
    event_loop: str | None,
    tls: tuple[int, Path, Path] | None = None,
) -> Path:
    """A config file for one run (keys as in config.yaml); no `event_loop` means an older
    echostat (an extracted git ref) with its own defaults, which may predate `limits`.
    `tls` adds a TLS listener: its port, certificate and key."""
    path = workdir / f"echostat-{echo_port}.yaml"
    listeners = f"listeners:\n  - name: main\n    host: {HOST}\n    port: {echo_port}\n"
    if tls is not None:
        port, cert, key = tls
        listeners += (
            f"  - name: tls\n    host: {HOST}\n    port: {port}\n"
            f"    tls: {{cert: {cert}, key: {key}}}\n"
        )
    path.write_text(
        listeners + f"status:\n  host: {HOST}\n  port: {status_port}\n"
        "shutdown_grace_s: 1\nlog_level: warning\n"
        + (f"event_loop: {event_loop}\n{BENCH_LIMITS}" if event_loop else "")
    )
    return path


def _argv(
    server: Server,
    workdir: Path,
    echo_port: int,
    status_port: int | None,
    tls: tuple[int, Path, Path] | None,
) -> tuple[list[str], dict[str, str], Path | None]:
    """The command line, environment and working directory that start `server`."""
    env = dict(os.environ)
    if server.binary is not None:
        return [str(server.binary), "--port", str(echo_port)], env, None
    if server.script is not None:
        argv = [sys.executable, str(BENCH / "baselines" / server.script), "--port", str(echo_port)]
        argv += ["--uvloop"] if server.uvloop else []
        if tls is not None:
            # The same SSLContext echostat builds, from a config naming the same files.
            config = echostat_config(workdir, echo_port, free_port(), "asyncio", tls)
            argv += ["--tls-port", str(tls[0]), "--tls-config", str(config)]
        return argv, env, None
    assert status_port is not None
    event_loop = None if server.source else "uvloop" if server.uvloop else "asyncio"
    config = echostat_config(workdir, echo_port, status_port, event_loop, tls)
    module = "echostat"
    root = None
    if server.source is not None:
        module = server_module(server.source)
        root = import_root(server.source, workdir / f"import-root-{echo_port}")
        env["PYTHONPATH"] = str(root)
    argv = [sys.executable, "-m", module, "--config", str(config)]
    argv += [arg for setting in server.overrides for arg in ("--set", setting)]
    # Run from the import root, not the tree: `python -m` puts the working directory first
    # on sys.path, and the tree's own echostat/ (without server/ and web/ beside it) would
    # then shadow the links, leaving those to the installed copy's.
    return argv, env, root


@contextmanager
def started(
    server: Server, workdir: Path, cpus: str | None, certificate: tuple[Path, Path] | None
) -> Iterator[Running]:
    """Start `server`, wait until its ports accept, and stop it (SIGTERM, then SIGKILL) after."""
    echo_port = free_port()
    status_port = free_port() if server.is_echostat else None
    tls_port = free_port() if server.tls and certificate else None
    tls = (tls_port, *certificate) if tls_port and certificate else None
    argv, env, cwd = _argv(server, workdir, echo_port, status_port, tls)
    log = (workdir / f"server-{echo_port}.log").open("wb")
    process = subprocess.Popen(
        pinned(cpus, argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
    )
    try:
        for port in (echo_port, status_port, tls_port):
            if port is not None:
                wait_until(_accepts(port), process, server.name, f"accepting on port {port}")
        yield Running(process, echo_port, status_port, tls_port=tls_port)
    finally:
        stop(process)
        log.close()


def _accepts(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            return False
        return True

    return ready


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, what: str
) -> None:
    """Return once `ready()` is true; raise RuntimeError if `process` exits first or
    `READY_TIMEOUT_S` passes. `what` names the condition in the message."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} before {what}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name}: not {what} after {READY_TIMEOUT_S:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s; safe to call twice."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
