"""Tests of the step-level LM search benchmark (``benchmarks.lm_search``), quick sizes.

Timings are not asserted. One quick run (a module fixture, so every side compiles
once) must show: the cache gather returns the drawn rows of every leaf (tokens,
logits, scores, the layer-major KV cache), the compiled particle filter and the
Python loop over the jitted SMC step end with the same particles, scores and
weights, the filter round decodes, and the report's table has its three rows.
The row check itself is tested on a handmade population (it must see a wrong
cache row).
"""

import math

import numpy as np
import pytest

from benchmarks import common
from benchmarks import lm_search as bench


@pytest.fixture(scope="module")
def quick_run():
    return bench.run(quick=True, repeats=2, budget_s=0.0)


def test_gather_returns_the_drawn_rows_of_every_leaf(quick_run):
    _, out = quick_run
    assert out["gathered_rows"] is True
    assert math.isfinite(out["gather_ratio"]) and out["gather_ratio"] > 0


def test_compiled_filter_and_python_loop_give_the_same_particles(quick_run):
    _, out = quick_run
    assert out["same_particles"] is True
    assert math.isfinite(out["loop_ratio"]) and out["loop_ratio"] > 0


def test_filter_round_decodes_and_report_has_its_rows(quick_run):
    report, out = quick_run
    assert out["decode_steps"] > 0 and math.isfinite(out["round_ratio"])
    tables = common.parse_tables(report)
    assert len(tables) == 1 and len(tables[0]) == 1 + 3  # header + 3 comparisons
    checks = [row[-1] for row in tables[0][1:]]
    assert checks[0] == "gathered rows"
    assert checks[1] == f"{out['decode_steps']} decode steps, {bench.QUICK.n} PRM rows"
    assert checks[2] == "same particles"


def test_row_check_sees_a_wrong_cache_row():
    rng = np.random.default_rng(0)
    pop = {
        "cache": rng.normal(size=(4, 4, 3)),
        "shared": np.arange(3),
        "tokens": np.arange(8).reshape(4, 2),
    }
    axes = [1, None, 0]  # tree_leaves order: cache (layer-major), shared, tokens
    idx = np.array([3, 3, 0, 1])
    good = {"cache": pop["cache"][:, idx], "shared": pop["shared"], "tokens": pop["tokens"][idx]}
    assert bench.same_rows(good, pop, idx, axes)
    bad_cache = dict(good, cache=pop["cache"][:, idx[::-1]])
    assert not bench.same_rows(bad_cache, pop, idx, axes)
    assert not bench.same_rows(dict(good, tokens=pop["tokens"][idx[::-1]]), pop, idx, axes)
    assert not bench.same_rows(good, pop, idx, [0, None, 0])  # cache gathered on the wrong axis
