"""Regenerate docs/dashboard.png and docs/dashboard-phone.png: the dashboard under some load.

Run from the repository root: ``.venv/bin/python -m docs.screenshot``. It starts echostat on
loopback (ports chosen by the system), runs a bounded, changing load of echo clients for
about a minute so the charts have a story to tell, then photographs the page in Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from echostat.server.config import Config, ListenerConfig, StatusConfig
from echostat.service import Service
from tests.e2e.browser import launch

DOCS = Path(__file__).parent
MAX_CLIENTS = 48
CHUNK_BYTES = (256, 96 * 1024)
SHOTS = (("dashboard.png", 1440, 900, 1), ("dashboard-phone.png", 390, 844, 2))
"""File, viewport width and height, device pixel ratio."""


async def client(port: int, lifetime_s: float, chunk_bytes: int, pause_s: float) -> None:
    """Echo `chunk_bytes` every `pause_s` for `lifetime_s`, checking every echo."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = random.randbytes(chunk_bytes)
    deadline = asyncio.get_running_loop().time() + lifetime_s
    try:
        while asyncio.get_running_loop().time() < deadline:
            writer.write(payload)
            if await reader.readexactly(chunk_bytes) != payload:
                raise RuntimeError("echo mismatch")
            await asyncio.sleep(pause_s)  # pacing the load, not synchronisation
    finally:
        writer.close()


def target_clients(second: int) -> int:
    """A load that climbs, dips and climbs again, like a load balancer under test."""
    shape = [4, 10, 18, 26, 34, 40, 44, 46, 30, 16, 12, 20, 32, 42, 46, 38]
    return min(MAX_CLIENTS, shape[(second // 4) % len(shape)])


async def run_load(service: Service, seconds: int) -> set[asyncio.Task[None]]:
    """Keep roughly `target_clients` connections busy for `seconds`; return those still open."""
    ports = [listener.port for listener in service.registry.listeners]
    tasks: set[asyncio.Task[None]] = set()
    rng = random.Random(7)
    for second in range(seconds):
        for _ in range(max(0, target_clients(second) - len(tasks))):
            task = asyncio.create_task(
                client(
                    ports[0] if rng.random() < 0.8 else ports[-1],
                    lifetime_s=rng.uniform(3, 25),
                    chunk_bytes=rng.choice([CHUNK_BYTES[0], 4096, 16384, CHUNK_BYTES[1]]),
                    pause_s=rng.uniform(0.05, 0.5),
                )
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(1)  # one step of the load shape
    return tasks


async def main(seconds: int) -> None:
    config = Config(
        listeners=(
            ListenerConfig(name="main", host="127.0.0.1", port=0),
            ListenerConfig(name="canary", host="127.0.0.1", port=0),
        ),
        status=StatusConfig(host="127.0.0.1", port=0),
        shutdown_grace_s=1.0,
    )
    service = Service(config)
    await service.start()
    try:
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            try:
                await photograph(
                    browser, f"http://127.0.0.1:{service.status_port}/", service, seconds
                )
            finally:
                await browser.close()
    finally:
        await service.stop()


async def photograph(browser: Browser, url: str, service: Service, seconds: int) -> None:
    """Open the page at laptop and phone width, run the load, then take both screenshots."""
    shots = []
    for name, width, height, scale in SHOTS:
        page = await browser.new_page(
            viewport={"width": width, "height": height},
            device_scale_factor=scale,
            color_scheme="dark",
        )
        await page.goto(url)
        shots.append((name, page))
    still_open = await run_load(service, seconds)
    for name, page in shots:
        await page.screenshot(path=str(DOCS / name), full_page=True)
    for task in still_open:
        task.cancel()
    await asyncio.gather(*still_open, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="load duration (default 60)")
    asyncio.run(main(parser.parse_args().seconds))
