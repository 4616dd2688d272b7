"""The page's SYN columns in real headless Chromium: hops and MSS per row, clamps marked."""

from __future__ import annotations

import asyncio
import re
import socket

from playwright.async_api import Browser, expect

from echostat.service import Service
from tests.e2e.test_dashboard import SEEN_WITHIN_MS, browser, chromium, io_loop, open_dashboard
from tests.helpers import close_all, echo_once

__all__ = ["browser", "chromium", "io_loop"]  # the page tests' fixtures: one Chromium a module


async def test_rows_show_hops_and_mss_and_mark_a_clamped_one(
    service: Service, browser: Browser
) -> None:
    """A plain loopback client: 0 hops, the loopback MSS, unmarked. A client whose SYN says
    MSS 1000: its MSS in red, the row marked, the detail saying why."""
    errors: list[str] = []
    page = await open_dashboard(browser, service, errors)
    port = service.echo_port("main")
    _, plain = await echo_once(port, b"x" * 5000)  # the busiest: the first row
    clamped = socket.socket()
    clamped.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
    clamped.setblocking(False)
    await asyncio.get_running_loop().sock_connect(clamped, ("127.0.0.1", port))
    rows = page.locator("#connections tr")
    await expect(rows).to_have_count(2, timeout=SEEN_WITHIN_MS)
    headers = page.locator(".connections thead th.syn")
    await expect(headers).to_have_text(["hops", "MSS"])
    first, second = rows.nth(0), rows.nth(1)
    await expect(first.locator("td.syn-hops")).to_have_text("0")
    await expect(first.locator("td.syn-mss")).to_have_text(re.compile(r"^65\D?495$"))
    await expect(first).not_to_have_class(re.compile("syn-degraded"))
    await expect(first).to_have_attribute("title", re.compile(r"TTL 64 \(0 hops\)"))
    await expect(second.locator("td.syn-mss")).to_have_text(re.compile(r"^1\D?000$"))
    await expect(second.locator("td.syn-mss")).to_have_class(re.compile(r"\bbad\b"))
    await expect(second).to_have_class(re.compile("syn-degraded"))
    await expect(second).to_have_attribute("title", re.compile("MSS below the server's"))
    clamped.close()
    await close_all([plain])
    assert errors == []
