"""The supervisor-worker messages: every line decodes back into the dataclasses it came from."""

from __future__ import annotations

from echostat.server.messages import (
    Question,
    WorkerSpec,
    decode_config_message,
    decode_question,
    decode_report,
    encode_config_message,
    encode_question,
    encode_report,
)
from echostat.server.registry import Connection, Registry
from echostat.server.snapshots import ConnectionSnapshot
from echostat.server.tcp_info import TcpInfo
from echostat.server.udp_stats import PeerSnapshot

PEER = PeerSnapshot("127.0.0.1:5000", "udp", 42, 1.0, 2.0, 3, 3, 30, 30)


def test_a_report_line_decodes_to_its_snapshot_rows_peers_and_question() -> None:
    """One line carries the snapshot, connection rows (with TCP_INFO) and UDP peers."""
    registry = Registry()
    registry.add_udp_listener("udp", "127.0.0.1", 7007)
    conn = Connection("127.0.0.1", 40000, registry.add_listener("main", "127.0.0.1", 7007))
    registry.open(conn)
    conn.tcp = TcpInfo(1.5, 0.5, 1.0, 2, 0, 10, 0, 1448)
    snapshot, rows = registry.snapshot(), registry.connections()
    line = encode_report(snapshot, rows, [PEER], answers=7)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    report = decode_report(line, received_at=12.5)
    assert report.snapshot == snapshot
    assert report.connections == rows and isinstance(rows[0], ConnectionSnapshot)
    assert report.connections[0].tcp == conn.tcp
    assert report.peers == [PEER]
    assert (report.answers, report.received_at) == (7, 12.5)


def test_a_periodic_report_answers_no_question_and_may_have_no_peers() -> None:
    report = decode_report(encode_report(Registry().snapshot(), []), received_at=0.0)
    assert (report.answers, report.peers, report.connections) == (None, [], [])


def test_questions_and_config_messages_are_single_lines_that_round_trip() -> None:
    """A question is ``N ROWS``; a config message carries any text, newlines included."""
    assert encode_question(Question(3, 200)) == b"3 200\n"
    assert decode_question(b"3 200\n") == Question(3, 200)
    text = "listeners:\n  - port: 0\n"
    line = encode_config_message(text)
    assert line.count(b"\n") == 1 and decode_config_message(line) == text


def test_worker_spec_round_trips_through_json() -> None:
    spec = WorkerSpec(1, "/etc/echostat.yaml", ["workers=1"], {"main": [5, 6]}, 7, 8)
    assert WorkerSpec.from_json(spec.to_json()) == spec
