"""Run inside a network namespace whose loopback drops packets: echo bulk data through echostat
and print, as one JSON object, what /api/connections, /api/stats and /metrics said.

Started by tests/e2e/test_lossy_path.py as ``ip netns exec NAME python -m tests.e2e.lossy_path``.
"""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import close_all, get_json, status_fetch, wait_until

CLIENTS = 4
BULK_BYTES = 8 << 20


async def bulk_client(port: int) -> asyncio.StreamWriter:
    """Echo `BULK_BYTES` on a new connection, verify them, and return it still open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = bytes(range(256)) * 256
    received = asyncio.ensure_future(reader.readexactly(BULK_BYTES))
    for _ in range(BULK_BYTES // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    assert await received == chunk * (BULK_BYTES // len(chunk))
    return writer


async def main() -> None:
    service = Service(loopback_config())
    await service.start()
    try:
        port = service.echo_port("main")
        writers = await asyncio.gather(*(bulk_client(port) for _ in range(CLIENTS)))
        rows = (await get_json(service.status_port, f"/api/connections?limit={CLIENTS}"))[
            "connections"
        ]
        await close_all(list(writers))
        await wait_until(lambda: service.registry.closed == CLIENTS, "every close")
        text = (await status_fetch(service, "/metrics")).body.decode()
        stats = await get_json(service.status_port)
    finally:
        await service.stop()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    print(
        json.dumps(
            {
                "row_retransmits": [row["tcp"]["retransmits"] for row in rows],
                "tcp": stats["tcp"],
                "metric_retransmits": samples["echostat_tcp_retransmitted_segments_total"],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
