"""The classic ``select.select`` echo loop: non-blocking sockets, one output queue per socket.

select() only handles descriptors below FD_SETSIZE (1024), so this server cannot hold
thousands of connections; the benchmark skips the hold cell for it.
"""

from __future__ import annotations

import select
import socket
from collections import deque

from common import announce, parse_args


def serve(host: str, port: int) -> None:
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    announce(listener.getsockname()[1])
    inputs: list[socket.socket] = [listener]
    outputs: list[socket.socket] = []
    queues: dict[socket.socket, deque[bytes]] = {}
    while True:
        readable, writable, _ = select.select(inputs, outputs, [])
        for sock in readable:
            if sock is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                inputs.append(conn)
                queues[conn] = deque()
                continue
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                queues[sock].append(data)
                if sock not in outputs:
                    outputs.append(sock)
            else:
                close(sock, inputs, outputs, queues)
        for sock in writable:
            queue = queues.get(sock)
            if not queue:
                if sock in outputs:
                    outputs.remove(sock)
                continue
            try:
                sent = sock.send(queue[0])
            except ConnectionError:
                close(sock, inputs, outputs, queues)
                continue
            if sent < len(queue[0]):
                queue[0] = queue[0][sent:]
            else:
                queue.popleft()


def close(
    sock: socket.socket,
    inputs: list[socket.socket],
    outputs: list[socket.socket],
    queues: dict[socket.socket, deque[bytes]],
) -> None:
    if sock in outputs:
        outputs.remove(sock)
    inputs.remove(sock)
    del queues[sock]
    sock.close()


if __name__ == "__main__":
    args = parse_args(__doc__, loop_choice=False)
    try:
        serve(args.host, args.port)
    except KeyboardInterrupt:
        pass
