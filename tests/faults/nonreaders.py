"""Clients that send without ever reading, in a process of their own.

``python -m tests.faults.nonreaders PORT COUNT BYTES`` opens COUNT connections to PORT on
127.0.0.1, sends up to BYTES on each until the server stops taking them, prints one JSON line
(``{"connected": N, "sent": TOTAL}``) and holds the connections open until its standard input
closes. A process apart keeps the load off the event loop of whoever measures the server.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys

BATCH = 100
"""Connections opened at once: within the listen backlog."""

RECEIVE_BUFFER_BYTES = 4096
SEGMENT_BYTES = 536
"""A small receive window and segment size: the server's kernel then sizes its send buffer
for this connection small, so the server soon has to queue what it echoes, as it would for
a distant client, without taking the machine's TCP memory."""

STALL_S = 1.0
"""No progress for this long means the server stopped reading from the client."""


async def main(port: int, count: int, per_client: int) -> None:
    _allow_descriptors(count + 64)
    loop = asyncio.get_running_loop()
    clients: list[socket.socket] = []
    for start in range(0, count, BATCH):
        batch = [_socket() for _ in range(min(BATCH, count - start))]
        await asyncio.gather(*(loop.sock_connect(sock, ("127.0.0.1", port)) for sock in batch))
        clients += batch
    sent = await asyncio.gather(*(_send(sock, per_client) for sock in clients))
    print(json.dumps({"connected": len(clients), "sent": sum(sent)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    for sock in clients:
        sock.close()


def _allow_descriptors(needed: int) -> None:
    """Raise RLIMIT_NOFILE to `needed` if it is lower (the hard limit too needs root, as in CI)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    elif soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SEGMENT_BYTES)
    sock.setblocking(False)
    return sock


async def _send(sock: socket.socket, limit_bytes: int) -> int:
    loop = asyncio.get_running_loop()
    chunk = bytes(65536)
    sent = 0
    while sent < limit_bytes:
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, chunk), STALL_S)
        except TimeoutError:
            break
        sent += len(chunk)
    return sent


if __name__ == "__main__":
    asyncio.run(main(*(int(arg) for arg in sys.argv[1:4])))
