"""Config loading, validation and overrides, without sockets: values and exact error messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from echostat.server.config import Config, ConfigError, LimitsConfig, ListenerConfig
from echostat.server.config_loading import check_config, load_config, reread_config_text
from tests.helpers import BAD_CONFIGS, REPO


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in `tmp_path`, so messages name ``config.yaml``; return that file's path."""
    monkeypatch.chdir(tmp_path)
    return Path("config.yaml")


def _load(path: Path, text: str, env: dict[str, str] | None = None, *overrides: str) -> Config:
    path.write_text(text)
    return load_config(path, env or {}, overrides)


def test_repository_config_documents_the_defaults() -> None:
    """The repo's config.yaml spells out exactly the defaults of the schema, and adds beside
    the default listener a second one, on 7008, that sends path reports."""
    shipped = load_config(REPO / "config.yaml", {})
    main, report = shipped.listeners
    assert dataclasses.replace(shipped, listeners=(main,)) == Config()
    assert report == ListenerConfig(name="report", port=7008, report=True)


def test_empty_file_gives_the_defaults(write_config: Path) -> None:
    """A file with no keys is a valid config with every default."""
    assert _load(write_config, "") == Config()


def test_file_values_are_typed(write_config: Path) -> None:
    """Listeners become a tuple of dataclasses; an integer is accepted for a float key."""
    config = _load(
        write_config,
        "listeners:\n  - {name: a, host: '::1', port: 0}\n  - {name: b}\nshutdown_grace_s: 3\n",
    )
    assert config.listeners == (
        ListenerConfig(name="a", host="::1", port=0),
        ListenerConfig(name="b"),
    )
    assert config.shutdown_grace_s == 3.0 and isinstance(config.shutdown_grace_s, float)


@pytest.mark.parametrize(("text", "flags", "message"), BAD_CONFIGS)
def test_bad_config_is_one_line_naming_the_problem(
    write_config: Path, text: str | None, flags: Sequence[str], message: str
) -> None:
    """Each bad config raises ConfigError whose one-line message names key or file and fault."""
    if text is not None:
        write_config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(write_config, {}, flags[1::2])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            "status:\n  port: 80.5\n",
            (),
            "config.yaml: status.port: expected an integer 0..65535, got 80.5",
        ),
        (
            "shutdown_grace_s: -1\n",
            (),
            "config.yaml: shutdown_grace_s: expected a number 0..3600, got -1",
        ),
        (
            "shutdown_grace_s: .nan\n",
            (),
            "config.yaml: shutdown_grace_s: expected a number 0..3600, got nan",
        ),
        (
            "limits:\n  max_buffer_bytes: 10\n",
            (),
            "config.yaml: limits.max_buffer_bytes: expected an integer 1024..67108864, got 10",
        ),
        (
            "event_loop: trio\n",
            (),
            "config.yaml: event_loop: expected one of asyncio | uvloop, got 'trio'",
        ),
        (
            "status:\n  host: ''\n",
            (),
            "config.yaml: status.host: expected a non-empty string, got ''",
        ),
        ("status: 7070\n", (), "config.yaml: status: expected a mapping, got 7070"),
        ("- port: 1\n", (), "config.yaml: expected a mapping of keys at the top level"),
        (
            "listeners:\n  - {name: a, port: 1}\n  - {name: a, port: 2}\n",
            (),
            "config.yaml: listeners[1].name: duplicate listener name 'a'",
        ),
        (
            "",
            ("status.port=[1",),
            (
                "--set status.port: invalid value '[1': expected ',' or ']', but got '<stream end>'"
                " at line 1, column 3"
            ),
        ),
        (
            "",
            ("listeners.2.port=0",),
            "--set listeners.2.port: cannot set 'listeners.2.port': 'listeners' has no item '2'",
        ),
        (
            "status: 7070\n",
            ("status.port=1",),
            "--set status.port: cannot set 'status.port': 'status' is 7070",
        ),
        ("", ("=1",), "--set '=1': expected KEY=VALUE, e.g. status.port=8080"),
        (
            "listeners:\n  - {protocol: sctp}\n",
            (),
            "config.yaml: listeners[0].protocol: expected one of tcp | udp, got 'sctp'",
        ),
        (
            "listeners:\n  - {protocol: udp, proxy_protocol: true, proxy_trusted: [10.0.0.0/8]}\n",
            (),
            "config.yaml: listeners[0].proxy_protocol: not available with protocol: udp;"
            " remove it, or use a separate tcp listener",
        ),
        (
            "udp:\n  max_peers: 0\n",
            (),
            "config.yaml: udp.max_peers: expected an integer 1..10000000, got 0",
        ),
    ],
)
def test_invalid_value_message(
    write_config: Path, text: str, overrides: Sequence[str], message: str
) -> None:
    """Wrong numbers, choices, shapes and overrides each get a message naming the key."""
    with pytest.raises(ConfigError) as error:
        _load(write_config, text, None, *overrides)
    assert str(error.value) == message


