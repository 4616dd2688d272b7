"""The dashboard as a newcomer reads it, in real headless Chromium against a real echostat
process with a TCP and a UDP listener: limits with their units that follow a reload, a phone
width without sideways scrolling, keyboard access, 24-hour times, chart values, and an
axe-core audit with no violation.

One browser and one echostat serve the whole module, and each width keeps one page."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from playwright.async_api import Browser, Locator, Page, expect
from tornado.ioloop import IOLoop

from tests.conftest import new_io_loop
from tests.e2e.browser import running_chromium
from tests.faults.support import loopback_settings, write_config
from tests.helpers import (
    REPO,
    EchostatProcess,
    close_all,
    echo_once,
    round_trip,
    udp_socket,
)

SEEN_WITHIN_MS = 3000
"""How soon a change must show on the page: a push interval (1 s) and two seconds' margin."""

AXE_JS = REPO / ".node" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core from npm, as .ci/run installs it: ``npm install --prefix .node axe-core@4``."""

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]

CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")
"""A time as the page shows it: 24-hour, never "04:41:55 PM"."""

LABEL = re.compile(
    r"^Connections at \d\d:\d\d:\d\d: active [\d,]+, new per second [\d.,]+, "
    r"closed per second ([\d.,]+|\u2013)$"
)
"""The connections chart's text alternative: its values at one point, 24-hour time."""

LIMITS = {
    "limits": {"max_connections_per_ip": 0, "idle_timeout_s": 300},
    "udp": {"max_datagrams_per_s": 100_000, "max_bytes_per_s": 100_000_000},
}


@pytest.fixture(scope="module")
def io_loop() -> Iterator[IOLoop]:
    """One loop for the module, so the browser and its pages outlive a single test."""
    yield from new_io_loop()


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    listeners = [
        {"name": "main", "host": "127.0.0.1", "port": 0},
        {"name": "udp", "host": "127.0.0.1", "port": 0, "protocol": "udp"},
    ]
    document = loopback_settings(**LIMITS)
    document["listeners"] = listeners
    return write_config(tmp_path_factory.mktemp("page") / "config.yaml", document)


@pytest.fixture(scope="module")
def echostat(config_path: Path) -> Iterator[EchostatProcess]:
    """echostat run from `config_path`, with a TCP listener ``main`` and a UDP one ``udp``."""
    process = EchostatProcess(["--config", str(config_path)])
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def browser(io_loop: IOLoop) -> Iterator[Browser]:
    """Headless Debian Chromium, once for the module."""
    yield from running_chromium(io_loop)


def open_page(io_loop: IOLoop, browser: Browser, echostat: EchostatProcess, width: int) -> Page:
    async def opened() -> Page:
        page = await browser.new_page(viewport={"width": width, "height": 844})
        await page.goto(f"http://127.0.0.1:{echostat.status_port}/")
        await expect(page.locator("#link-state")).to_have_attribute("data-state", "live")
        return page

    page: Page = io_loop.run_sync(opened)
    return page


@pytest.fixture(scope="module")
def desktop(io_loop: IOLoop, browser: Browser, echostat: EchostatProcess) -> Page:
    return open_page(io_loop, browser, echostat, 1280)


@pytest.fixture(scope="module")
def phone(io_loop: IOLoop, browser: Browser, echostat: EchostatProcess) -> Page:
    return open_page(io_loop, browser, echostat, 390)


def limit(page: Page, key: str) -> Locator:
    """The value the Limits panel shows for `key`, as config.yaml spells it."""
    term = page.locator("#limits dt", has_text=re.compile(f"^{re.escape(key)}$"))
    return term.locator("xpath=following-sibling::dd[1]")


async def busy(echostat: EchostatProcess) -> list[asyncio.StreamWriter]:
    """Two open TCP clients and one UDP round trip, so every table has rows."""
    clients = [(await echo_once(echostat.echo_port, b"hello"))[1] for _ in range(2)]
    with udp_socket() as client:
        assert await round_trip(client, ("127.0.0.1", echostat.ports["udp"]), b"hi") == b"hi"
    return clients


