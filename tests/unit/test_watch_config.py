"""The watch section: defaults, fractional intervals, targets checked with the key named, and
every watch key reloadable in place."""

from __future__ import annotations

import pytest

from echostat.server.config import ConfigError
from echostat.server.config_validation import validate_config
from echostat.server.reload import RESTART_KEYS, changed_keys


def test_a_target_gets_the_documented_defaults_and_an_empty_list_is_allowed() -> None:
    watch = validate_config("watch: {targets: [{name: a, target: 'b:7'}]}", "c.yaml").config.watch
    (target,) = watch.targets
    assert (target.interval_s, target.count, target.size, target.timeout_s) == (10, 5, 64, 2)
    assert watch.max_targets == 64
    assert validate_config("watch: {targets: []}", "c.yaml").config.watch.targets == ()


def test_fractional_intervals_down_to_a_tenth_of_a_second() -> None:
    text = "watch: {targets: [{name: a, target: 'b:7', interval_s: %s}]}"
    assert validate_config(text % "0.5", "c.yaml").config.watch.targets[0].interval_s == 0.5
    with pytest.raises(ConfigError, match=r"watch\.targets\[0\]\.interval_s: expected a number"):
        validate_config(text % "0.05", "c.yaml")


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("[{name: a, target: 'b'}]", r"targets\[0\]\.target: expected HOST:PORT or udp://"),
        ("[{name: a, target: 'b:0'}]", r"targets\[0\]\.target: .*port 1\.\.65535"),
        ("[{name: a, target: '::1:7'}]", r"targets\[0\]\.target: .*IPv6 in brackets"),
        ("[{name: a, target: '[abc]:7'}]", r"targets\[0\]\.target: 'abc' in brackets is not"),
        # The resolver refuses it with a UnicodeError at every round: an error with a traceback
        ("[{name: a, target: 'a..b:7'}]", r"targets\[0\]\.target: 'a\.\.b' is not a host name"),
        (
            "[{name: a, target: 'udp://%s.b:7'}]" % ("x" * 64),
            r"targets\[0\]\.target: 'x+\.b' is not",
        ),
        ("[{name: a, target: 'udp://b:7', size: 20}]", r"targets\[0\]\.size: expected at least 28"),
        ("[{name: a, target: 'b:7'}, {name: a, target: 'c:7'}]", r"targets\[1\]\.name: duplicate"),
        ("[{target: 'b:7'}]", r"targets\[0\]\.name: missing"),
    ],
)
def test_a_bad_target_is_refused_naming_its_key(targets: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^c\.yaml: watch\.{message}"):
        validate_config(f"watch: {{targets: {targets}}}", "c.yaml")


def test_every_watch_key_changes_in_place_on_reload() -> None:
    old = validate_config("watch: {targets: [{name: a, target: 'b:7'}]}", "c.yaml").config
    new = validate_config(
        "watch: {targets: [{name: a, target: 'udp://b:7', interval_s: 1},"
        " {name: c, target: 'd:7'}], max_targets: 3}",
        "c.yaml",
    ).config
    changed = changed_keys(old, new)
    assert changed == ["watch.targets", "watch.max_targets"]
    assert not [key for key in changed if RESTART_KEYS.match(key)]


def test_a_bracketed_ipv6_target_is_taken_as_written_from_set_and_the_environment() -> None:
    """``[::1]:7007``, the documented IPv6 form, is not valid YAML on its own (a list, then a
    colon): `--set` and ``ECHOSTAT_*`` take it as the string it can only mean."""
    env = {"ECHOSTAT_WATCH__TARGETS__0__NAME": "a", "ECHOSTAT_WATCH__TARGETS__0__TARGET": "[::1]:7"}
    assert validate_config("", "c.yaml", env).config.watch.targets[0].target == "[::1]:7"
    sets = ("watch.targets.0.name=a", "watch.targets.0.target=[2001:db8::1]:7007")
    config = validate_config("", "c.yaml", overrides=sets).config
    assert config.watch.targets[0].target == "[2001:db8::1]:7007"
    with pytest.raises(ConfigError, match=r"^--set status\.port: invalid value '\[1'"):
        validate_config("", "c.yaml", overrides=["status.port=[1"])
