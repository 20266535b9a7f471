"""MkDocs hooks: pages that include the README's sections and other repository files.

A page writes ``<!-- include: README.md#Scaling out -->`` (the section whose
heading starts with that text, down to the next heading of the same or a higher
level) or ``<!-- include: benchmarks/RESULTS.md -->`` (a whole file, its first
heading dropped), so the site shows the README's text and results as they are
committed, without a second copy to keep in step. Links in included text are
rewritten: to the site's page for files the site has (the notebooks,
benchmarks/RESULTS.md, the README), else to the file in the repository.
The notebooks (``colab/*.ipynb``) are added to the site at their repository paths
and rendered, not executed, by mkdocs-jupyter (the test suite executes them).
"""

from __future__ import annotations

import os
import posixpath
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r"<!-- include: ([^#>]+?)(?:#([^>]+?))? -->")
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")
SITE_PAGES = {"benchmarks/RESULTS.md": "benchmarks.md", "README.md": "index.md"}
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(ROOT, "colab")) if f.endswith(".ipynb"))


# pyproject.toml maps inferax.* onto folders at the repository root; griffe (which
# reads the sources for mkdocstrings) needs one tree, so the build links one up.
PACKAGES = {
    "": "_inferax",
    "models": "models",
    "sampling": "sampling",
    "search": "search",
    "experiments": "experiments",
}
SOURCE_TREE = os.path.join(ROOT, "build", "docs_src", "inferax")


def on_config(config):
    os.makedirs(SOURCE_TREE, exist_ok=True)
    for sub, folder in PACKAGES.items():
        names = ["__init__.py"] if sub == "" else [sub]
        for name in names:
            link = os.path.join(SOURCE_TREE, name)
            target = os.path.join(ROOT, folder, name) if sub == "" else os.path.join(ROOT, folder)
            if os.path.islink(link) and os.readlink(link) == target:
                continue
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(target, link)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which converts them
def on_files(files, config):
    for name in NOTEBOOKS:
        files.append(File(f"colab/{name}", ROOT, config["site_dir"], config["use_directory_urls"]))
    return files


def section(text: str, heading: str, path: str) -> str:
    lines = text.splitlines()
    fence = False
    start = level = None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#+) (.*)", line)
        if m is None:
            continue
        if start is None and m.group(2).startswith(heading):
            start, level = i, len(m.group(1))
        elif start is not None and len(m.group(1)) <= level:
            return "\n".join(lines[start:i])
    if start is None:
        raise ValueError(f"{path}: expected a heading starting with {heading!r}, found none")
    return "\n".join(lines[start:])


def _link(target: str, page_uri: str, repo_url: str) -> str:
    path, _, anchor = target.partition("#")
    anchor = f"#{anchor}" if anchor else ""
    if path.startswith("colab/") and path.endswith(".ipynb"):
        site = path
    else:
        site = SITE_PAGES.get(path)
    if site is None:
        return f"{repo_url}/blob/main/{path}{anchor}"
    return posixpath.relpath(site, posixpath.dirname(page_uri) or ".") + anchor


def on_page_markdown(markdown, page, config, files):
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def include(m):
        path, heading = m.group(1).strip(), m.group(2)
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        if heading:
            text = section(text, heading.strip(), path)
        else:
            text = re.sub(r"\A# .*\n", "", text)
        return LINK.sub(lambda l: f"]({_link(l.group(1), page.file.src_uri, repo_url)})", text)

    return INCLUDE.sub(include, markdown)
