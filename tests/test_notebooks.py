"""The notebooks run top to bottom on quick settings and stay paired with their .py."""

import os
import pathlib
import re

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {COLAB}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ipynb_matches_its_py_pair(path):
    nb = nbformat.read(path, as_version=4)
    paired = jupytext.read(path.with_suffix(".py"))
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    code_py = [c.source for c in paired.cells if c.cell_type == "code"]
    assert code == code_py, f"{path.name} is out of sync: run `jupytext --sync {path}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("INFERAX_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: PNG outputs
    # One device is enough here; keep conftest's cheap-compilation flags.
    fast = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    monkeypatch.setenv("XLA_FLAGS", " ".join(fast))
    nb = nbformat.read(path, as_version=4)
    shows = sum("plt.show()" in c.source for c in nb.cells if c.cell_type == "code")
    # A probe cell appended at the end: did the kernel see the quick setting?
    nb.cells.append(nbformat.v4.new_code_cell("print('QUICK =', QUICK)"))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(COLAB)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    # Every code cell ran, in order.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    # Every plt.show() rendered a figure into the notebook.
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert shows > 0 and len(images) >= shows, (shows, len(images))
    # What the notebook printed is numbers, not NaN/inf, and it ran the quick settings.
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), text
    assert code[-1].outputs[0]["text"].strip() == "QUICK = True"
