"""The page's "Watched paths" section in real headless Chromium."""

from __future__ import annotations

import re
import socket

from playwright.async_api import Browser, expect

from echostat.server.config import WatchConfig, WatchTargetConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.e2e.test_dashboard import (  # noqa: F401  (fixtures: one Chromium for the module)
    SEEN_WITHIN_MS,
    browser,
    chromium,
    io_loop,
    open_dashboard,
)


async def test_watched_paths_show_each_target_its_state_and_a_readable_chart(
    service: Service,
    browser: Browser,  # noqa: F811
) -> None:
    """Without targets the section is hidden; watching a live echo and a dead port, it shows
    both rows (up, down) without a reload, and a chart that the keyboard reaches and that
    says in words what a point means."""
    page = await open_dashboard(browser, service, errors=[])
    await expect(page.locator("#watch")).to_be_hidden()
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        targets = (
            WatchTargetConfig("echo", f"127.0.0.1:{service.echo_port('main')}", interval_s=0.5),
            WatchTargetConfig("nobody", f"127.0.0.1:{dead.getsockname()[1]}", interval_s=0.5),
        )
        watching = Service(loopback_config(watch=WatchConfig(targets)))
        await watching.start()
        errors: list[str] = []
        try:
            page = await open_dashboard(browser, watching, errors)
            await expect(page.locator("#watch")).to_be_visible(timeout=SEEN_WITHIN_MS)
            rows = page.locator("#watch-targets tr")
            await expect(rows).to_have_count(2)
            await expect(rows.nth(0).locator("td").nth(2)).to_have_text("up")
            await expect(rows.nth(1).locator("td").nth(2)).to_have_text("down")
            await expect(rows.nth(1).locator("td").nth(2)).to_have_attribute(
                "title",
                "cannot connect to 127.0.0.1:"
                + str(dead.getsockname()[1])
                + ": connection refused",
            )
            await expect(page.locator("#watch-summary")).to_have_text("1 of 2 up")
            chart = rows.nth(0).locator("svg.smoke")
            await expect(chart.locator("path.median")).to_have_count(1, timeout=SEEN_WITHIN_MS)
            await chart.focus()
            await page.keyboard.press("End")
            await expect(page.locator("#watch-detail")).to_contain_text(
                "round trips came back exactly"
            )
            await expect(chart).to_have_attribute("aria-label", re.compile(r"^echo, last hour: "))
        finally:
            await watching.stop()
    assert errors == []


async def test_a_name_not_probed_yet_is_waiting_not_unresolved(
    browser: Browser,  # noqa: F811
) -> None:
    """A named target whose first round is a day away shows as waiting, its address not
    known yet rather than "unresolved", which is what a name that failed to resolve shows;
    the summary counts it as waiting, not only as not up."""
    later = WatchTargetConfig("later", "localhost:9", interval_s=86400)
    watching = Service(loopback_config(watch=WatchConfig((later,))))
    await watching.start()
    errors: list[str] = []
    try:
        page = await open_dashboard(browser, watching, errors)
        cells = page.locator("#watch-targets tr").nth(0).locator("td")
        await expect(cells.nth(2)).to_have_text("waiting", timeout=SEEN_WITHIN_MS)
        await expect(cells.nth(1)).to_have_text("\u2013")  # an en dash, as for the rtt
        await expect(page.locator("#watch-summary")).to_have_text("0 of 1 up, 1 waiting")
    finally:
        await watching.stop()
    assert errors == []
