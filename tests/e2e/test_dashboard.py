"""The dashboard in real headless Chromium: live numbers, lost server, recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect
from tornado.ioloop import IOLoop

from echostat.server.config import Config, StatusConfig
from echostat.server.reload import Reloader
from echostat.service import Service
from tests.conftest import loopback_config, new_io_loop, udp_config
from tests.e2e.browser import running_chromium
from tests.helpers import (
    close_all,
    echo_once,
    round_trip,
    udp_socket,
    wait_until,
)

SEEN_WITHIN_MS = 3000
"""How soon a change must show on the page without a reload (the issue's 3 s)."""

RTT_TEXT = re.compile(r"^\d+(\.\d)? (µs|ms)$")
"""An RTT as the page shows it: ``31 µs``, ``1.5 ms``."""

RECOVERY_MS = 10_000
"""Generous bound for noticing a lost server and reconnecting (retries run every second)."""


@pytest.fixture(scope="module")
def io_loop() -> Iterator[IOLoop]:
    """One loop for the module, so one Chromium serves every test."""
    yield from new_io_loop()


@pytest.fixture(scope="module")
def chromium(io_loop: IOLoop) -> Iterator[Browser]:
    """Headless Debian Chromium; skipped when missing, except under CI=true where it fails."""
    yield from running_chromium(io_loop)


@pytest.fixture
def browser(io_loop: IOLoop, chromium: Browser) -> Iterator[Browser]:
    """The module's Chromium; the pages a test opens are closed after it."""
    yield chromium
    for context in chromium.contexts:
        io_loop.run_sync(context.close)


async def open_dashboard(browser: Browser, service: Service, errors: list[str]) -> Page:
    """A page on the dashboard, once its push channel is live; its console errors go to `errors`."""
    page = await browser.new_page()
    page.on("console", lambda message: _record_error(errors, message))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{service.status_port}/")
    await expect(page.locator("#link-state")).to_have_attribute(
        "data-state", "live", timeout=RECOVERY_MS
    )
    return page


def _record_error(errors: list[str], message: ConsoleMessage) -> None:
    if message.type == "error":
        errors.append(message.text)


async def open_clients(service: Service, count: int) -> list[asyncio.StreamWriter]:
    port = service.echo_port("main")
    return [(await echo_once(port, b"hello"))[1] for _ in range(count)]


async def test_page_counts_clients_as_they_come_and_go(service: Service, browser: Browser) -> None:
    """3 clients show as 3 within 3 s without a reload, then 0 once closed; no console errors."""
    errors: list[str] = []
    page = await open_dashboard(browser, service, errors)
    active = page.locator("#active-connections")

    clients = await open_clients(service, 3)
    await expect(active).to_have_text("3", timeout=SEEN_WITHIN_MS)
    await expect(page.locator("#connections tr")).to_have_count(3, timeout=SEEN_WITHIN_MS)
    await expect(page.locator(".plot canvas")).to_have_count(3)
    await close_all(clients)
    await expect(active).to_have_text("0", timeout=SEEN_WITHIN_MS)

    assert errors == []


async def test_a_connections_row_stays_one_element_while_its_figures_change(
    service: Service, browser: Browser
) -> None:
    """A connection's row is updated in place from one render to the next, not replaced (a
    pointer's tooltip on it closed each second with the element under it), and still follows
    the connection: its bytes grow, a second connection adds a row, a closed one goes."""
    errors: list[str] = []
    page = await open_dashboard(browser, service, errors)
    reader, writer = await echo_once(service.echo_port("main"), b"hello")
    rows = page.locator("#connections tr")
    received = rows.first.locator("td").nth(4)
    await expect(received).to_have_text("5 B", timeout=SEEN_WITHIN_MS)
    await rows.first.evaluate("tr => { window.markedRow = tr; }")
    writer.write(bytes(100_000))
    await reader.readexactly(100_000)
    await expect(received).to_have_text(re.compile(r"^97\.7 KiB$"), timeout=SEEN_WITHIN_MS)
    assert await rows.first.evaluate("tr => tr === window.markedRow")
    _, second = await echo_once(service.echo_port("main"), b"hi")
    await expect(rows).to_have_count(2, timeout=SEEN_WITHIN_MS)
    assert await rows.first.evaluate("tr => tr === window.markedRow")
    await close_all([writer])
    await expect(rows).to_have_count(1, timeout=SEEN_WITHIN_MS)
    await expect(rows.first.locator("td").nth(4)).to_have_text("2 B")
    await close_all([second])
    assert errors == []


async def test_page_shows_the_config_age_and_counts_a_reload(
    service: Service, browser: Browser
) -> None:
    """The top bar shows how old the config in force is; a reload shows in its tooltip."""
    errors: list[str] = []
    page = await open_dashboard(browser, service, errors)
    await expect(page.locator("#config-age")).to_have_text(re.compile(r"^\d+s$"))
    line = page.locator("#config-line")
    await expect(line).to_have_attribute("title", re.compile("reloads: 0, refused: 0$"))
    counters = service.registry.config_state
    assert Reloader(service.config, lambda: service.config, service.reconfigure, counters).reload()
    await expect(line).to_have_attribute(
        "title", re.compile("reloads: 1, refused: 0$"), timeout=SEEN_WITHIN_MS
    )
    assert errors == []


async def test_table_lists_100_rows_then_says_how_many_more(
    service: Service, browser: Browser
) -> None:
    """With 103 clients the table shows 100 rows and "and 3 more", not 103 rows."""
    page = await open_dashboard(browser, service, errors=[])
    clients = await asyncio.gather(
        *(echo_once(service.echo_port("main"), b"x" * n) for n in range(1, 104))
    )
    await expect(page.locator("#connections-note")).to_have_text(
        "and 3 more (103 open)", timeout=SEEN_WITHIN_MS
    )
    await expect(page.locator("#connections tr")).to_have_count(100)
    busiest = page.locator("#connections tr").first.locator("td")
    await expect(busiest.nth(1)).to_have_text("direct")
    await expect(busiest.nth(4)).to_have_text("103 B")
    await close_all([writer for _, writer in clients])


async def test_page_shows_disconnected_then_recovers_after_restart(
    service: Service, browser: Browser, config: Config
) -> None:
    """Stopping the server shows "disconnected"; a new server on the port brings it back live."""
    page = await open_dashboard(browser, service, errors=[])
    state = page.locator("#link-state")

    await service.stop()
    await expect(state).to_have_attribute("data-state", "disconnected", timeout=RECOVERY_MS)
    await expect(state).to_have_text("disconnected")
    await expect(page.locator("#banner")).to_be_visible()

    status = StatusConfig(host="127.0.0.1", port=service.status_port)
    restarted = Service(dataclasses.replace(config, status=status))
    await restarted.start()
    try:
        await expect(state).to_have_attribute("data-state", "live", timeout=RECOVERY_MS)
        await expect(page.locator("#banner")).to_be_hidden()
        clients = await open_clients(restarted, 2)
        await expect(page.locator("#active-connections")).to_have_text("2", timeout=SEEN_WITHIN_MS)
        await expect(page.locator("#accepted")).to_have_text("2", timeout=SEEN_WITHIN_MS)
        await close_all(clients)
    finally:
        await restarted.stop()


STATUS_CAP = 4


async def test_page_says_so_when_the_status_side_is_full(browser: Browser, config: Config) -> None:
    """At status.max_connections, an open dashboard whose push channel can't get a slot says it
    was refused and why, a new page load shows the reason at once, and both recover."""
    # Short timeouts end whatever the browser holds besides its push stream (idle keep-alive
    # connections, a preconnected socket) within a second; the fillers are push streams too.
    status = StatusConfig(
        host="127.0.0.1",
        port=0,
        max_connections=STATUS_CAP,
        idle_timeout_s=1.0,
        header_timeout_s=1.0,
    )
    full = Service(dataclasses.replace(config, status=status))
    await full.start()
    assert full.status is not None
    counters = full.status.counters
    fillers: list[asyncio.StreamWriter] = []
    try:
        page = await open_dashboard(browser, full, errors=[])
        await wait_until(lambda: counters.active == 1, "only the push stream to be left")
        await page.evaluate("source.close()")
        await wait_until(lambda: counters.active == 0, "the push stream to close")
        for _ in range(STATUS_CAP):
            _, filler = await asyncio.open_connection("127.0.0.1", full.status_port)
            filler.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            fillers.append(filler)
        await wait_until(lambda: counters.active == STATUS_CAP, "every slot to be taken")

        await page.evaluate("connect()")
        reason = page.locator("#banner-reason")
        await expect(reason).to_contain_text("status.max_connections", timeout=RECOVERY_MS)
        await expect(page.locator("#banner")).to_be_visible()
        newcomer = await browser.new_page()
        await newcomer.goto(f"http://127.0.0.1:{full.status_port}/", timeout=RECOVERY_MS)
        await expect(newcomer.locator("body")).to_contain_text("status.max_connections is 4")

        await close_all(fillers)
        fillers = []
        state = page.locator("#link-state")
        await expect(state).to_have_attribute("data-state", "live", timeout=RECOVERY_MS)
        await expect(reason).to_be_hidden()
    finally:
        await close_all(fillers)
        await full.stop()


async def test_page_says_so_when_its_stream_is_refused(browser: Browser, config: Config) -> None:
    """With status.max_streams taken, a new page says its push channel was refused and why,
    and goes live once a stream is free."""
    status = StatusConfig(host="127.0.0.1", port=0, max_streams=1)
    full = Service(dataclasses.replace(config, status=status))
    await full.start()
    assert full.status is not None
    counters = full.status.counters
    _, filler = await asyncio.open_connection("127.0.0.1", full.status_port)
    try:
        filler.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_until(lambda: counters.streams == 1, "the filler's stream to start")
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{full.status_port}/")
        reason = page.locator("#banner-reason")
        await expect(reason).to_contain_text("status.max_streams is 1", timeout=RECOVERY_MS)

        await close_all([filler])
        state = page.locator("#link-state")
        await expect(state).to_have_attribute("data-state", "live", timeout=RECOVERY_MS)
        await expect(reason).to_be_hidden()
    finally:
        await close_all([filler])
        await full.stop()


async def test_a_new_token_ends_an_open_page_and_it_says_to_sign_in_again(
    browser: Browser, config: Config
) -> None:
    """A page signed in with the token stops getting figures once a reload sets a new one
    (the old session ends, open push stream included), and says the server refused it for
    its token and to sign in again, rather than only that the server is gone."""
    status = StatusConfig(host="127.0.0.1", port=0, token="the-first-token-of-this-test")
    guarded = Service(dataclasses.replace(config, status=status))
    await guarded.start()
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{guarded.status_port}/")
        await page.fill("input[name=token]", "the-first-token-of-this-test")
        await page.keyboard.press("Enter")
        state = page.locator("#link-state")
        await expect(state).to_have_attribute("data-state", "live", timeout=RECOVERY_MS)
        changed = dataclasses.replace(status, token="the-second-token-of-this-test")
        guarded.reconfigure(dataclasses.replace(guarded.config, status=changed))
        await expect(state).to_have_attribute("data-state", "disconnected", timeout=RECOVERY_MS)
        reason = page.locator("#banner-reason")
        await expect(reason).to_contain_text("wrong token", timeout=RECOVERY_MS)
        await expect(reason).to_contain_text("sign in again")
    finally:
        await guarded.stop()


async def test_udp_listeners_show_datagrams_and_peers_below_the_tcp_view(
    service: Service, browser: Browser
) -> None:
    """A page of a TCP-only server shows no UDP part; with UDP listeners, 3 datagrams from one
    source show in the listener table and as one peer row, without a reload."""
    page = await open_dashboard(browser, service, errors=[])
    await expect(page.locator("#udp")).to_be_hidden()
    udp = Service(udp_config())
    await udp.start()
    errors: list[str] = []
    try:
        page = await open_dashboard(browser, udp, errors)
        await expect(page.locator("#udp")).to_be_visible()
        with udp_socket() as client:
            for data in (b"one", b"two", b"three"):
                assert await round_trip(client, ("127.0.0.1", udp.echo_port("udp")), data) == data
            peer = f"127.0.0.1:{client.getsockname()[1]}"
        cells = page.locator("#peers tr").first.locator("td")
        await expect(cells.nth(0)).to_have_text(peer, timeout=SEEN_WITHIN_MS)
        await expect(cells.nth(4)).to_have_text("3")
        listener = page.locator("#udp-listeners tr").first.locator("td")
        await expect(listener.nth(2)).to_have_text("3")
        await expect(page.locator("#udp-peers")).to_have_text("1")
        await expect(page.locator(".plot canvas")).to_have_count(4)
    finally:
        await udp.stop()
    assert errors == []


async def test_path_quality_panel_and_columns_show_the_kernels_rtt(
    service: Service, browser: Browser
) -> None:
    """With clients open, the panel shows RTT percentiles and retransmits, each row its RTT
    and retransmits, and the figures carry plain-words explanations."""
    errors: list[str] = []
    page = await open_dashboard(browser, service, errors)
    clients = await open_clients(service, 3)
    panel = page.locator("#path-quality")
    await expect(panel).to_be_visible(timeout=SEEN_WITHIN_MS)
    for key in ("p50", "p90", "p99", "max"):
        await expect(page.locator(f"#rtt-{key}")).to_have_text(RTT_TEXT, timeout=SEEN_WITHIN_MS)
    await expect(page.locator("#rtt-measured")).to_have_text("3", timeout=SEEN_WITHIN_MS)
    await expect(page.locator("#retransmits-total")).to_have_text(re.compile(r"^\d+$"))
    await expect(page.locator("#retransmits-rate")).to_have_text(re.compile(r"/s$"))
    await expect(page.locator("#path-legend")).to_contain_text("round-trip time")
    await expect(panel.locator("dt[title]")).to_have_count(7)
    headers = page.locator(".connections thead th.tcp")
    await expect(headers).to_have_text(["RTT", "retrans."])
    for index in range(2):
        await expect(headers.nth(index)).to_have_attribute("title", re.compile(r"\w+ \w+"))
    cells = page.locator("#connections tr").first.locator("td.tcp")
    await expect(cells.first).to_have_text(RTT_TEXT, timeout=SEEN_WITHIN_MS)
    await expect(cells.nth(1)).to_have_text(re.compile(r"^\d+$"))
    await expect(page.locator("#chart-retransmits canvas")).to_have_count(1)
    await close_all(clients)
    assert errors == []


@pytest.mark.parametrize("config", [loopback_config(path_quality=False)], ids=["off"])
async def test_without_path_quality_the_page_hides_it(service: Service, browser: Browser) -> None:
    """path_quality: false hides the panel and the RTT and retransmit columns."""
    page = await open_dashboard(browser, service, errors=[])
    clients = await open_clients(service, 1)
    await expect(page.locator("#connections tr")).to_have_count(1, timeout=SEEN_WITHIN_MS)
    await expect(page.locator("#path-quality")).to_be_hidden()
    await expect(page.locator(".connections th.tcp").first).to_be_hidden()
    await expect(page.locator("#connections td.tcp").first).to_be_hidden()
    await close_all(clients)
