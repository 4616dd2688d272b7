"""README's Layout names every folder of tests/ and of deploy/."""

from __future__ import annotations

from tests.helpers import REPO

DEPLOY_WORDS = {
    "container": "container image",
    "systemd": "systemd units",
    "kubernetes": "Kubernetes manifests",
    "haproxy": "HAProxy",
    "prometheus": "Prometheus",
    "grafana": "Grafana",
    "nftables": "nftables",
}
"""How the Layout names each folder of deploy/."""


def _layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text[text.index("\n## Layout\n") :]


def test_readme_layout_names_every_test_and_deploy_folder() -> None:
    """Each folder of tests/ appears as ``NAME/`` in the Layout; each of deploy/ by name."""
    layout = _layout()
    tests = {p.name for p in (REPO / "tests").iterdir() if (p / "__init__.py").is_file()}
    assert sorted(name for name in tests if f"{name}/" not in layout) == []
    deploy = {p.name for p in (REPO / "deploy").iterdir() if p.is_dir()}
    assert deploy == set(DEPLOY_WORDS)
    deploy_line = layout[layout.index("\ndeploy/") : layout.index("\ndocs/")]
    assert sorted(n for n, words in DEPLOY_WORDS.items() if words not in deploy_line) == []
