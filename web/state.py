"""The status application's state: what every handler reads, and the settings a reload swaps."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from echostat.server.config import Config
from echostat.server.registry import StatsSource
from echostat.web.access import AccessPolicy
from echostat.web.counters import StatusCounters
from echostat.web.feed import StatsFeed
from echostat.web.watch import WatchSource


@dataclass(frozen=True)
class Settings:
    """The config in force and the access rules derived from it; a reload makes a new one."""

    config: Config
    policy: AccessPolicy

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(config, AccessPolicy.from_config(config.status))


@dataclass
class AppState:
    """One per application, shared by every handler: the stats source, the push feed, the
    metrics, the status side's own counters, and the `settings` in force.

    A handler takes `settings` once, when its request starts, so a request in flight
    finishes under the settings it began with while `reconfigure` serves later ones."""

    registry: StatsSource
    feed: StatsFeed
    metrics: CollectorRegistry
    status_counters: StatusCounters
    settings: Settings
    watch: WatchSource | None = None
    """The watcher's state, when this status side runs one (`/api/watch`)."""

    def reconfigure(self, config: Config) -> None:
        """Answer every later request under `config`: token, allowed hosts, open paths,
        the limits shown."""
        self.settings = Settings.from_config(config)
