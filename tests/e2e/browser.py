"""How this project runs Debian's Chromium headless under Playwright (no browser downloads)."""

from __future__ import annotations

from collections.abc import Iterator

from playwright.async_api import Browser, Playwright, async_playwright
from tornado.ioloop import IOLoop

from tests.helpers import require_program

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Headless, runnable as root, and quiet: no calls home that a closed network would refuse."""


async def launch(playwright: Playwright) -> Browser:
    """Start Chromium; the caller closes it."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def running_chromium(io_loop: IOLoop) -> Iterator[Browser]:
    """Chromium on `io_loop` for a browser fixture, closed after use; skipped when missing,
    except under CI=true where it fails."""
    require_program(CHROMIUM, "chromium")
    playwright = io_loop.run_sync(async_playwright().start)
    chromium = io_loop.run_sync(lambda: launch(playwright))
    yield chromium
    io_loop.run_sync(chromium.close)
    io_loop.run_sync(playwright.stop)
