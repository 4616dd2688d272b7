"""Pages of ``GET /api/connections``: the cursor's text form and the body, encoded in slices.

A page holds at most `MAX_PAGE_ROWS` rows. A cursor names the last row of a page (its
worker's pid and its id, ``PID-ID``), and the next page starts after it in that order; ``0``
starts at the beginning. Ids only grow, so a walk lists every connection open throughout it
exactly once, whatever opens and closes meanwhile.
"""

from __future__ import annotations

import json

from echostat.server.snapshots import ConnectionSnapshot, ConnectionsPage, RowKey
from echostat.web.schema import connections_document

MAX_PAGE_ROWS = 1000
"""The most rows one request returns; larger ``limit`` values are refused with 400."""

START = RowKey(0, 0)
"""Before every connection: where the cursor ``0`` starts."""


def parse_cursor(text: str) -> RowKey | None:
    """The row key a cursor names, or None if `text` is not a cursor."""
    if text == "0":
        return START
    worker, dash, row = text.partition("-")
    if not (dash and is_number(worker) and is_number(row)):
        return None
    return RowKey(int(worker), int(row))


def is_number(text: str) -> bool:
    """Whether `text` is a whole number of at most 19 ASCII digits, which `int` reads.
    (`str.isdigit` alone also passes superscript and circled digits, which `int` refuses,
    and numbers longer than `int` converts.)"""
    return text.isascii() and text.isdigit() and len(text) <= 19


def format_cursor(key: RowKey | None) -> str | None:
    return None if key is None else f"{key.worker}-{key.id}"


def encode_rows(rows: list[ConnectionSnapshot]) -> str:
    """Rows as the JSON array elements of ``connections``, without the brackets."""
    return json.dumps(connections_document(0, rows)["connections"])[1:-1]


def page_body(total: int, page: ConnectionsPage) -> bytes:
    """The JSON body of a page built with `encode_rows`: ``total``, ``connections`` and
    ``next_cursor``."""
    rows = ", ".join(part for part in page.encoded if part)
    head = json.dumps({"total": total})[:-1]
    tail = json.dumps(format_cursor(page.next_after))
    return f'{head}, "connections": [{rows}], "next_cursor": {tail}}}'.encode()
