"""docs/api.md and the README against the running code: examples, endpoints, error texts."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

from tornado.routing import PathMatches

from echostat.server.config import StatusConfig
from echostat.server.registry import REJECT_REASONS, SERVER_CLOSE_REASONS, Registry
from echostat.server.reload import KEPT
from echostat.server.udp_stats import DROP_REASONS, RECEIVE_BUFFER
from echostat.service import Service
from echostat.web.app import make_app
from echostat.web.counters import STATUS_CLOSE_REASONS, STATUS_REJECT_REASONS
from echostat.web.guard import refusal
from echostat.web.status import StatusSide
from tests.conftest import loopback_config
from tests.e2e.api_examples import (
    API_MD,
    differences,
    documented_examples,
    key_shape,
    real_documents,
)
from tests.e2e.conftest import StartEchostat
from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    REPO,
    recv_to_eof,
    run_cli,
    status_fetch,
)

README = REPO / "README.md"


async def test_api_md_examples_have_exactly_the_keys_of_real_documents() -> None:
    """Each JSON example of docs/api.md has the keys a real run answers with, nested; if
    not, ``python -m tests.e2e.api_examples`` rewrites them from a run."""
    documented = documented_examples(API_MD.read_text())
    real = await real_documents()
    found = {path: differences(key_shape(documented[path]), key_shape(real[path])) for path in real}
    assert found == {path: [] for path in real}, "run: python -m tests.e2e.api_examples"


def _routes() -> set[str]:
    """Every path the status application serves (static files, favicon and robots.txt
    aside)."""
    state = StatusSide(Registry(), loopback_config()).state
    rules = make_app(state).wildcard_router.rules
    matchers = [rule.matcher for rule in rules if isinstance(rule.matcher, PathMatches)]
    patterns = {matcher.regex.pattern.rstrip("$") for matcher in matchers}
    return {pattern for pattern in patterns if "(" not in pattern}


def _section(text: str, heading: str) -> str:
    """The section of Markdown `text` under `heading`, up to the next ``## `` heading."""
    section = text[("\n" + text).index(f"\n{heading}\n") :]
    return section[: section.find("\n## ", 1)]


def _table_paths(text: str, heading: str) -> set[str]:
    """The paths of the endpoint table in the section `heading` of `text`."""
    return set(re.findall(r"^\| `(?:GET )?(/[^ `?]*)", _section(text, heading), re.MULTILINE))


def test_readme_and_api_md_list_every_endpoint() -> None:
    """The endpoint tables of the README and docs/api.md list exactly the paths served."""
    routes = _routes()
    assert _table_paths(README.read_text(), "## HTTP API") == routes
    assert _table_paths(API_MD.read_text(), "# Status API") == routes


async def test_api_md_error_examples_are_what_the_server_answers(service: Service) -> None:
    """The error documents docs/api.md quotes are the server's own, status code and body."""
    text = " ".join(API_MD.read_text().split())
    for path, method, code in (
        ("/api/connections?limit=0", "GET", 400),
        ("/api/nothing", "GET", 404),
        ("/api/stats", "POST", 405),
    ):
        response = await status_fetch(
            service, path, method=method, body=b"" if method == "POST" else None
        )
        assert response.code == code, path
        body = response.body.decode()
        assert f"`{body}` with `{code}`" in text, (path, body)
    capped = refusal(256).split(b"\r\n\r\n", 1)[1].decode()
    assert f"`503` with `{capped}`" in text


def _example_blocks(text: str, heading: str) -> list[list[str]]:
    """The lines of each fenced block without a language in the section `heading`."""
    return [
        block.splitlines()
        for block in re.findall(r"\n```\n(.*?)\n```", _section(text, heading), re.DOTALL)
    ]


def _shape(line: str) -> re.Pattern[str]:
    """`line` as a pattern in which every number may be another one (times, pids, ports)."""
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(line)))


def _assert_printed(examples: list[str], printed: list[str]) -> None:
    for example in examples:
        shape = _shape(example)
        assert any(shape.fullmatch(line) for line in printed), (example, printed)


