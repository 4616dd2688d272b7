"""Builds the status `tornado.web.Application` from the registry and the config."""

from __future__ import annotations

from pathlib import Path

from tornado.web import Application

from echostat.server.config import Config
from echostat.server.registry import StatsSource
from echostat.web.access import LOGIN_PATH, AccessPolicy
from echostat.web.counters import StatusCounters
from echostat.web.feed import StatsFeed
from echostat.web.handlers import (
    ConnectionsHandler,
    EventsHandler,
    HealthHandler,
    HistoryHandler,
    LoginHandler,
    MetricsHandler,
    NotFoundHandler,
    PageHandler,
    PeersHandler,
    ReadyHandler,
    StatsHandler,
)
from echostat.web.metrics import metrics_registry

_HERE = Path(__file__).parent


def make_app(
    registry: StatsSource, config: Config, feed: StatsFeed, status_counters: StatusCounters
) -> Application:
    """The status application; it only reads `registry`, never changes the echo side.

    `status_counters` are the status server's own, shown beside the echo side's.
    """
    policy = AccessPolicy.from_config(config.status)
    state = {
        "registry": registry,
        "config": config,
        "feed": feed,
        "policy": policy,
        "metrics": metrics_registry(registry, status_counters),
        "status_counters": status_counters,
    }
    return Application(
        [
            (r"/", PageHandler, state),
            (LOGIN_PATH, LoginHandler, state),
            (r"/api/stats", StatsHandler, state),
            (r"/api/connections", ConnectionsHandler, state),
            (r"/api/peers", PeersHandler, state),
            (r"/api/history", HistoryHandler, state),
            (r"/api/events", EventsHandler, state),
            (r"/metrics", MetricsHandler, state),
            (r"/healthz", HealthHandler, state),
            (r"/readyz", ReadyHandler, state),
        ],
        template_path=str(_HERE / "templates"),
        static_path=str(_HERE / "static"),
        autoescape="xhtml_escape",
        compress_response=False,
        default_handler_class=NotFoundHandler,
        default_handler_args=state,
        echostat_state=state,
    )


def reconfigure_app(app: Application, config: Config) -> None:
    """Answer every later request under `config`: token, allowed hosts, open paths, limits.

    Every route holds the same state mapping and Tornado passes its current items to each
    new handler, so updating it in place is the whole change; requests in flight finish
    under the old settings."""
    state = app.settings["echostat_state"]
    state.update(config=config, policy=AccessPolicy.from_config(config.status))
