"""UDP echo on an asyncio DatagramProtocol: each datagram is sent straight back, nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

from common import announce, parse_args, run


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host, port))
    announce(transport.get_extra_info("sockname")[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args(__doc__)
    run(main(args.host, args.port), args.uvloop)
