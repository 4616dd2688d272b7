"""The watcher: probes configured peers continuously, one round per target per interval.

A scheduler around the probe's engine (`probe.watch_round`), not a client of its own. Each
configured target is resolved afresh every round, and each address it resolves to is one
watched target, up to `max_targets` in all (the N² guard of a fleet that watches itself).
Rounds start at a random moment of each interval so that a fleet never probes in lockstep,
and a round during which the event loop was late by more than `LATE_MS` is marked as such
and kept out of the latency figures (`probe.loop_lag`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from echostat.probe.address import parse_host_port
from echostat.probe.loop_lag import LoopLag
from echostat.probe.watch_round import Exchange, Protocol, exchange
from echostat.probe.watch_state import TargetState

log = logging.getLogger(__name__)

LATE_MS = 5.0
"""A round during which the loop was later than this is marked and its times left out."""

WARN_EVERY_S = 300.0
"""A repeated warning (a name that does not resolve, the target cap) at most this often."""


@dataclass(frozen=True)
class WatchTarget:
    """One configured target, parsed: `target` as typed, its host (a name or an address)
    and port, and how its rounds go."""

    name: str
    target: str
    protocol: Protocol
    host: str
    port: int
    interval_s: float
    count: int
    size: int
    timeout_s: float

    @classmethod
    def parse(
        cls, name: str, target: str, interval_s: float, count: int, size: int, timeout_s: float
    ) -> WatchTarget:
        """`target` is ``HOST:PORT`` or ``udp://HOST:PORT``; ValueError says what is wrong."""
        protocol: Protocol = "udp" if target.startswith("udp://") else "tcp"
        host, port = parse_host_port(target.removeprefix("udp://"))
        return cls(name, target, protocol, host, port, interval_s, count, size, timeout_s)


Resolver = Callable[[str, int, Protocol], Awaitable[list[str]]]
"""The addresses a host stands for, in the resolver's order; OSError if none."""


