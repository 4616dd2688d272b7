"""The messages between the supervisor and its workers, as dataclasses and their wire form.

A worker starts with a `WorkerSpec` (a JSON argument); its standard input carries config
messages (the config text the supervisor validated); its ask pipe carries questions (``N ROWS``
lines, or ``N ROWS PID ID`` for a page); its report pipe carries one JSON `Report` line per
tick or answer. Every line is decoded once, here, into the dataclass its reader uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from echostat.server.snapshots import (
    ConnectionSnapshot,
    ConnectionsPage,
    RowKey,
    StatsSnapshot,
)
from echostat.server.udp_stats import PeerSnapshot

WORKER_MODULE = "echostat.server.worker"
"""What each worker runs, ``python -m WORKER_MODULE SPEC``: ``echostat reload`` knows a worker
by it."""

CONFIG_MESSAGE_MAX_BYTES = 1 << 22
"""The longest config message a worker reads: a config file is far smaller."""

REPORT_MAX_BYTES = 1 << 26
"""The longest report line the supervisor reads (a worker's answer with its most rows)."""

QUESTION_MAX_BYTES = 80
"""The longest question line a worker reads: four decimal numbers."""


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
    connections, or with a page of `rows` connections after `after` (``N ROWS PID ID``)."""

    number: int
    rows: int
    after: RowKey | None = None


def encode_question(question: Question) -> bytes:
    if question.after is None:
        return b"%d %d\n" % (question.number, question.rows)
    after = question.after
    return b"%d %d %d %d\n" % (question.number, question.rows, after.worker, after.id)


def decode_question(line: bytes) -> Question:
    number, rows, *after = map(int, line.split())
    return Question(number, rows, RowKey(*after) if after else None)


@dataclass(frozen=True)
class Report:
    """One report of a worker: its snapshot, its busiest connections and UDP peers, the number
    of the question it answers (None for a periodic report) and when it arrived (monotonic)."""

    snapshot: StatsSnapshot
    connections: list[ConnectionSnapshot]
    peers: list[PeerSnapshot]
    answers: int | None
    received_at: float
    page: ConnectionsPage | None = None
    """The page a question with `Question.after` asked for."""


def encode_report(
    snapshot: StatsSnapshot,
    connections: list[ConnectionSnapshot],
    peers: list[PeerSnapshot] | None = None,
    answers: int | None = None,
    page: ConnectionsPage | None = None,
) -> bytes:
    """One line a worker sends: its snapshot, its busiest connections and UDP peers, the
    number of the question it answers (None for a periodic report), and the page it asked
    for, if any."""
    report: dict[str, object] = {
        "snapshot": snapshot.to_dict(),
        "connections": [conn.to_dict() for conn in connections],
        "peers": [asdict(peer) for peer in peers or ()],
        "answers": answers,
    }
    if page is not None:
        after = page.next_after
        report["page"] = [conn.to_dict() for conn in page.rows]
        report["page_next"] = None if after is None else [after.worker, after.id]
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
        page=_decode_page(report),
    )


def _decode_page(report: dict[str, Any]) -> ConnectionsPage | None:
    if "page" not in report:
        return None
    rows = [ConnectionSnapshot.from_dict(row) for row in report["page"]]
    after = report["page_next"]
    return ConnectionsPage(rows, None if after is None else RowKey(*after))
