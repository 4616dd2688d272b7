"""The built wheel installs one import package, `echostat`, that works on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import DEADLINE_S, REPO

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree, as a fresh clone would build it."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path, source],
        check=True,
        capture_output=True,
        timeout=4 * DEADLINE_S,
    )
    (built,) = tmp_path.glob("echostat-*.whl")
    return built


def test_wheel_holds_one_top_level_import_package(wheel: Path) -> None:
    """Everything but the metadata lies under ``echostat/``: no `server`, `web` or `probe`."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"echostat"}


def test_wheel_contains_templates_static_files_and_console_script(wheel: Path) -> None:
    """The wheel ships web/templates, web/static, the probe and the `echostat` command, mapped
    under ``echostat/``."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (name for name in names if name.endswith(".dist-info/entry_points.txt"))
        console_scripts = archive.read(entry_points).decode()
    static = {
        "echostat/web/" + p.relative_to(REPO / "web").as_posix()
        for p in (REPO / "web/static").rglob("*.*")
    }
    assert {"echostat/web/templates/index.html", *static} <= names
    assert {
        "echostat/probe/engine.py",
        "echostat/server/echo.py",
        "echostat/__main__.py",
        "echostat/py.typed",
    } <= names
    assert "echostat = echostat.cli:main" in console_scripts.splitlines()


def test_installed_wheel_imports_and_runs_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    """Installed on its own (no source tree on the path), ``python -m echostat`` runs the
    installed files."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
        timeout=4 * DEADLINE_S,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}

    def python(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=DEADLINE_S,
        )
        return done.stdout.strip()

    where = python("-c", "import echostat.web.app as m; print(m.__file__)")
    assert Path(where).is_relative_to(site / "echostat" / "web")
    assert python("-m", "echostat", "--version").startswith("echostat ")
