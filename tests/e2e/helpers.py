"""Small async helpers shared by the end-to-end tests of the status side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from server.service import Service


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Return as soon as `condition()` holds; fail naming `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval of the condition, not a timing assumption


async def fetch(service: Service, path: str) -> bytes:
    """The body of ``GET path`` on the status port; raises for any status but 200."""
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{service.status_port}{path}")
    return response.body


async def fetch_json(service: Service, path: str) -> Any:
    return json.loads(await fetch(service, path))


async def echo_once(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the echo `port`, check one echo of `payload`, return the open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    return reader, writer


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers))
