"""Echo server on an asyncio Protocol: each received chunk is written straight back."""

from __future__ import annotations

import asyncio

from common import announce, parse_args, run


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def main(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, host, port)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    run(main(args.host, args.port), args.uvloop)
