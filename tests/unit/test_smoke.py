import asyncio

from server.service import Service


async def test_service_echoes(service: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("main"))
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()
