"""``echostat probe --path`` and ``--idle-timeout``: what a run says when a finding fails it,
and flag combinations that mean nothing."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from tests.faults.conftest import StartEchostat
from tests.faults.test_tls import tls_listener
from tests.faulty_servers import echoes, faulty_server, reports_peer
from tests.helpers import DEADLINE_S, probe_here, start_probe

Capsys = pytest.CaptureFixture[str]


def test_fail_on_finding_fails_the_json_document_too(capsys: Capsys) -> None:
    """A finding named by --fail-on exits 1, and the --json document says the run failed and
    why, with the line printed on stderr."""
    with faulty_server(reports_peer("198.18.0.9:1")) as port:
        done = probe_here(
            capsys, f"127.0.0.1:{port}", "--path", "--fail-on", "nat", "-c", "1", "--json"
        )
    report = done.report()
    assert done.status == 1
    assert report["path"]["findings"] == ["nat", "port_rewritten"]
    assert done.err == "echostat probe: --fail-on: the path shows nat\n"
    assert (report["ok"], report["error"]) == (False, "--fail-on: the path shows nat")


def test_fail_on_a_finding_not_present_passes(capsys: Capsys) -> None:
    with faulty_server(reports_peer("198.18.0.9:1")) as port:
        done = probe_here(
            capsys, f"127.0.0.1:{port}", "--path", "--fail-on", "mss_clamped", "-c", "1", "--json"
        )
    report = done.report()
    assert (done.status, report["ok"], report["error"]) == (0, True, None)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--count", "3"),
        ("--interval", "0.1"),
        ("--size", "1000"),
        ("--window", "10"),
        ("--rate", "10/s"),
        ("--percentiles", "50"),
    ],
)
def test_idle_timeout_refuses_the_flags_it_would_ignore(
    capsys: Capsys, flag: str, value: str
) -> None:
    """The idle search sends its own echoes on its own schedule: a flag of another check is a
    usage error naming it, not silently dropped."""
    done = probe_here(capsys, "127.0.0.1:7", "--idle-timeout", "5", flag, value)
    assert done.status == 2
    assert done.err == (
        f"echostat probe: --idle-timeout is a check of its own; it does not go with {flag}\n"
    )


@pytest.mark.parametrize(
    "check",
    [("-c", "1"), ("--half-close",), ("--duration", "0.5")],
    ids=["round-trips", "half-close", "load"],
)
def test_a_report_listener_without_path_is_named_with_the_fix(
    capsys: Capsys, check: tuple[str, ...]
) -> None:
    """A listener with report: true speaks first; a check without --path fails on its first
    byte and says why and what to add, as the idle search does."""
    with faulty_server(reports_peer("127.0.0.1:1")) as port:
        done = probe_here(capsys, f"127.0.0.1:{port}", *check)
    assert done.status == 1
    assert done.err.startswith("echostat probe: connection 0: byte 0 differs"), done.err
    assert "; the server sent an echostat report first: add --path to read it" in done.err


def test_a_stream_load_on_a_report_listener_is_named_with_the_fix(capsys: Capsys) -> None:
    """In stream mode the report comes before anything was sent: the failure names it and the
    flag to add too, not only a byte that was never sent."""
    with faulty_server(reports_peer("127.0.0.1:1")) as port:
        done = probe_here(
            capsys,
            f"127.0.0.1:{port}",
            "--connections",
            "3",
            "--duration",
            "0.5",
            "--mode",
            "stream",
        )
    assert done.status == 1
    assert "; the server sent an echostat report first: add --path to read it" in done.err


def test_mss_above_what_linux_takes_is_a_usage_error(capsys: Capsys) -> None:
    """Linux refuses a TCP_MAXSEG above 32767 (MAX_TCP_WINDOW): the flag's range says so,
    instead of a connect that fails with "invalid argument"."""
    done = probe_here(capsys, "127.0.0.1:7", "--path", "--mss", "32768")
    assert (done.status, done.err) == (2, "echostat probe: --mss: expected 88..32767, got 32768\n")


def test_the_largest_mss_is_advertised(capsys: Capsys) -> None:
    with faulty_server(reports_peer("127.0.0.1:1")) as port:
        done = probe_here(capsys, f"127.0.0.1:{port}", "--path", "--mss", "32767", "-c", "1")
    assert done.status == 0, done.err
    assert re.search(r"^  mss +32767 ", done.out, re.MULTILINE), done.out


PATH_OPTION_KEYS = ("path", "dscp", "ttl", "mss", "fail_on", "idle_timeout_s", "idle_resolution_s")


def test_json_options_hold_the_path_flags(capsys: Capsys) -> None:
    """``options`` holds every option of the run: the marks sent and --fail-on too, so a run
    can be repeated from its document; without them the same keys are there, empty."""
    with faulty_server(reports_peer("127.0.0.1:1")) as port:
        marked = probe_here(
            capsys,
            *(f"127.0.0.1:{port}", "--path", "--dscp", "EF", "--ttl", "9", "--mss", "1000"),
            *("--fail-on", "mss_clamped,nat", "-c", "1", "--json"),
        ).report()["options"]
        plain = probe_here(capsys, f"127.0.0.1:{port}", "-c", "1", "--json").report()["options"]
    assert {key: marked[key] for key in PATH_OPTION_KEYS} == {
        "path": True,
        "dscp": 46,
        "ttl": 9,
        "mss": 1000,
        "fail_on": ["mss_clamped", "nat"],
        "idle_timeout_s": None,
        "idle_resolution_s": None,
    }
    assert list(plain) == list(marked)
    assert (plain["path"], plain["dscp"], plain["fail_on"]) == (False, None, [])


def test_udp_json_options_hold_the_path_flags(capsys: Capsys) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    report = probe_here(
        capsys, f"udp://127.0.0.1:{port}", "--dscp", "AF11", "-c", "1", "--json"
    ).report()
    assert {key: report["options"][key] for key in ("path", "dscp", "ttl", "mss")} == {
        "path": False,
        "dscp": 10,
        "ttl": None,
        "mss": None,
    }


def test_a_tls_report_listener_is_named_without_sending_to_path(
    capsys: Capsys, start_echostat: StartEchostat, tls_files: dict[str, Path]
) -> None:
    """On a TLS listener the report comes inside TLS, where --path does not read: the failure
    says so instead of asking for --path, which --tls refuses."""
    listeners = [{**tls_listener(tls_files["cert"], tls_files["key"])[0], "report": True}]
    echostat = start_echostat(listeners=listeners)
    target = f"127.0.0.1:{echostat.ports['tls']}"
    done = probe_here(capsys, target, "--tls", "--insecure", "-c", "1")
    assert done.status == 1
    assert done.err.endswith(
        "; the server sent an echostat report first, inside TLS: --path reads reports only in "
        "the clear, so this listener can't be probed\n"
    ), done.err
    assert "add --path" not in done.err


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_path_through_a_proxy_header_to_a_plain_echo_names_the_echoed_header(
    capsys: Capsys, version: str
) -> None:
    """--path with --proxy-header against a server that does not speak the PROXY protocol:
    the header comes back first, and the failure says so, as the check without --path does."""
    with faulty_server(echoes) as port:
        done = probe_here(
            capsys,
            *(f"127.0.0.1:{port}", "--path", "-c", "1"),
            *("--proxy-header", version, "--proxy-source", "203.0.113.5:4444"),
        )
    assert done.status == 1
    assert done.err == (
        f"echostat probe: 127.0.0.1:{port}: the server echoed the PROXY header, "
        "so it does not speak the PROXY protocol\n"
    )


@pytest.mark.parametrize(
    ("target", "finding", "why"),
    [
        ("127.0.0.1:7", "ecn_bleached", "a TCP SYN is never ECN-capable, so udp:// targets alone"),
        ("udp://127.0.0.1:7", "mss_clamped", "it is a TCP finding, which udp:// targets"),
        ("udp://127.0.0.1:7", "options_stripped", "it is a TCP finding, which udp:// targets"),
    ],
)
def test_fail_on_a_finding_the_target_can_never_show_is_a_usage_error(
    capsys: Capsys, target: str, finding: str, why: str
) -> None:
    """--fail-on that could never fire would pass every run: a usage error naming it."""
    done = probe_here(capsys, target, "--path", "--fail-on", f"nat,{finding}")
    assert done.status == 2
    assert done.err.startswith(f"echostat probe: --fail-on: {finding} can't be found here: {why}")


def test_an_interrupted_idle_search_does_not_claim_the_periods_it_never_waited() -> None:
    """Ctrl-C a minute's search at its first round: the summary says the search was stopped,
    not that nothing timed out up to a minute, which it never waited."""
    with faulty_server(echoes) as port:
        probe = start_probe(f"127.0.0.1:{port}", "--idle-timeout", "60")
        assert probe.stdout is not None
        while not (line := probe.stdout.readline()).startswith("idling "):
            assert line, probe.communicate(timeout=DEADLINE_S)
        probe.send_signal(signal.SIGINT)
        out, errors = probe.communicate(timeout=DEADLINE_S)
    assert probe.returncode == 0, errors
    summary = out.splitlines()[-1]
    assert re.fullmatch(
        r"longest idle survived (nothing|[\d.]+ s): none failed before the search was stopped",
        summary,
    ), out
