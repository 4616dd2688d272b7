"""The layers point down: server/ imports neither web nor probe, and nothing imports the
folders by their repository names instead of the installed ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS = ("server", "web", "probe")
"""The folders installed as ``echostat.<folder>``."""
ROOT = (
    "echostat.cli",
    "echostat.service",
    "echostat.serve",
    "echostat.serve_flags",
    "echostat.watching",
)
"""The composition root's modules: they import the layers, never the other way round."""
MAY_NOT_IMPORT = {
    "server": ("echostat.web", "echostat.probe", *ROOT),
    "web": ("echostat.probe", *ROOT),
    "probe": ("echostat.web", "echostat.server", *ROOT),
}
MAX_LINES = 450
"""A source file past this is usually two jobs (house style)."""


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, by absolute name (relative imports are not used here)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether module `name` is one of `packages` or inside one (``echostat.serve`` is not
    inside ``echostat.server``)."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(MAY_NOT_IMPORT))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    """server/ knows neither the page nor the probe; web/ and probe/ don't know each other."""
    forbidden = MAY_NOT_IMPORT[layer]
    found = {
        f"{path.relative_to(REPO)}: {name}"
        for path in python_files(layer)
        for name in imported_modules(path)
        if within(name, forbidden)
    }
    assert not found, sorted(found)


def test_code_imports_the_installed_names_only() -> None:
    """`from server.x import y` would work only from a checkout; everything says echostat.*."""
    found = {
        f"{path.relative_to(REPO)}: {name}"
        for path in python_files("server", "web", "probe", "echostat", "tests", "bench", "docs")
        for name in imported_modules(path)
        if name.split(".")[0] in LAYERS
    }
    assert not found, sorted(found)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The import scan finds both import forms, so the tests above can fail."""
    sample = tmp_path / "sample.py"
    sample.write_text("import echostat.web.app\nfrom echostat.probe import engine\n")
    found = imported_modules(sample)
    assert within("echostat.web.app", MAY_NOT_IMPORT["server"])
    assert {"echostat.web.app", "echostat.probe.engine"} <= found
    assert not within("echostat.server.config", MAY_NOT_IMPORT["server"])


def test_no_source_file_is_two_jobs_long() -> None:
    """No module of server/, web/, probe/ or bench/, nor a page script, passes 450 lines."""
    sources = [
        *python_files("server", "web", "probe", "bench"),
        *(REPO / "web/static").glob("*.js"),
    ]
    long = {
        str(path.relative_to(REPO)): lines
        for path in sources
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