async def test_limits_show_their_units_and_follow_a_reload(
    desktop: Page, echostat: EchostatProcess, config_path: Path
) -> None:
    """Each limit shows the unit of what it bounds, 0 as off; after SIGHUP the open page
    shows the new values within a push interval, without a reload of the page."""
    await expect(limit(desktop, "udp.max_datagrams_per_s")).to_have_text("100,000 datagrams/s")
    await expect(limit(desktop, "udp.max_bytes_per_s")).to_have_text(
        "95.4 MiB/s (100,000,000 bytes/s)"
    )
    await expect(limit(desktop, "max_buffer_bytes")).to_have_text("256 KiB (262,144 bytes)")
    await expect(limit(desktop, "idle_timeout_s")).to_have_text("300 s")
    await expect(limit(desktop, "max_connections_per_ip")).to_have_text("off")

    document: dict[str, Any] = yaml.safe_load(config_path.read_text())
    document["limits"]["idle_timeout_s"] = 120
    document["limits"]["max_connections_per_ip"] = 50
    write_config(config_path, document)
    echostat.signal(signal.SIGHUP)
    assert "configuration reloaded" in echostat.wait_for_line("reload")
    await expect(limit(desktop, "idle_timeout_s")).to_have_text("120 s", timeout=SEEN_WITHIN_MS)
    await expect(limit(desktop, "max_connections_per_ip")).to_have_text("50 per IP")


async def test_phone_width_with_udp_does_not_scroll_sideways(
    phone: Page, echostat: EchostatProcess
) -> None:
    """At 390 px with a UDP listener the page fits its width; the connections table scrolls
    inside a focusable, labelled region that shows a shadow where columns lie hidden."""
    clients = await busy(echostat)
    try:
        await expect(phone.locator("#udp")).to_be_visible()
        await expect(phone.locator("#connections tr")).to_have_count(2, timeout=SEEN_WITHIN_MS)
        await expect(phone.locator("#peers tr")).to_have_count(1, timeout=SEEN_WITHIN_MS)
        widths = await phone.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 390
        region = phone.locator(".connections .table-wrap").first
        await expect(region).to_have_attribute("tabindex", "0")
        await expect(region).to_have_attribute("role", "region")
        await expect(region).to_have_attribute("aria-label", "open connections table")
        shadow = await region.evaluate("el => getComputedStyle(el).backgroundImage")
        assert "radial-gradient" in shadow
    finally:
        await close_all(clients)


async def test_keyboard_reaches_explanations_tables_and_charts(
    desktop: Page, echostat: EchostatProcess
) -> None:
    """Tab visits the explained figures (their tooltip shows on focus), the tables and the
    charts; a focused chart names its values at a 24-hour time, and arrows move along it."""
    clients = await busy(echostat)
    try:
        await expect(desktop.locator("#connections tr")).to_have_count(2, timeout=SEEN_WITHIN_MS)
        await desktop.locator("#version").focus()
        visited = ["version"]
        for _ in range(60):
            await desktop.keyboard.press("Tab")
            visited.append(
                await desktop.evaluate(
                    "(el => el.id || el.className || el.tagName)(document.activeElement)"
                )
            )
            if visited[-1] == "A":
                break
        assert "chart-connections" in visited and "chart-datagrams" in visited
        assert "table-wrap" in visited
        dt = desktop.locator("#path-quality dt[title]").first
        await dt.focus()
        await expect(desktop.locator("#tip")).to_be_visible()
        await expect(desktop.locator("#tip")).to_have_text(await dt.get_attribute("title") or "")

        chart = desktop.locator("#chart-connections")
        await chart.focus()
        now = re.compile(r"^Connections at \d\d:\d\d:\d\d: active 2, new per second [\d.]+, ")
        await expect(chart).to_have_attribute("aria-label", now, timeout=SEEN_WITHIN_MS)
        latest = await chart.get_attribute("aria-label")
        await desktop.keyboard.press("Home")
        await expect(chart).not_to_have_attribute("aria-label", latest or "")
        await expect(chart).to_have_attribute("aria-label", LABEL)
        await desktop.keyboard.press("End")
        await expect(chart).to_have_attribute("aria-label", now)
    finally:
        await close_all(clients)