async def resolve_addresses(host: str, port: int, protocol: Protocol) -> list[str]:
    """Every address `host` resolves to now (the system resolver: DNS, /etc/hosts)."""
    if (address := _address_of(host)) is not None:
        return [address]
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Watcher:
    """Runs the rounds of `targets` on the running loop from `start` until `stop`;
    `reconfigure` swaps the targets in place. `targets()` is what the status side reads."""

    def __init__(
        self,
        targets: Sequence[WatchTarget],
        max_targets: int,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        self._targets = {target.name: target for target in targets}
        self.max_targets = max_targets
        self._resolve = resolve
        self._late_s = LATE_MS / 1e3
        self._lag = LoopLag()
        self._states: dict[tuple[str, str | None], TargetState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, int] = {}
        """Addresses each target probes in its current round: the cap counts them all."""
        self._warned_at: dict[tuple[str, str], float] = {}
        """When each target last logged each warning: every kind is rate-limited on its own."""
        self._running = False

    def targets(self) -> list[TargetState]:
        """Every watched address, by name and address."""
        return [self._states[key] for key in sorted(self._states, key=_order)]

    def start(self) -> None:
        self._running = True
        for target in self._targets.values():
            self._start(target)

    def reconfigure(self, targets: Sequence[WatchTarget], max_targets: int) -> None:
        """Watch `targets` from now on: a target whose settings changed starts afresh, one
        removed stops and its addresses leave `targets()`; the others go on undisturbed."""
        new = {target.name: target for target in targets}
        for name, old in self._targets.items():
            if new.get(name) != old:
                self._forget(name)
        started = [target for name, target in new.items() if self._targets.get(name) != target]
        self._targets = new
        self.max_targets = max_targets
        if self._running:
            for target in started:
                self._start(target)

    async def stop(self) -> None:
        """Cancel every round and wait for them to end; safe to call twice."""
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _start(self, target: WatchTarget) -> None:
        # Listed at once, waiting for its first round, which may be up to an interval away;
        # within the cap, which would drop the row at that round.
        address = _address_of(target.host)
        if len(self._states) < self.max_targets:
            self._states.setdefault(
                (target.name, address),
                TargetState(target.name, target.target, address, target.protocol),
            )
        self._tasks[target.name] = asyncio.create_task(self._watch(target))

    def _forget(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self._held.pop(name, None)
        for key in [key for key in self._states if key[0] == name]:
            del self._states[key]

    async def _watch(self, target: WatchTarget) -> None:
        """One round per interval, each at a random moment of its interval, for as long as it
        is the target's task: the loop ends even if a cancellation is lost (Python 3.11's
        `asyncio.wait_for` returns its result instead when both come in one turn)."""
        loop = asyncio.get_running_loop()
        interval_s = target.interval_s
        slot = loop.time()
        this = asyncio.current_task()
        while self._running and self._tasks.get(target.name) is this:
            await asyncio.sleep(max(0.0, slot + random.uniform(0, interval_s) - loop.time()))
            try:
                await self._round(target)
            except Exception:  # the catch-all at the edge: one bad round must not end the watch
                log.error("watch %s: round failed", target.name, exc_info=True)
            # A round that overran its interval gives up the slots it missed, never bunches up.
            slot = max(slot + interval_s, loop.time() - interval_s)

    async def _round(self, target: WatchTarget) -> None:
        """Resolve, then probe every address (within the cap) at once."""
        try:
            addresses: list[str] = list(
                await asyncio.wait_for(
                    self._resolve(target.host, target.port, target.protocol), target.timeout_s
                )
            )
        except TimeoutError:  # a resolver that hangs holds no round longer
            self._not_resolved(target, f"no answer within {target.timeout_s:g} s")
            return
        except OSError as exc:
            self._not_resolved(target, str(exc))
            return
        held = sum(count for name, count in self._held.items() if name != target.name)
        room = max(0, self.max_targets - held)
        if len(addresses) > room:
            self._warn(
                target.name,
                "watch %s: %s resolves to %d addresses; probing %d (watch.max_targets)",
                target.target,
                len(addresses),
                room,
            )
            # The addresses watched already first: DNS round-robin reorders the answers every
            # round, and the cut must not trade one address's row and history for another's.
            watched = {key[1] for key in self._states if key[0] == target.name}
            addresses = sorted(addresses, key=lambda address: address not in watched)[:room]
        self._keep(target.name, addresses)
        await asyncio.gather(*(self._probe(target, address) for address in addresses))

    def _not_resolved(self, target: WatchTarget, why: str) -> None:
        """`target`'s name did not resolve, for `why`: the addresses it had are down with it,
        their rows and history kept through a resolver's hiccup; a name that never resolved
        has one row, its address None."""
        self._warn(target.name, "watch %s: cannot resolve %s: %s", target.host, why)
        had: list[str | None] = [key[1] for key in self._states if key[0] == target.name and key[1]]
        found = _unresolved(f"cannot resolve {target.host}: {why}")
        at = time.time()
        for address in had or [None]:
            self._record(target, address, at, found, 0)

    def _keep(self, name: str, addresses: list[str]) -> None:
        """`name` now stands for `addresses`: the cap counts them, and its other rows leave."""
        self._held[name] = len(addresses)
        for key in [key for key in self._states if key[0] == name]:
            if key[1] not in addresses:
                del self._states[key]  # a pod that went away, the cap, or no longer unresolved

    async def _probe(self, target: WatchTarget, address: str) -> None:
        window = self._lag.open()
        at = time.time()
        try:
            found = await exchange(
                target.protocol, address, target.port, target.count, target.size, target.timeout_s
            )
        finally:
            lag_s = self._lag.close(window)
        self._record(target, address, at, found, lag_s)

    def _record(
        self, target: WatchTarget, address: str | None, at: float, found: Exchange, lag_s: float
    ) -> None:
        if target.name not in self._targets or self._targets[target.name] != target:
            return  # reconfigured while the round ran
        key = (target.name, address)
        if address is not None:
            self._states.pop((target.name, None), None)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = TargetState(
                target.name, target.target, address, target.protocol
            )
        late = lag_s > self._late_s
        if late:
            log.debug(
                "watch %s %s: loop late by %.1f ms, round marked", key[0], key[1], lag_s * 1e3
            )
        state.record(at, found, lag_s, late)

    def _warn(self, name: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at.get((name, message), -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned_at[name, message] = now
            log.warning(message, name, *args)


def _address_of(host: str) -> str | None:
    """`host` as an IP address when it is one; None for a name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _unresolved(error: str) -> Exchange:
    return Exchange(0, 0, 0, 0, None, (), error)


def _order(key: tuple[str, str | None]) -> tuple[str, str]:
    return key[0], key[1] or ""
