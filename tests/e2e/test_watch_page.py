"""The page's "Watched paths" section in real headless Chromium."""

from __future__ import annotations

import dataclasses
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, expect

from echostat.probe.watch_state import HISTORY_BIN_S
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
from tests.helpers import close_all, echo_once, get_json, wait_until


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


@asynccontextmanager
async def page_watching(
    browser: Browser,  # noqa: F811
    *targets: WatchTargetConfig,
) -> AsyncIterator[tuple[Service, Page]]:
    """A service watching `targets` and a dashboard on it; stopped after, and the page must
    have logged no error."""
    watching = Service(loopback_config(watch=WatchConfig(targets)))
    await watching.start()
    errors: list[str] = []
    try:
        yield watching, await open_dashboard(browser, watching, errors)
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
    async with page_watching(browser, later) as (_, page):
        cells = page.locator("#watch-targets tr").nth(0).locator("td")
        await expect(cells.nth(2)).to_have_text("waiting", timeout=SEEN_WITHIN_MS)
        await expect(cells.nth(1)).to_have_text("\u2013")  # an en dash, as for the rtt
        await expect(page.locator("#watch-summary")).to_have_text("0 of 1 up, 1 waiting")


async def test_a_target_moved_by_a_reload_loses_its_old_points_on_the_page(
    service: Service,
    browser: Browser,  # noqa: F811
) -> None:
    """A target named `peer` watching a dead port is moved by a reload, once its bin is over,
    to a live echo on the same address: the open page's chart then has only the points
    /api/watch has, none of the dead port's."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        peer = WatchTargetConfig("peer", f"127.0.0.1:{dead.getsockname()[1]}", interval_s=0.3)
        async with page_watching(browser, peer) as (watching, page):
            chart = page.locator("#watch-targets tr").nth(0).locator("svg.smoke")
            await expect(chart.locator("g")).to_have_count(1, timeout=SEEN_WITHIN_MS)
            *_, old = (await get_json(watching.status_port, "/api/watch"))["targets"][0]["history"]
            await wait_until(lambda: time.time() > old["at"] + HISTORY_BIN_S, "its bin over", 15)
            live = dataclasses.replace(peer, target=f"127.0.0.1:{service.echo_port('main')}")
            watching.reconfigure(dataclasses.replace(watching.config, watch=WatchConfig((live,))))

            async def probed_again() -> bool:
                (target,) = (await get_json(watching.status_port, "/api/watch"))["targets"]
                return bool(target["up"])

            await wait_until(probed_again, "a round against the live echo")
            down = chart.locator("g title", has_text="nothing could be sent")
            await expect(down).to_have_count(0, timeout=SEEN_WITHIN_MS)


async def updates(page: Page, count: int) -> None:
    """Wait until the page has shown `count` newer stats messages (its "updated" time moves)."""
    for _ in range(count):
        shown = await page.locator("#updated").text_content()
        await expect(page.locator("#updated")).not_to_have_text(shown or "", timeout=SEEN_WITHIN_MS)


UNREACHABLE_TIPS = """[...document.querySelectorAll('[title]')]
    .filter((el) => el.tabIndex < 0 && !el.closest('svg'))
    .map((el) => el.title)"""
"""Explanations a keyboard or a finger cannot reach: titled elements that take no focus."""


async def test_keyboard_focus_and_explanations_outlive_the_pages_updates(
    browser: Browser,  # noqa: F811
) -> None:
    """A focused watched-path chart and a focused connection row (its SYN detail shown) keep
    focus across the page's updates, and every explanation the page adds later (why a target
    is down, the config line's reloads) takes focus like the rest."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        nobody = WatchTargetConfig("nobody", f"127.0.0.1:{dead.getsockname()[1]}", interval_s=0.3)
        async with page_watching(browser, nobody) as (watching, page):
            _, client = await echo_once(watching.echo_port("main"), b"hello")
            try:
                chart = page.locator("#watch-targets tr").nth(0).locator("svg.smoke")
                await expect(chart.locator("g")).to_have_count(1, timeout=SEEN_WITHIN_MS)
                await chart.focus()
                await page.keyboard.press("End")
                await updates(page, 2)
                await expect(chart).to_be_focused()
                connection = page.locator("#connections tr").nth(0)
                await expect(connection).to_have_attribute(
                    "title", re.compile("^SYN as it arrived")
                )
                await connection.focus()
                await updates(page, 2)
                await expect(connection).to_be_focused()
                await expect(page.locator("#tip")).to_have_text(re.compile("^SYN as it arrived"))
                assert await page.evaluate(UNREACHABLE_TIPS) == []
            finally:
                await close_all([client])


DRAWN_POINTS = """() => {
  const seen = new WeakSet(document.querySelectorAll("svg.smoke g"));
  window.drawnPoints = 0;
  new MutationObserver(() => {
    for (const g of document.querySelectorAll("svg.smoke g")) {
      if (!seen.has(g)) window.drawnPoints += 1;
      seen.add(g);
    }
  }).observe(document.getElementById("watch-targets"), { childList: true, subtree: true });
}"""
"""Counts the chart points (one ``g`` each) the page draws anew from now on."""


async def test_an_hour_of_history_is_not_drawn_again_every_second(
    browser: Browser,  # noqa: F811
) -> None:
    """With an hour of points (350 bins) and no new round, the chart is drawn at most once
    per bin, not once per message: 64 targets would otherwise rebuild ~23,000 points a
    second and keep a core busy."""
    later = WatchTargetConfig("later", "127.0.0.1:9", interval_s=86400)
    async with page_watching(browser, later) as (watching, page):
        document = await get_json(watching.status_port, "/api/watch")
        now = time.time() // HISTORY_BIN_S * HISTORY_BIN_S
        for target in document["targets"]:
            target["history"] = [
                {"at": now - HISTORY_BIN_S * k, "median_ms": 0.05, "min_ms": 0.02}
                | {"max_ms": 0.3, "sent": 3, "lost": 0, "failed": 0, "late_rounds": 0}
                # 350 bins: the oldest stays within the hour while the test runs.
                for k in range(349, -1, -1)
            ]
        await page.route("**/api/watch", lambda route: route.fulfill(json=document))
        await page.reload()
        chart = page.locator("#watch-targets tr").nth(0).locator("svg.smoke")
        await expect(chart.locator("g")).to_have_count(350, timeout=SEEN_WITHIN_MS)
        await page.evaluate(DRAWN_POINTS)
        await updates(page, 4)
        # One bin boundary may fall within these four seconds: one drawing, not four.
        assert await page.evaluate("window.drawnPoints") <= 350


async def test_the_charts_hour_is_the_servers_whatever_the_browsers_clock(
    browser: Browser,  # noqa: F811
) -> None:
    """A browser whose clock runs two hours ahead of the server still draws the points of
    the server's last hour, as every other figure on the page reads the server's time."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        nobody = WatchTargetConfig("nobody", f"127.0.0.1:{dead.getsockname()[1]}", interval_s=0.3)
        watching = Service(loopback_config(watch=WatchConfig((nobody,))))
        await watching.start()
        try:
            page = await browser.new_page()
            await page.clock.set_system_time(time.time() + 2 * 3600)
            await page.goto(f"http://127.0.0.1:{watching.status_port}/")
            chart = page.locator("#watch-targets tr").nth(0).locator("svg.smoke")
            await expect(chart.locator("g")).to_have_count(1, timeout=SEEN_WITHIN_MS)
        finally:
            await watching.stop()
