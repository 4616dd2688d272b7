"""Echo server on asyncio streams: ``await reader.read()``, ``write``, ``await drain()``."""

from __future__ import annotations

import asyncio

from common import announce, parse_args, run


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(echo, host, port)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__)
    run(main(args.host, args.port), args.uvloop)
