"""A source tree's code under the names its wheel installs, without installing it.

The repository keeps `server/`, `web/` and `probe/` at the top, and `pyproject.toml` maps them
under the one import package `echostat`. Tools that read a tree rather than an installed
distribution (mypy, or the benchmark running an older checkout beside the current one) get a
directory of symbolic links laid out as the wheel is: ``echostat/server -> ../server`` and so
on. A tree from before the mapping has no such table and is used as it is.
"""

from __future__ import annotations

import tomllib
from pathlib import Path


def package_dirs(source: Path) -> dict[str, str]:
    """`source`'s ``[tool.setuptools.package-dir]`` table: import name -> folder, or empty."""
    pyproject = source / "pyproject.toml"
    if not pyproject.exists():
        return {}
    settings = tomllib.loads(pyproject.read_text())
    mapping: dict[str, str] = settings.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return mapping


def import_root(source: Path, into: Path) -> Path:
    """A folder that, put first on ``sys.path``, imports `source`'s code by its installed names.

    The links are made in `into` (which the caller owns and removes); a tree without a
    package-dir table is its own import root.
    """
    mapping = package_dirs(source)
    if not mapping:
        return source
    for name, folder in sorted(mapping.items()):
        target = into.joinpath(*name.split("."))
        if "." not in name:
            target.mkdir(parents=True, exist_ok=True)
            for entry in (source / folder).iterdir():
                (target / entry.name).symlink_to(entry.resolve())
        else:
            target.symlink_to((source / folder).resolve(), target_is_directory=True)
    return into


def server_module(source: Path) -> str:
    """The module that runs `source`'s server with ``python -m``."""
    return "echostat" if package_dirs(source) else "server"