async def test_charts_show_values_under_the_pointer_and_times_in_24_hours(
    desktop: Page, echostat: EchostatProcess
) -> None:
    """Hovering a chart shows the time and values at that point in its legend; times read
    24-hour; closed connections show as a closed-per-second series; count axes step in
    1, 2, 5 x 10^n, not in 1,024s."""
    clients = await busy(echostat)
    await expect(desktop.locator("#active-connections")).to_have_text("2", timeout=SEEN_WITHIN_MS)
    await close_all(clients)
    await expect(desktop.locator("#active-connections")).to_have_text("0", timeout=SEEN_WITHIN_MS)
    await expect(desktop.locator("#updated")).to_have_text(CLOCK)

    chart = desktop.locator("#chart-connections")
    await chart.focus()
    await desktop.keyboard.press("End")
    closed = []
    for _ in range(10):
        text = await chart.get_attribute("aria-label") or ""
        match = LABEL.match(text)
        assert match, text
        closed.append(0.0 if match[1] == "\N{EN DASH}" else float(match[1].replace(",", "")))
        await desktop.keyboard.press("ArrowLeft")
    assert max(closed) > 0, closed
    await desktop.locator("footer a").first.focus()

    legend_time = chart.locator(".u-legend .u-series").first.locator(".u-value")
    now = await legend_time.inner_text()
    assert CLOCK.match(now), now
    box = await chart.locator(".u-over").bounding_box()
    assert box is not None
    await desktop.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    await expect(legend_time).not_to_have_text(now)
    await expect(legend_time).to_have_text(CLOCK)
    await desktop.mouse.move(0, 0)

    steps = await desktop.evaluate("import('/static/series.js').then(m => m.countSteps)")
    assert {1, 2, 5, 10, 20, 50, 100, 1000, 2000, 5000} <= set(steps)
    assert not {1024, 2048, 3072} & set(steps)


async def test_sizes_and_times_read_in_the_readers_locale(
    browser: Browser, echostat: EchostatProcess
) -> None:
    """In a German browser, where 1.000 is a thousand, sizes and a watched path's times use
    the decimal comma the page's other numbers use: "95,4 MiB/s (100.000.000 bytes/s)",
    "0,020 ms", never a point that reads as a thousands separator."""
    context = await browser.new_context(locale="de-DE")
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{echostat.status_port}/")
        await expect(limit(page, "udp.max_bytes_per_s")).to_have_text(
            "95,4 MiB/s (100.000.000 bytes/s)"
        )
        point: dict[str, float] = {"at": 0, "sent": 10, "lost": 0, "failed": 0, "late_rounds": 0}
        point |= {"median_ms": 0.02, "min_ms": 0.015, "max_ms": 1.5}
        said = await page.evaluate(
            "p => import('/static/watch.js').then(m => m.describePoint(p))", point
        )
        assert "typically 0,020 ms, between 0,015 ms and 1,5 ms" in said, said
    finally:
        await context.close()


def test_health_answers_are_plain_text(echostat: EchostatProcess) -> None:
    """/healthz and /readyz answer ``ok`` as text/plain, not as an HTML page."""
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{echostat.status_port}{path}") as answer:
            assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert answer.read() == b"ok\n"


async def test_axe_core_finds_no_violation(desktop: Page, phone: Page) -> None:
    """axe-core (WCAG 2 A/AA and best practice) on the live page, at desktop width in the
    dark scheme and at phone width in the light one, reports no violation."""
    if not AXE_JS.exists():
        why = f"axe-core is not installed ({AXE_JS}; npm install --prefix .node axe-core@4)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and a required program is missing: {why}")
        pytest.skip(why)
    # Each width once and each scheme once: colours don't change with width, nor layout with
    # the scheme, and every audit costs seconds.
    found = {}
    audits: tuple[tuple[Page, Literal["dark", "light"]], ...] = (
        (desktop, "dark"),
        (phone, "light"),
    )
    for page, scheme in audits:
        # Run as the page's own script would be refused by its Content-Security-Policy.
        await page.evaluate(AXE_JS.read_text() + "\n;0")
        await page.emulate_media(color_scheme=scheme)
        result = await page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
        )
        width = page.viewport_size["width"] if page.viewport_size else 0
        found[f"{width} px {scheme}"] = {
            v["id"]: [node["target"] for node in v["nodes"]] for v in result["violations"]
        }
    assert found == {"1280 px dark": {}, "390 px light": {}}
