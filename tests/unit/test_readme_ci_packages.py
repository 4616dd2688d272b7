"""README's Dependencies name every Debian package .ci/run installs for the tests."""

from __future__ import annotations

import re

from tests.helpers import REPO


def test_readme_names_every_debian_package_ci_installs() -> None:
    """Each package of .ci/run's apt-get install appears, in backquotes, under Dependencies."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    packages = set()
    for line in re.findall(r"apt-get install (.*)", script):
        packages |= {word for word in line.split() if not word.startswith(("-", ">"))}
    packages.discard("npm")  # for axe-core, installed only where Node.js lacks it
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Dependencies\n") : text.index("\n## Tests\n")]
    assert sorted(name for name in packages if f"`{name}`" not in section) == []
