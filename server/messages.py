"""The messages between the supervisor and its workers, as dataclasses and their wire form.

A worker starts with a `WorkerSpec` (a JSON argument); its standard input carries config
messages (the config text the supervisor validated); its ask pipe carries questions
(``N ROWS`` lines); its report pipe carries one JSON `Report` line per tick or answer. Every
line is decoded once, here, into the dataclass its reader uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from echostat.server.snapshots import ConnectionSnapshot, StatsSnapshot
from echostat.server.udp_stats import PeerSnapshot

CONFIG_MESSAGE_MAX_BYTES = 1 << 22
"""The longest config message a worker reads: a config file is far smaller."""

REPORT_MAX_BYTES = 1 << 26
"""The longest report line the supervisor reads (a worker's answer with its most rows)."""

QUESTION_MAX_BYTES = 64
"""The longest question line a worker reads: two decimal numbers."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs from its supervisor."""

    slot: int
    config_path: str | None
    """None: no file, the built-in defaults."""
    overrides: list[str]
    listeners: dict[str, list[int]]
    report_fd: int
    ask_fd: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def encode_config_message(text: str) -> bytes:
    """One line to a worker's standard input: the config file's text to put in force."""
    return json.dumps({"config": text}).encode() + b"\n"


def decode_config_message(line: bytes) -> str:
    """The config text of one config message line."""
    text: str = json.loads(line)["config"]
    return text


@dataclass(frozen=True)
class Question:
    """The supervisor asks for a report at once: question `number`, with `rows` busiest
    connections."""

    number: int
    rows: int


def encode_question(question: Question) -> bytes:
    return b"%d %d\n" % (question.number, question.rows)


def decode_question(line: bytes) -> Question:
    number, rows = map(int, line.split())
    return Question(number, rows)


@dataclass(frozen=True)
class Report:
    """One report of a worker: its snapshot, its busiest connections and UDP peers, the number
    of the question it answers (None for a periodic report) and when it arrived (monotonic)."""

    snapshot: StatsSnapshot
    connections: list[ConnectionSnapshot]
    peers: list[PeerSnapshot]
    answers: int | None
    received_at: float


def encode_report(
    snapshot: StatsSnapshot,
    connections: list[ConnectionSnapshot],
    peers: list[PeerSnapshot] | None = None,
    answers: int | None = None,
) -> bytes:
    """One line a worker sends: its snapshot, its busiest connections and UDP peers, and the
    number of the question it answers (None for a periodic report)."""
    report = {
        "snapshot": snapshot.to_dict(),
        "connections": [conn.to_dict() for conn in connections],
        "peers": [asdict(peer) for peer in peers or ()],
        "answers": answers,
    }
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


def decode_report(line: bytes, received_at: float) -> Report:
    """The `Report` of one report line, which arrived at `received_at` (monotonic)."""
    report = json.loads(line)
    return Report(
        snapshot=StatsSnapshot.from_dict(report["snapshot"]),
        connections=[ConnectionSnapshot.from_dict(row) for row in report["connections"]],
        peers=[PeerSnapshot(**row) for row in report.get("peers", ())],
        answers=report.get("answers"),
        received_at=received_at,
    )
