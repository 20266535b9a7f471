"""Tests of the flow-search speed benchmark (``python -m benchmarks.flow_search``).

Speed ratios are not asserted (CPU timing on a shared machine is noisy); the
quick run is checked for every row, the NFE spent within each budget, the
reward evaluations reported, and RBF's two variants spending the same quota.
"""

from __future__ import annotations

import pytest

from benchmarks import common
from benchmarks import flow_search as bench


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "flow_search.md"
    report, rows = bench.run(quick=True, out=str(out))
    return report, rows, out


def test_every_method_and_budget_has_a_row(quick):
    report, rows, out = quick
    assert out.read_text().strip() == report.strip()
    table = common.parse_tables(report)[0]
    assert len(table) - 1 == len(rows) == 7
    for budget, name, nfe, evals, *_ in rows:
        assert 0 < nfe <= budget, (name, budget)
        assert evals > 0
    rbf = {name: nfe for budget, name, nfe, *_ in rows if "rbf" in name}
    one = rbf["rbf (vp, one at a time)"]
    assert all(nfe >= one for nfe in rbf.values())  # blocks may draw past the accepted one
    assert "RBF blocked" in report
