"""How this project runs Debian's Chromium headless under Playwright (no browser downloads)."""

from __future__ import annotations

from playwright.async_api import Browser, Playwright

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
