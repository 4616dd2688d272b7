"""Echo server on an asyncio Protocol: each received chunk is written straight back.

With ``--tls-port`` it also serves TLS there, with the SSLContext echostat would use.
"""

from __future__ import annotations

import asyncio
import ssl

from common import announce, echostat_tls_context, parse_args, run


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def main(host: str, port: int, tls_port: int | None, tls: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port)
    if tls_port is not None:
        await loop.create_server(Echo, host, tls_port, ssl=tls)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__, tls_choice=True)
    context = echostat_tls_context(args.tls_config) if args.tls_config else None
    run(main(args.host, args.port, args.tls_port, context), args.uvloop)
