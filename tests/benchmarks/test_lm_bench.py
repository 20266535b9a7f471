"""Tests of the language-model benchmark (``benchmarks.lm``) on its quick sizes.

Timings are not asserted. What is checked (inside one quick run, so every side
compiles once): the recompute baseline decodes the same greedy tokens as the
sampler (the ratio compares equal work), the PyTorch port emits the same
tokens as ours at every N (it computes the same function), and the report has
its tables.
"""

from benchmarks import common
from benchmarks import lm as bench


def test_quick_run_sides_agree_and_report():
    report, out = bench.run(quick=True, repeats=2, budget_s=0.0)
    assert out["same_tokens"] and out["speedup"] > 0 and out["overhead"] > 0
    tables = common.parse_tables(report)
    assert len(tables[0]) == 3 and "same tokens" in tables[0][1][-1]
    if common.installed("torch"):
        assert len(tables) == 2 and len(tables[1]) == 1 + len(bench.QUICK.torch_ns)
        assert all(row[-1] == "same tokens" for row in tables[1][1:])
    else:
        assert "PyTorch not installed" in report
