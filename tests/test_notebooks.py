"""The notebooks run top to bottom on quick settings and stay paired with their .py."""

import os
import pathlib

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
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_FLAGS", "")  # one device is enough here
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(COLAB)}}
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]  # fmt: skip
    assert not errors, errors
    assert os.environ["INFERAX_QUICK"] == "1"
