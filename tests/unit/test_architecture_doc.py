"""docs/architecture.md's table of modules names every module of the installed package."""

from __future__ import annotations

import re

from tests.helpers import REPO

PACKAGES = ("echostat", "server", "web", "probe")


def test_every_module_has_its_job_in_architecture_md() -> None:
    """Each module of echostat/, server/, web/ and probe/ is named in the modules table, and
    each module the page names exists."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Modules and their one job\n") :]
    named = set(re.findall(r"`((?:echostat|server|web|probe)/[a-z_]+\.py)`", table))
    modules = {
        f"{package}/{path.name}"
        for package in PACKAGES
        for path in (REPO / package).glob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - named) == []
    assert sorted(named - modules) == []