def test_readme_config_error_examples_are_what_echostat_prints(tmp_path: Path) -> None:
    """Each error line the README's command-line section shows is printed by echostat, as it
    is, but for numbers (times, ports)."""
    _usage, errors, _startup, _stop = _example_blocks(README.read_text(), "## Command line")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("listeners:\n  - port: 70000\n")
    printed = run_cli(cwd=tmp_path / "bad").stderr.splitlines()
    env = {"ECHOSTAT_STATUS__PORT": "70000"}
    printed += run_cli(cwd=tmp_path, env=env).stderr.splitlines()
    printed += run_cli("--config", "elsewhere.yaml", cwd=tmp_path).stderr.splitlines()
    nested = ("--set", "listeners.0.tls.handshake_timeout_s=x")
    printed += run_cli(*nested, cwd=tmp_path).stderr.splitlines()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        flags = ("--set", f"listeners.0.port={taken.getsockname()[1]}", "--set", "status.port=0")
        printed += run_cli(*flags, cwd=tmp_path).stderr.splitlines()
    _assert_printed(errors, printed)


def test_readme_startup_and_stop_examples_are_what_echostat_logs(
    start_echostat: StartEchostat,
) -> None:
    """The README's startup line and its Ctrl-C lines, with one idle client, are echostat's."""
    _usage, _errors, startup, stop = _example_blocks(README.read_text(), "## Command line")
    echostat = start_echostat(*LOCAL_PORTS, "--set", "shutdown_grace_s=1")
    with socket.create_connection(("127.0.0.1", echostat.echo_port), DEADLINE_S) as idle:
        echostat.signal(signal.SIGINT)
        assert recv_to_eof(idle) == b""
    assert echostat.wait() == 0
    _assert_printed(startup + stop, echostat.log)


def test_readme_reload_refusal_example_is_what_a_reload_logs() -> None:
    """The refused reload the README quotes is the line the reloader writes."""
    readme = " ".join(README.read_text().split())
    assert f"`reload refused: listeners[0].port: changing this needs a restart; {KEPT}`" in readme


def test_api_md_names_every_reason_each_counter_starts_at_0() -> None:
    """The reasons docs/api.md says each reason-labelled counter shows at 0 from the start
    are those it shows, so an alert written from the page matches a series."""
    text = " ".join(_section(API_MD.read_text(), "## `GET /metrics`").split())
    paragraph = text[text.index("Every counter labelled by `reason`") :]
    paragraph = paragraph[: paragraph.index(")")]
    documented = {
        name: re.findall(r"`([a-z_]+)`", reasons)
        for name, reasons in re.findall(
            r"`(echostat_[a-z_]+)`(?:, per listener)?: ([^;]*)", paragraph
        )
    }
    assert documented == {
        "echostat_connections_rejected_total": list(REJECT_REASONS),
        "echostat_connections_closed_by_server_total": list(SERVER_CLOSE_REASONS),
        "echostat_status_connections_rejected_total": list(STATUS_REJECT_REASONS),
        "echostat_status_connections_closed_by_server_total": list(STATUS_CLOSE_REASONS),
        "echostat_udp_datagrams_dropped_total": [*DROP_REASONS, RECEIVE_BUFFER],
    }


async def test_api_md_names_every_path_served_without_the_token() -> None:
    """With a token, the paths that answer without it are those docs/api.md names: the open
    paths, the sign-in form and the page's files."""
    config = loopback_config(
        status=StatusConfig(host="127.0.0.1", port=0, token="correct-horse-battery-staple")
    )
    service = Service(config)
    await service.start()
    try:
        paths = [*sorted(_routes()), "/static/dashboard.js"]
        answered = [(path, (await status_fetch(service, path)).code) for path in paths]
    finally:
        await service.stop()
    open_without = {
        path.rsplit("/", 1)[0] + "/" if "." in path else path
        for path, code in answered
        if code not in (302, 401)
    }
    text = " ".join(API_MD.read_text().split())
    said = text[text.index("With `status.token` set, every path except") :]
    named = set(re.findall(r"`(/[a-z/]*)`", said[: said.index(" needs ")]))
    assert open_without == named | set(config.status.open_paths)
