"""The flow_scaling reproduction end to end on a shrunken quick config (3 seeds)."""

import json
import os

import numpy as np
import pytest

from inferax.experiments import flow_scaling
from inferax.experiments.configs import flow_scaling as fs_config


def tiny_config():
    c = fs_config.get_config("quick")
    c.budgets = [16, 32]
    c.methods = ["random_search:ode", "rbf:ode", "rbf:vp"]
    c.classes = [0, 7]
    c.digits.hidden = 64
    c.digits.train_steps = 200
    c.digits.warmup_steps = 20
    c.digits.classifier_steps = 60
    return c


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("flow_scaling"))
    return workdir, flow_scaling.run(tiny_config(), workdir)


def test_results_budgets_and_report(results):
    workdir, res = results
    assert os.path.isfile(os.path.join(workdir, "flow_scaling.png"))
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert set(saved["methods"]) == {"base", "random_search:ode", "rbf:ode", "rbf:vp"}
    for method, per_budget in res["raw"].items():
        for budget, entry in per_budget.items():
            assert entry["nfe"] <= budget, (method, budget)
            assert len(entry["reward"]) == 3 and np.all(np.isfinite(entry["reward"]))
            assert np.all(np.asarray(entry["reward"]) <= 0.0)  # a log-probability
    # Best-of-N over more noises cannot score below one solve of the same first noise.
    rs = np.asarray(res["raw"]["random_search:ode"][32]["reward"])
    assert np.all(rs >= np.asarray(res["raw"]["base"][8]["reward"]) - 1e-5)
    text = flow_scaling.report(res)
    assert "| rbf |" in text and "rbf: VP SDE" not in text  # no linear entry: no VP claim
    # Method comparisons at the smallest and the largest budget, hacking at the largest.
    assert {"16 NFE: rbf:vp > rbf:ode", "32 NFE: rbf:vp > rbf:ode"} <= set(res["verdicts"])
    assert len(res["verdicts"]) == 7 and "hacking: searched reward rises (rbf:vp vs base)" in text
    rows = flow_scaling.summary(res)["rows"]
    assert rows and all(len(r) == 3 for r in rows)


def test_validate_names_the_field():
    c = tiny_config()
    c.methods = ["rbf:ve"]
    with pytest.raises(ValueError, match="config.methods"):
        flow_scaling.validate(c)
    c = tiny_config()
    c.budgets = [4]
    with pytest.raises(ValueError, match="config.budgets"):
        flow_scaling.validate(c)
