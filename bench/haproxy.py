"""A local HAProxy in front of echostat for scale.py: started in the foreground with a frontend
socket bound here, speaking PROXY protocol v2 to echostat, stopped after."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import HOST, pinned, stop, wait_until

HAPROXY_CONFIG = """\
global
    maxconn {maxconn}
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 20s
    retries 5
    timeout client 120s
    timeout server 120s
frontend echo
    bind fd@{frontend_fd}
    default_backend echostat
backend echostat
    server echostat {host}:{port} send-proxy-v2
"""

HAPROXY_FIXED_FDS = 20
"""Descriptors HAProxy needs beside two per connection (2.6 asks for 17 more)."""


def haproxy_capacity() -> int:
    """Connections HAProxy can proxy under this process's hard descriptor limit (inherited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else (hard - HAPROXY_FIXED_FDS) // 2


@contextmanager
def haproxy_started(backend_port: int, workdir: Path, cpu: str | None) -> Iterator[tuple[int, int]]:
    """Debian's HAProxy in the foreground in front of `backend_port`; yields (PID, its port).

    Its frontend socket is bound here (port 0) and handed over as ``fd@N``; this returns once
    one message has come back through it, and stops HAProxy (SIGTERM, then SIGKILL) after.
    """
    program = haproxy_program()
    if program is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    frontend = socket.socket()
    frontend.bind((HOST, 0))
    frontend.listen(4096)
    maxconn = min(haproxy_capacity(), 20_000)
    config = workdir / f"haproxy-{backend_port}.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            maxconn=maxconn, frontend_fd=frontend.fileno(), host=HOST, port=backend_port
        )
    )
    log = (workdir / f"haproxy-{backend_port}.log").open("wb")
    process = subprocess.Popen(
        pinned(cpu, [program, "-db", "-f", str(config)]),
        pass_fds=(frontend.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    port = int(frontend.getsockname()[1])
    try:
        wait_until(lambda: _echoes(port), process, "haproxy", f"echoing on port {port}")
        yield process.pid, port
    finally:
        stop(process)
        log.close()
        frontend.close()


def _echoes(port: int) -> bool:
    """Whether `port` echoes one short message now."""
    probe = b"ready?"
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(probe)
            echoed = b""
            while len(echoed) < len(probe) and (data := sock.recv(64)):
                echoed += data
    except OSError:
        return False
    return echoed == probe


def haproxy_program() -> str | None:
    """Debian installs HAProxy in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def haproxy_version() -> str:
    program = haproxy_program()
    if program is None:
        return "missing"
    done = subprocess.run([program, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.split()[2] if done.returncode == 0 else "unknown"
