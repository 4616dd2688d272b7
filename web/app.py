"""Builds the status `tornado.web.Application` from the registry and the config."""

from __future__ import annotations

from pathlib import Path

from tornado.web import Application

from echostat.server.config import Config
from echostat.server.registry import StatsSource
from echostat.web.access import LOGIN_PATH
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
    StaticHandler,
    StatsHandler,
    WatchHandler,
)
from echostat.web.metrics import metrics_registry
from echostat.web.request_log import RequestLog
from echostat.web.state import AppState, Settings
from echostat.web.watch import WatchSource
from echostat.web.watch_metrics import WatchCollector

_HERE = Path(__file__).parent


def make_state(
    registry: StatsSource,
    config: Config,
    feed: StatsFeed,
    status_counters: StatusCounters,
    watch: WatchSource | None = None,
) -> AppState:
    """The state of an application that only reads `registry`, never changes the echo side.

    `status_counters` are the status server's own, shown beside the echo side's; `watch` is
    the watcher's state, if this process watches."""
    metrics = metrics_registry(registry, status_counters)
    if watch is not None:
        metrics.register(WatchCollector(watch))
    return AppState(
        registry=registry,
        feed=feed,
        metrics=metrics,
        status_counters=status_counters,
        settings=Settings.from_config(config),
        watch=watch,
    )


def make_app(state: AppState) -> Application:
    """The status application; every handler gets `state`, and `state.reconfigure` changes
    what later requests are answered under."""
    handler_args = {"state": state}
    return Application(
        [
            (r"/", PageHandler, handler_args),
            (LOGIN_PATH, LoginHandler, handler_args),
            (r"/api/stats", StatsHandler, handler_args),
            (r"/api/connections", ConnectionsHandler, handler_args),
            (r"/api/peers", PeersHandler, handler_args),
            (r"/api/history", HistoryHandler, handler_args),
            (r"/api/events", EventsHandler, handler_args),
            (r"/api/watch", WatchHandler, handler_args),
            (r"/metrics", MetricsHandler, handler_args),
            (r"/healthz", HealthHandler, handler_args),
            (r"/readyz", ReadyHandler, handler_args),
        ],
        template_path=str(_HERE / "templates"),
        static_path=str(_HERE / "static"),
        static_handler_class=StaticHandler,
        static_handler_args=dict(handler_args),
        autoescape="xhtml_escape",
        compress_response=False,
        default_handler_class=NotFoundHandler,
        default_handler_args=handler_args,
        log_function=RequestLog(),
    )