def test_environment_variable_overrides_the_file(write_config: Path) -> None:
    """ECHOSTAT_STATUS__PORT sets status.port; variables without the prefix are ignored."""
    config = _load(
        write_config,
        "status:\n  port: 7070\n",
        {"ECHOSTAT_STATUS__PORT": "8080", "ECHOSTAT_LIMITS__MAX_BUFFER_BYTES": "2048", "PORT": "1"},
    )
    assert config.status.port == 8080
    assert config.limits == LimitsConfig(max_buffer_bytes=2048)


def test_set_overrides_the_environment(write_config: Path) -> None:
    """--set wins over an environment variable for the same key."""
    config = _load(write_config, "", {"ECHOSTAT_STATUS__PORT": "8080"}, "status.port=9090")
    assert config.status.port == 9090


def test_set_addresses_listeners_by_index(write_config: Path) -> None:
    """listeners.N.KEY changes listener N, and N one past the end appends a listener."""
    config = _load(
        write_config,
        "listeners:\n  - name: main\n",
        None,
        "listeners.0.port=0",
        "listeners.1.name=extra",
        "listeners.1.port=7008",
    )
    assert config.listeners == (
        ListenerConfig(name="main", port=0),
        ListenerConfig(name="extra", port=7008),
    )


def test_set_listener_port_works_without_a_listeners_section(write_config: Path) -> None:
    """--set listeners.0.port=0 on a file that leaves listeners out changes the default one."""
    config = _load(write_config, "log_level: debug\n", {"ECHOSTAT_LISTENERS__0__PORT": "0"})
    assert config.listeners == (ListenerConfig(port=0),)


def test_environment_variables_for_listener_10_come_after_listener_2(
    write_config: Path,
) -> None:
    """Variables for 12 listeners make 12: list indexes are taken in number order (as text,
    ``__10__`` came before ``__2__`` and failed, "'listeners' has no item '10'")."""
    env = {f"ECHOSTAT_LISTENERS__{i}__NAME": f"l{i}" for i in range(12)}
    env |= {f"ECHOSTAT_LISTENERS__{i}__PORT": str(7100 + i) for i in range(12)}
    config = _load(write_config, "", env)
    assert [(listener.name, listener.port) for listener in config.listeners] == [
        (f"l{i}", 7100 + i) for i in range(12)
    ]


def test_set_adds_a_listener_beside_the_default_one(write_config: Path) -> None:
    """With no listeners section (or no file at all), listeners.1.* adds a second listener to
    the default one, as it would to a file's one listener, instead of "no item '1'"."""
    extra = ("listeners.1.name=udp", "listeners.1.protocol=udp", "listeners.1.port=7008")
    expected = (ListenerConfig(), ListenerConfig(name="udp", protocol="udp", port=7008))
    assert _load(write_config, "log_level: debug\n", None, *extra).listeners == expected
    assert load_config(None, None, extra).listeners == expected


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            {"ECHOSTAT_STATUS__PORT": "70000"},
            [],
            "environment variable ECHOSTAT_STATUS__PORT: status.port:"
            " expected an integer 0..65535, got 70000",
        ),
        (
            {},
            ["listeners.0.port=x"],
            "--set listeners.0.port: listeners[0].port: expected an integer 0..65535, got 'x'",
        ),
    ],
)
def test_a_bad_override_names_the_variable_or_flag_not_the_file(
    write_config: Path, env: dict[str, str], overrides: list[str], message: str
) -> None:
    """The value came from the environment or --set, so that is where the user must look."""
    write_config.write_text("")
    with pytest.raises(ConfigError) as error:
        load_config(write_config, env, overrides)
    assert str(error.value) == message


def test_unquoted_any_address_from_a_variable_or_flag_is_the_address(write_config: Path) -> None:
    """``::``, every interface as README says, set by a variable or --set is that address,
    though YAML alone would read it as a mapping; a value in braces is still a mapping."""
    config = _load(
        write_config,
        "",
        {"ECHOSTAT_LISTENERS__0__HOST": "::", "ECHOSTAT_STATUS__TOKEN": "t" * 16},
        "status.host=::",
        "limits={idle_timeout_s: 5}",
    )
    assert config.listeners[0].host == "::" and config.status.host == "::"
    assert config.limits.idle_timeout_s == 5


def test_unquoted_any_address_in_the_file_is_refused_with_the_fix(write_config: Path) -> None:
    """``host: ::`` is not valid YAML: the message says to quote it."""
    with pytest.raises(ConfigError) as error:
        _load(write_config, "listeners:\n  - host: ::\n    port: 0\n")
    assert str(error.value) == (
        "config.yaml: invalid YAML: mapping values are not allowed here at line 2, column 12;"
        ' write the address :: in quotes: host: "::"'
    )


