"""Which addresses the watcher lists, and when: a target shows from the start, waiting for
its first round; a name that stops resolving leaves no address behind it claiming to be up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tornado.httpclient import AsyncHTTPClient

from echostat.probe.watch import Watcher, WatchTarget
from echostat.probe.watch_round import Protocol
from echostat.server.config import WatchConfig, WatchTargetConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import get_json, wait_until

Resolve = Callable[[str, int, Protocol], Awaitable[list[str]]]


def watch_fleet(
    service: Service, resolve: Resolve, max_targets: int, interval_s: float = 0.2
) -> tuple[Watcher, WatchTarget]:
    """A started watcher of the name ``fleet.test`` on `service`'s echo port, one round trip a
    round, its addresses given by `resolve`; and the target it watches."""
    port = service.echo_port("main")
    fleet = WatchTarget.parse("fleet", f"fleet.test:{port}", interval_s, 1, 64, 1.0)
    watcher = Watcher([fleet], max_targets, resolve=resolve)
    watcher.start()
    return watcher, fleet


async def test_a_name_that_stops_resolving_leaves_no_address_up(service: Service) -> None:
    """A name whose two addresses were up, then resolves to nothing: both rows go down with
    the resolver's error and keep their history; when it resolves to one again, only that
    one stays."""
    answers: dict[str, list[str] | None] = {"fleet.test": ["127.0.0.1", "::1"]}

    async def resolve(host: str, port: int, protocol: Protocol) -> list[str]:
        found = answers[host]
        if found is None:
            raise OSError("no such name")
        return found

    watcher, _ = watch_fleet(service, resolve, max_targets=2)
    try:
        await wait_until(
            lambda: [t.address for t in watcher.targets() if t.last_round] == ["127.0.0.1", "::1"],
            "both addresses probed",
        )
        answers["fleet.test"] = None
        await wait_until(lambda: not any(t.up for t in watcher.targets()), "both addresses down")
        rows = {target.address: target for target in watcher.targets()}
        assert list(rows) == ["127.0.0.1", "::1"]
        for target in rows.values():
            assert target.last_round is not None
            assert target.last_round.error == "cannot resolve fleet.test: no such name"
        assert rows["127.0.0.1"].verified_total >= 1  # the same row, its counts kept
        answers["fleet.test"] = ["127.0.0.1"]
        await wait_until(
            lambda: [(t.address, t.up) for t in watcher.targets()] == [("127.0.0.1", True)],
            "the address that resolves again, up",
        )
    finally:
        await watcher.stop()


async def test_a_target_is_listed_before_its_first_round() -> None:
    """Targets whose first round is a day away are in /api/watch at once, waiting (`up`
    false, `last_round` null; a name's address not known yet), and have no /metrics series
    that would call them down."""
    watch = WatchConfig(
        tuple(
            WatchTargetConfig(name, target, interval_s=86400)
            for name, target in (("ip", "127.0.0.1:9"), ("named", "localhost:9"))
        )
    )
    service = Service(loopback_config(watch=watch))
    await service.start()
    try:
        targets = (await get_json(service.status_port, "/api/watch"))["targets"]
        assert [(t["name"], t["address"], t["up"], t["last_round"]) for t in targets] == [
            ("ip", "127.0.0.1", False, None),
            ("named", None, False, None),
        ]
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{service.status_port}/metrics")
        assert "echostat_watch_up{" not in response.body.decode()
    finally:
        await service.stop()


async def test_the_cap_warning_is_not_silenced_by_a_resolve_warning(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A name that failed to resolve, then resolves to more addresses than max_targets: both
    warnings are logged, each rate-limited on its own."""
    answers: list[list[str] | None] = [None]

    async def resolve(host: str, port: int, protocol: Protocol) -> list[str]:
        if answers[-1] is None:
            raise OSError("no such name")
        return answers[-1]

    watcher, _ = watch_fleet(service, resolve, max_targets=1)
    try:
        await wait_until(lambda: "cannot resolve" in caplog.text, "the resolve warning")
        answers.append(["127.0.0.1", "::1"])
        await wait_until(lambda: "watch.max_targets" in caplog.text, "the cap warning")
    finally:
        await watcher.stop()


async def test_over_the_cap_the_same_addresses_stay_watched_whatever_order_dns_gives(
    service: Service,
) -> None:
    """A name resolving to four addresses in a new order each round (as DNS round-robin
    does), with room for two: the two watched keep their rows and history from round to
    round instead of trading places."""
    pool = [f"127.0.0.{n}" for n in range(1, 5)]
    rounds = 0

    async def resolve(host: str, port: int, protocol: Protocol) -> list[str]:
        nonlocal rounds
        rounds += 1
        return pool[rounds % 4 :] + pool[: rounds % 4]

    watcher, _ = watch_fleet(service, resolve, max_targets=2, interval_s=0.1)
    try:
        await wait_until(
            lambda: len([t for t in watcher.targets() if t.last_round]) == 2, "two watched"
        )
        first = watcher.targets()
        first_at = [t.last_round.at for t in first if t.last_round]
        seen = rounds
        await wait_until(lambda: rounds >= seen + 5, "five more rounds")
        await wait_until(
            lambda: all(
                t.last_round and t.last_round.at > at for t, at in zip(first, first_at, strict=True)
            ),
            "the first two probed again",
        )
        assert [id(t) for t in watcher.targets()] == [id(t) for t in first]
    finally:
        await watcher.stop()


async def test_targets_waiting_beyond_the_cap_are_not_listed() -> None:
    """Three targets a day apart and room for two: two are listed waiting, not a third row
    that its first round would take away again."""
    targets = [WatchTarget.parse(f"t{n}", f"127.0.0.{n}:7", 86400, 1, 64, 1.0) for n in (1, 2, 3)]
    watcher = Watcher(targets, max_targets=2)
    watcher.start()
    try:
        assert [(t.name, t.last_round) for t in watcher.targets()] == [("t1", None), ("t2", None)]
    finally:
        await watcher.stop()


async def test_a_resolver_that_hangs_holds_a_round_no_longer_than_its_timeout(
    service: Service,
) -> None:
    """A name whose resolver never answers: the round gives up after the target's timeout_s
    and its row says so, instead of waiting for ever with nothing shown."""

    async def resolve(host: str, port: int, protocol: Protocol) -> list[str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    watcher, _ = watch_fleet(service, resolve, max_targets=2)
    try:
        await wait_until(lambda: watcher.targets()[0].last_round is not None, "a round ended")
        (target,) = watcher.targets()
        assert target.last_round is not None and not target.up
        assert target.last_round.error == "cannot resolve fleet.test: no answer within 1 s"
    finally:
        await watcher.stop()
