"""docs/api.md and the README against the running code: examples, endpoints, error texts."""

from __future__ import annotations

import re

from echostat.server.registry import Registry
from echostat.web.app import make_app
from echostat.web.status import StatusSide
from tests.conftest import loopback_config
from tests.e2e.api_examples import (
    API_MD,
    differences,
    documented_examples,
    key_shape,
    real_documents,
)
from tests.helpers import REPO

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
    patterns = {rule.matcher.regex.pattern.rstrip("$") for rule in rules}
    return {pattern for pattern in patterns if "(" not in pattern}


def _table_paths(text: str, heading: str) -> set[str]:
    """The paths of the endpoint table in the section `heading` of `text`."""
    section = text[text.index(f"\n{heading}\n") :]
    section = section[: section.find("\n## ", 1)]
    return set(re.findall(r"^\| `(?:GET )?(/[^ `?]*)", section, re.MULTILINE))


def test_readme_and_api_md_list_every_endpoint() -> None:
    """The endpoint tables of the README and docs/api.md list exactly the paths served."""
    routes = _routes()
    assert _table_paths(README.read_text(), "## HTTP API") == routes
    assert _table_paths(API_MD.read_text(), "# Status API") == routes