@pytest.mark.parametrize(
    ("env", "overrides", "token"),
    [
        ({"ECHOSTAT_STATUS__TOKEN": "!s3cret-pass-phrase"}, (), "!s3cret-pass-phrase"),
        ({}, ("status.token=*s3cret-pass-phrase",), "*s3cret-pass-phrase"),
        ({"ECHOSTAT_STATUS__TOKEN": "12345678901234567890123"}, (), "12345678901234567890123"),
        ({}, ('status.token="quoted-pass-phrase"',), "quoted-pass-phrase"),
    ],
    ids=["variable-yaml-tag", "set-yaml-alias", "variable-a-number", "set-quoted"],
)
def test_a_token_from_a_variable_or_flag_is_taken_as_written(
    write_config: Path, env: dict[str, str], overrides: Sequence[str], token: str
) -> None:
    """A token that YAML would read as a tag, an alias or a number is that text: it is a
    secret, so no error message would be allowed to print it back."""
    assert _load(write_config, "", env, *overrides).status.token == token


def test_a_yaml_merge_key_shares_settings_that_the_mapping_own_keys_override(
    write_config: Path,
) -> None:
    """``<<: *anchor`` (YAML's merge key) gives a listener another's settings, its own keys
    winning; it is no duplicate key, while a key written twice in one mapping still is."""
    text = (
        "listeners:\n"
        "  - &echo {name: main, host: '::1', port: 0, backlog: 64}\n"
        "  - <<: *echo\n"
        "    name: report\n"
        "    report: true\n"
    )
    main, report = _load(write_config, text).listeners
    assert report == dataclasses.replace(main, name="report", report=True)
    with pytest.raises(ConfigError, match="duplicate key 'name' at line 6"):
        _load(write_config, text + "    name: again\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "limits:\n  idle_timeout_s: 1e3\n",
            "config.yaml: limits.idle_timeout_s: expected a number 0..604800, got '1e3'"
            " (YAML reads it as text; write 1000)",
        ),
        (
            "status:\n  header_timeout_s: 25E-2\n",
            "config.yaml: status.header_timeout_s: expected a number 0.1..3600, got '25E-2'"
            " (YAML reads it as text; write 0.25)",
        ),
    ],
)
def test_a_number_yaml_reads_as_text_is_refused_saying_how_to_write_it(
    write_config: Path, text: str, message: str
) -> None:
    """An exponent without a dot (``1e3``) is text to YAML 1.1: the message says how to write
    the number instead of only that a number was expected."""
    with pytest.raises(ConfigError) as error:
        _load(write_config, text)
    assert str(error.value) == message


def test_a_config_file_gone_at_reload_is_named_without_the_start_flag(tmp_path: Path) -> None:
    """At a reload the file the process started from is gone: the message says so, and does
    not ask for --config, which a running process can't be given."""
    with pytest.raises(ConfigError) as error:
        reread_config_text(tmp_path / "config.yaml")
    assert str(error.value) == (
        f"{tmp_path / 'config.yaml'}: file not found (moved or deleted since echostat started)"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("listeners.1.name=b", "listeners.1.port=7007"),
            "--set listeners.1.port: listeners[1].port: 127.0.0.1:7007/tcp is listeners[0]'s"
            " address too; give each its own port (or 0 for any free one)",
        ),
        (
            ("listeners.0.host=::1", "status.host=::1", "status.port=7007"),
            "--set status.port: status.port: [::1]:7007/tcp is listeners[0]'s address too;"
            " give each its own port (or 0 for any free one)",
        ),
    ],
    ids=["two-listeners", "listener-and-status"],
)
def test_two_sockets_of_one_config_on_one_address_are_refused_naming_both(
    write_config: Path, overrides: Sequence[str], message: str
) -> None:
    """The second bind would fail as if another process held the port; --check-config names
    both keys instead. TCP and UDP on one port, or one port on two hosts, are two addresses."""
    with pytest.raises(ConfigError) as error:
        _load(write_config, "", {}, *overrides)
    assert str(error.value) == message
    both = ("listeners.1.name=b", "listeners.1.port=7007", "listeners.1.protocol=udp")
    assert _load(write_config, "", {}, *both).listeners[1].port == 7007
    hosts = ("listeners.1.name=b", "listeners.1.port=7007", "listeners.1.host=::1")
    assert _load(write_config, "", {}, *hosts).listeners[1].port == 7007


def test_a_host_in_brackets_is_refused_saying_to_write_it_without() -> None:
    """``[::1]`` is how an address goes in a URL or a watch target, not in ``host``: the check
    says to drop the brackets instead of that the name can't be resolved."""
    for value in ('"[::1]"', "[::1]"):
        with pytest.raises(ConfigError) as error:
            check_config(None, {}, [f"listeners.0.host={value}"])
        assert str(error.value) == (
            "--set listeners.0.host: listeners[0].host: '[::1]': write the address without"
            " brackets, ::1"
        )
