"""The JSON examples of docs/api.md, taken from a real run, and how to compare their keys.

`real_documents` runs echostat on its built-in defaults (on free ports, plus a UDP listener)
with a TCP client and a few datagrams, and fetches each documented endpoint. The suite
checks that each example in docs/api.md has exactly the keys of the real document; to bring
the examples up to date, run from the repository root:
``.venv/bin/python -m tests.e2e.api_examples``, which rewrites them from a new run.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from echostat.server.config_loading import load_config
from echostat.service import Service
from tests.helpers import (
    REPO,
    close_all,
    echo_once,
    get_json,
    round_trip,
    udp_socket,
    wait_until,
)

API_MD = REPO / "docs" / "api.md"

EXAMPLES = {
    "## `GET /api/stats`": "/api/stats",
    "## `GET /api/connections?limit=N`": "/api/connections",
    "## `GET /api/peers?limit=N`": "/api/peers",
    "## `GET /api/history`": "/api/history",
}
"""The heading of each section of docs/api.md whose first JSON block is an example, and the
path whose document it shows."""

RUN_FLAGS = [
    "listeners.0.port=0",
    "status.port=0",
    "listeners.1.name=udp",
    "listeners.1.protocol=udp",
    "listeners.1.port=0",
]
"""``--set`` flags of the run: the defaults on free ports, and a UDP listener."""

_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


async def real_documents() -> dict[str, Any]:
    """Each path of `EXAMPLES` fetched from a real run, after two ticks of the push channel
    (so that rates and history have two points), with one TCP client open."""
    service = Service(load_config(None, {}, RUN_FLAGS))
    await service.start()
    try:
        _, writer = await echo_once(service.echo_port("main"), b"x" * 1000)
        with udp_socket() as udp:
            for n in range(10):
                await round_trip(udp, ("127.0.0.1", service.echo_port("udp")), b"%64d" % n)
        port = service.status_port

        async def two_ticks() -> bool:
            return len((await get_json(port, "/api/history"))["taken_at"]) >= 2

        await wait_until(two_ticks, "two ticks of the push channel")
        documents = {path: await get_json(port, path) for path in EXAMPLES.values()}
        await close_all([writer])
        return documents
    finally:
        await service.stop()


def documented_examples(text: str) -> dict[str, Any]:
    """Each path of `EXAMPLES` -> the example docs/api.md's `text` shows for it, parsed."""
    return {
        path: json.loads(_example_block(text, heading)[1]) for heading, path in EXAMPLES.items()
    }


def key_shape(document: Any) -> Any:
    """The keys of `document`, nested: objects as their keys' shapes, arrays as the shape of
    their first element (empty arrays as ``[]``), and every other value as None."""
    if isinstance(document, dict):
        return {key: key_shape(value) for key, value in document.items()}
    if isinstance(document, list):
        return [key_shape(document[0])] if document else []
    return None


def differences(documented: Any, real: Any, where: str = "") -> list[str]:
    """Where `documented` and `real` (two `key_shape`s) differ, one line each."""
    if isinstance(documented, dict) and isinstance(real, dict):
        lines = [f"{where}.{key}: only in docs/api.md" for key in documented if key not in real]
        lines += [
            f"{where}.{key}: missing from docs/api.md" for key in real if key not in documented
        ]
        for key in documented.keys() & real.keys():
            lines += differences(documented[key], real[key], f"{where}.{key}")
        return lines
    if isinstance(documented, list) and isinstance(real, list):
        if documented and real:
            return differences(documented[0], real[0], f"{where}[]")
        return [] if not real else [f"{where}: docs/api.md shows an empty array"]
    return [] if documented == real else [f"{where}: docs/api.md shows another kind of value"]


def rewrite(text: str, documents: dict[str, Any]) -> str:
    """`text` (docs/api.md) with each example replaced by the real document."""
    for heading, path in EXAMPLES.items():
        block, _ = _example_block(text, heading)
        body = json.dumps(documents[path], indent=2)
        text = text[: block.start(1)] + body + text[block.end(1) :]
    return text


def _example_block(text: str, heading: str) -> tuple[re.Match[str], str]:
    """The first JSON block after `heading` in `text`, and its content."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    block = _JSON_BLOCK.search(text, start, end if end >= 0 else len(text))
    assert block is not None, f"docs/api.md: no JSON example under {heading}"
    return block, block[1]


async def _main(path: Path = API_MD) -> None:
    path.write_text(rewrite(path.read_text(), await real_documents()))
    print(f"rewrote the examples of {path}")


if __name__ == "__main__":
    asyncio.run(_main())
