"""Resident memory over many short TLS connections: does echostat give back what each one held?

Starts echostat (its defaults, path quality on, plus a TLS listener with a throwaway
certificate) and has client processes open TLS connections that echo 64 bytes and close, in
a loop, until `--connections` have been made; samples the server's RSS as they go and after
`--idle` seconds of rest. Prints one line per sample and a summary; exits 1 if the RSS at the
end is more than `--margin-mib` above where it started (after a warm-up of 1,000 connections).

    .venv/bin/python bench/tls_memory.py                  # 100,000 connections
    .venv/bin/python bench/tls_memory.py --connections 20000 --set path_quality=false
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from servers import HOST, free_port, make_certificate, stop, wait_until

WARMUP_CONNECTIONS = 1000
"""Made before the starting RSS is read: imports, caches and the first arenas settle."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of rest at the end")
    parser.add_argument("--margin-mib", type=float, default=32.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def clients(port: int, cafile: str, count: int) -> None:
    """Open `count` TLS connections one after another, each echoing 64 bytes, then closing."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False  # the bench's certificate names 127.0.0.1 only as its CN
    message = b"e" * 64
    for _ in range(count):
        with socket.create_connection((HOST, port)) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as sock:
                sock.sendall(message)
                got = b""
                while len(got) < len(message):
                    chunk = sock.recv(len(message) - len(got))
                    if not chunk:
                        raise RuntimeError("the server closed before echoing")
                    got += chunk
                if got != message:
                    raise RuntimeError("an echo came back different")


def run_clients(port: int, cafile: str, count: int, procs: int) -> None:
    shares = [count // procs + (i < count % procs) for i in range(procs)]
    workers = [
        multiprocessing.Process(target=clients, args=(port, cafile, share)) for share in shares
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a client process exited with {worker.exitcode}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="echostat-tls-memory-") as tmp:
        workdir = Path(tmp)
        certificate = make_certificate(workdir, [])
        if certificate is None:
            print("tls_memory: openssl could not make a certificate", file=sys.stderr)
            return 2
        cert, key = certificate
        port, status_port = free_port(), free_port()
        config = workdir / "echostat.yaml"
        config.write_text(
            f"listeners:\n  - name: tls\n    host: {HOST}\n    port: {port}\n"
            f"    tls: {{cert: {cert}, key: {key}}}\n"
            f"status:\n  host: {HOST}\n  port: {status_port}\nlog_level: warning\n"
            "limits:\n  max_connections_per_ip: 0\n"
        )
        argv_server = [sys.executable, "-m", "echostat", "--config", str(config)]
        argv_server += [arg for setting in args.set for arg in ("--set", setting)]
        server = subprocess.Popen(argv_server, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: _accepts(port), server, "echostat", f"accepting on {port}")
            started = time.monotonic()
            run_clients(port, str(cert), WARMUP_CONNECTIONS, args.clients)
            start = rss_mib(server.pid)
            print(f"after {WARMUP_CONNECTIONS:,} warm-up connections: RSS {start:.1f} MiB")
            made, peak = 0, start
            step = max(1, args.connections // 10)
            while made < args.connections:
                batch = min(step, args.connections - made)
                run_clients(port, str(cert), batch, args.clients)
                made += batch
                now = rss_mib(server.pid)
                peak = max(peak, now)
                print(f"{made:>9,} connections, {time.monotonic() - started:6.0f} s: {now:.1f} MiB")
            end = rss_mib(server.pid)
            time.sleep(args.idle)
            rested = rss_mib(server.pid)
        finally:
            stop(server)
    print(
        f"RSS over {args.connections:,} short TLS connections: start {start:.1f} MiB, peak"
        f" {peak:.1f} MiB, end {end:.1f} MiB ({end - start:+.1f} MiB), after {args.idle:g} s"
        f" idle {rested:.1f} MiB"
    )
    return 0 if end - start <= args.margin_mib else 1


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
