"""The lm_scaling reproduction end to end on a shrunken quick config (2 seeds, tiny models).

What is checked: the files, the structure of results.json (accuracy by method,
budget and difficulty, per-seed values kept), that the numbers agree with
each other where they must (N = 1 is one sample for every selection method,
pass@1 is the single-sample accuracy, coverage rises with k), the cached
models, and validate's errors.
"""

import json
import os

import numpy as np
import pytest

from inferax.experiments import lm_scaling
from inferax.experiments.configs import lm_scaling as lm_config


def tiny_config():
    c = lm_config.get_config("quick")
    c.num_seeds = 2
    c.difficulty = [2]
    c.budgets = [1, 2, 4]
    c.num_samples = 8
    c.num_problems = 4
    c.lm.num_layers = 1
    c.lm.d_model = 32
    c.lm.train_difficulty = (2, 2)
    c.lm.num_train = 200
    c.lm.train_steps = 40
    c.prm.d_model = 16
    c.prm.num_problems = 8
    c.prm.samples_per_problem = 2
    c.prm.train_steps = 20
    return c


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("lm_scaling"))
    return workdir, lm_scaling.run(tiny_config(), workdir)


def test_files_results_and_consistency(results):
    workdir, res = results
    for name in ["results.json", "lm_scaling.log", "accuracy_vs_n.png", "coverage_fit.png"]:
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    d = saved["difficulty"]["2"]
    assert set(d["accuracy"]) == set(lm_scaling.METHODS)
    for m, by_budget in d["accuracy"].items():
        assert set(by_budget) == {"1", "2", "4"}, m
        for iv in by_budget.values():
            assert len(iv["values"]) == 2 and all(0 <= v <= 1 for v in iv["values"])
    # N = 1: every selection method returns the one sample's answer
    ones = {m: d["accuracy"][m]["1"]["values"] for m in lm_scaling.METHODS}
    assert all(v == ones["majority"] for v in ones.values())
    for seed in range(2):
        entry = d["per_seed"][seed]
        cov = entry["coverage"]
        # coverage is non-decreasing in k; pass@1 is the single-sample accuracy
        assert all(
            cov[a] <= cov[b] + 1e-12 for a, b in zip(["1", "2", "4"], ["2", "4", "8"], strict=True)
        )
        assert entry["single_sample"] == pytest.approx(cov["1"])
        # the oracle separates perfectly (or the labels have one class: NaN)
        oracle = entry["oracle_auc"]
        assert oracle is None or np.isnan(oracle) or oracle == 1.0
    assert set(d["verdicts"]) == {
        "coverage_rises",
        "majority_plateaus",
        "majority_below_coverage",
        "along_fitted_law",
        "prm_between_chance_and_oracle",
    }
    assert d["tokens"]["4"]["mean"] >= d["tokens"]["1"]["mean"] * 3.9
    s = lm_scaling.summary(res)
    assert s["claim"] and len(s["rows"]) == 5
    assert "| method |" in lm_scaling.report(res)
    assert len(os.listdir(os.path.join(workdir, "models", "lm"))) == 1


def test_validate_rejects_bad_fields():
    for field, value, match in [
        ("difficulty", [1], "difficulty"),
        ("budgets", [1, 64], "budgets"),
        ("aggregation", "mean", "aggregation"),
        ("temperature", 0.0, "temperature"),
    ]:
        c = tiny_config()
        c[field] = value
        with pytest.raises(ValueError, match=match):
            lm_scaling.validate(c)
    c = tiny_config()
    c.difficulty = [3]
    with pytest.raises(ValueError, match="lm.train_difficulty"):
        lm_scaling.validate(c)
