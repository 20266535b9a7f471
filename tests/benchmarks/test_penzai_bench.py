"""Tests of the penzai decoding benchmark (``benchmarks.penzai``) on its quick sizes.

No measured time is asserted (busy CI machines): only that every time and ratio
is a positive finite number. What is checked, in one quick run (a module
fixture, so every side compiles once): for both families (Gemma-2-style and
Llama-style), inferax's ``decoding.sample``, penzai's own sampler, penzai's
sampling mode in one jit and the bare decode steps emit the same greedy tokens,
and the report's table has one row per family and side.
"""

import math

import penzai  # noqa: F401,E402  (the test extra installs it; a missing one is a failure)
import pytest

from benchmarks import common  # noqa: E402
from benchmarks import penzai as bench  # noqa: E402

pytestmark = pytest.mark.slow  # four sides compiled for two models: ~30-60 s on 2 cores


@pytest.fixture(scope="module")
def quick_run():
    return bench.run(quick=True, repeats=2, budget_s=0.0)


def test_every_side_decodes_the_same_greedy_tokens(quick_run):
    _, results = quick_run
    assert set(results) == set(bench.QUICK.families)
    for family, r in results.items():
        assert r["same_tokens"] == {side: True for side in bench.SIDES}, family


def test_report_structure_and_values_are_numbers(quick_run):
    report, results = quick_run
    (table,) = common.parse_tables(report)
    assert table[0][:2] == ["model", "side"]
    rows = table[1:]
    assert len(rows) == len(bench.QUICK.families) * len(bench.SIDES)
    assert [row[1] for row in rows] == list(bench.SIDES) * len(bench.QUICK.families)
    assert all(row[-1] == "same tokens" for row in rows if row[1] != "inferax")
    assert "inferax / penzai sampler" in report and "inferax / bare" in report
    for r in results.values():
        for value in (*r["ratios"].values(), *r["median_s"].values()):
            assert math.isfinite(value) and value > 0
        assert r["ratios"]["inferax"] == 1.0
