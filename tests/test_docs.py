"""The documentation site: the API reference covers every public name, and it builds strictly.

Coverage (always run): every name in the ``__all__`` of a public face is on
its API page (``docs/api/*.md``) as a ``::: package.NAME`` directive, as a
documented submodule, or as a member of a documented submodule that defines
it. The build (when mkdocs is installed: the ``test`` and ``docs`` extras)
runs ``mkdocs build --strict`` and checks that the generated reference has an
anchor for every public name.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = {
    "inferax.sampling": "sampling.md",
    "inferax.models": "models.md",
    "inferax.search": "search.md",
    "inferax.search.flow": "search_flow.md",
    "inferax.search.lm": "search_lm.md",
    "inferax.experiments": "experiments.md",
}
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def directives(text: str) -> set[str]:
    return set(DIRECTIVE.findall(text))


def anchors(name: str, package: str, obj) -> list[str]:
    """The identifiers under which ``package.name`` may be documented."""
    ids = [f"{package}.{name}"]
    if isinstance(obj, types.ModuleType):
        ids.append(obj.__name__)
    elif getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None):
        ids.append(f"{obj.__module__}.{obj.__qualname__}")
    return ids


def missing(package: str, documented: set[str]) -> list[str]:
    """Public names of ``package`` that no directive in ``documented`` covers."""
    mod = importlib.import_module(package)
    out = []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        ids = anchors(name, package, obj)
        home = getattr(obj, "__module__", None)
        if not (set(ids) & documented or (home in documented and not name.startswith("_"))):
            out.append(f"{package}.{name}")
    return out


def test_every_public_name_is_in_the_api_reference():
    found, documented = {}, set()
    for package, page in FACES.items():
        text = (ROOT / "docs" / "api" / page).read_text()
        assert f"::: {package}\n" in text, f"docs/api/{page}: expected '::: {package}'"
        documented |= directives(text)
    for package in FACES:
        found[package] = missing(package, documented)
    gaps = [n for names in found.values() for n in names]
    assert not gaps, f"docs/api: expected every public name documented, missing {gaps}"


def test_coverage_fails_when_a_name_is_missing():
    # negative control: the sampling page without its `flow` section loses flow and
    # every name re-exported from it
    text = (ROOT / "docs" / "api" / "sampling.md").read_text()
    documented = directives(text) - {"inferax.sampling.flow"}
    gaps = missing("inferax.sampling", documented)
    assert "inferax.sampling.flow" in gaps and "inferax.sampling.FlowInfo" in gaps


def test_every_nav_page_and_notebook_exists():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r": ([\w/]+\.(?:md|ipynb))$", nav, re.M)
    assert len(pages) >= 20
    for page in pages:
        path = ROOT / page if page.startswith("colab/") else ROOT / "docs" / page
        assert path.exists(), f"mkdocs.yml nav: {page} does not exist"


@pytest.mark.docs
@pytest.mark.slow
def test_the_site_builds_strictly_with_every_public_name(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    took = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-4000:]}"
    print(f"mkdocs build --strict: {took:.1f} s")
    html = " ".join(p.read_text() for p in (tmp_path / "site" / "api").rglob("index.html"))
    ids = set(re.findall(r'id="(inferax\.[\w.]+)"', html))
    gaps = []
    for package in FACES:
        mod = importlib.import_module(package)
        for name in getattr(mod, "__all__", []):
            if not set(anchors(name, package, getattr(mod, name))) & ids:
                gaps.append(f"{package}.{name}")
    assert not gaps, (
        f"built API reference: expected an anchor for every public name, got none for {gaps}"
    )
    for page in ("guides/scaling_out", "results", "benchmarks", "colab/lm_search"):
        assert (tmp_path / "site" / page / "index.html").exists(), page
