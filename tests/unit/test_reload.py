"""The reload decision: which keys changed, which need a restart, nothing half-applied."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from echostat.server.config import (
    AccessLogConfig,
    Config,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    StatusConfig,
    UDPConfig,
)
from echostat.server.reload import RESTART_KEYS, ReloadCounters, Reloader, changed_keys
from tests.helpers import REPO

BASE = Config()


def test_changed_keys_name_nested_paths_and_list_items() -> None:
    """Keys are named as error messages name them; equal configs have none."""
    new = dataclasses.replace(
        BASE,
        limits=LimitsConfig(max_connections_per_ip=1),
        listeners=(ListenerConfig(port=7008),),
        status=StatusConfig(token="a" * 20),
    )
    assert changed_keys(BASE, BASE) == []
    assert changed_keys(BASE, new) == [
        "listeners[0].port",
        "status.token",
        "limits.max_connections_per_ip",
    ]


def test_a_listener_added_is_one_change_of_the_list() -> None:
    new = dataclasses.replace(BASE, listeners=(ListenerConfig(), ListenerConfig(name="more")))
    assert changed_keys(BASE, new) == ["listeners"]


def reloader(new: Config | Exception) -> tuple[Reloader, list[Config], ReloadCounters]:
    applied: list[Config] = []
    counters = ReloadCounters(loaded_at=0.0)

    def load() -> Config:
        if isinstance(new, Exception):
            raise new
        return new

    return Reloader(BASE, load, applied.append, counters), applied, counters


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"workers": 2}, "workers"),
        ({"listeners": (ListenerConfig(host="::1"),)}, "listeners[0].host"),
        ({"listeners": (ListenerConfig(backlog=10),)}, "listeners[0].backlog"),
        ({"status": StatusConfig(port=8080)}, "status.port"),
        ({"event_loop": "asyncio"}, "event_loop"),
        ({"listeners": (ListenerConfig(protocol="udp"),)}, "listeners[0].protocol"),
        ({"udp": UDPConfig(max_peers=5)}, "udp.max_peers"),
        ({"listeners": (ListenerConfig(report=True),)}, "listeners[0].report"),
    ],
)
def test_restart_keys_are_refused_and_nothing_is_applied(
    changes: dict[str, object], key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A change that needs a restart refuses the whole new config, even its other keys."""
    new = dataclasses.replace(BASE, limits=LimitsConfig(max_connections=5), **changes)  # type: ignore[arg-type]
    reload, applied, counters = reloader(new)
    with caplog.at_level(logging.INFO):
        assert not reload.reload()
    assert applied == [] and reload.current is BASE
    assert (counters.reloads, counters.failed) == (0, 1)
    (record,) = caplog.records
    assert record.getMessage().startswith(f"reload refused: {key}: changing this needs a restart")


def test_in_place_keys_are_applied_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Limits, status access, TLS, log level and shutdown timing change without a restart."""
    new = dataclasses.replace(
        BASE,
        limits=LimitsConfig(max_connections_per_ip=1),
        status=StatusConfig(allowed_hosts=("echo.example",)),
        log_level="debug",
        shutdown_grace_s=3.0,
    )
    reload, applied, counters = reloader(new)
    with caplog.at_level(logging.INFO):
        assert reload.reload()
    assert applied == [new] and reload.current is new
    assert (counters.reloads, counters.failed) == (1, 0) and counters.loaded_at > 0
    (record,) = caplog.records
    assert record.getMessage() == (
        "configuration reloaded: changed status.allowed_hosts,"
        " limits.max_connections_per_ip, shutdown_grace_s, log_level"
    )


def test_invalid_config_is_refused_with_its_message(caplog: pytest.LogCaptureFixture) -> None:
    reload, applied, counters = reloader(ConfigError("config.yaml: limits.x: unknown key"))
    assert not reload.reload()
    assert applied == [] and counters.failed == 1
    (record,) = caplog.records
    assert record.getMessage() == (
        "reload refused: config.yaml: limits.x: unknown key;"
        " the running configuration stays in force"
    )


def test_a_step_of_apply_that_fails_first_refuses_the_reload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An access log path that can't be opened, found by apply before it changes anything,
    is refused like an invalid config; the old config stays current."""
    new = dataclasses.replace(BASE, access_log=AccessLogConfig(enabled=True, path="/nowhere"))
    counters = ReloadCounters(loaded_at=0.0)

    def apply(config: Config) -> None:
        raise ConfigError("access_log.path: cannot open /nowhere: Permission denied")

    reload = Reloader(BASE, lambda: new, apply, counters)
    assert not reload.reload()
    assert reload.current is BASE and (counters.reloads, counters.failed) == (0, 1)
    assert "access_log.path: cannot open /nowhere" in caplog.text


def test_config_yaml_names_every_key_a_reload_refuses() -> None:
    """The shipped config.yaml's opening comment, what an operator reads before a SIGHUP,
    names each key that needs a restart, as the reload's refusal does."""
    opening = " ".join(
        line.lstrip("# ") for line in (REPO / "config.yaml").read_text().splitlines()[:10]
    )
    named = ("workers", "event_loop", "udp", "status address")
    listener_keys = ("name", "protocol", "host", "port", "backlog", "report")
    assert all(word in opening for word in (*named, *listener_keys)), opening
    refused = ["workers", "event_loop", "udp.max_peers", "status.port", "status.host"]
    refused += [f"listeners[0].{key}" for key in listener_keys]
    assert all(RESTART_KEYS.match(key) for key in refused)
