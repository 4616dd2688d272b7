"""The built wheel carries the dashboard's files, the probe and the ``echostat`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import DEADLINE_S, REPO

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def test_wheel_contains_templates_static_files_and_console_script(tmp_path: Path) -> None:
    """A wheel built from a copy of the tree ships web/templates, web/static, probe/ and
    `echostat`."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path, source],
        check=True,
        timeout=4 * DEADLINE_S,
    )
    (wheel,) = tmp_path.glob("echostat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (name for name in names if name.endswith(".dist-info/entry_points.txt"))
        console_scripts = archive.read(entry_points).decode()
    static = {p.relative_to(REPO).as_posix() for p in (REPO / "web/static").rglob("*.*")}
    assert {"web/templates/index.html", *static} <= names
    assert {"probe/engine.py", "probe/cli.py", "echostat/__main__.py"} <= names
    assert "echostat = echostat.cli:main" in console_scripts.splitlines()
