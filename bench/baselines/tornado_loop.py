"""Echo server as a plain Tornado loop: ``read_bytes(65536, partial=True)``, ``await write``."""

from __future__ import annotations

import asyncio

from common import announce, parse_args, run
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer


class EchoServer(TCPServer):
    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            while True:
                data = await stream.read_bytes(65536, partial=True)
                await stream.write(data)
        except StreamClosedError:
            pass


async def main(host: str, port: int) -> None:
    sockets = bind_sockets(port, host)
    EchoServer().add_sockets(sockets)
    announce(sockets[0].getsockname()[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args(__doc__)
    run(main(args.host, args.port), args.uvloop)
