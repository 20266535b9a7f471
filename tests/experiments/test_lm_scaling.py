"""The lm_scaling reproduction end to end on a shrunken quick config (2 seeds, tiny models).

What is checked: the files, the structure of results.json (accuracy by method,
budget and difficulty, per-problem outcomes kept and pooled over seeds), that the numbers agree with
each other where they must (N = 1 is one sample for every selection method,
pass@1 is the single-sample accuracy, coverage rises with k), the cached
models, and validate's errors.
"""

import json
import os

import numpy as np
import pytest

from inferax.experiments import lm_scaling, lm_scaling_report, stats
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
    c.search.methods = ["beam", "particle_filter"]  # the others: tests/search
    c.search.budgets = [4]  # one budget: 4 compiled searches (2 methods x 2 PRMs)
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
    units = 2 * 4  # seeds x problems: the paired units of the verdicts
    assert d["num_problems"] == units
    for m, by_budget in d["accuracy"].items():
        assert set(by_budget) == {"1", "2", "4"}, m
        for iv in by_budget.values():
            assert len(iv["values"]) == units and set(iv["values"]) <= {0.0, 1.0}
    # the pooled per-problem outcomes are the per-seed ones, concatenated
    per = [e["per_problem"]["correct"]["majority"]["4"] for e in d["per_seed"]]
    assert d["accuracy"]["majority"]["4"]["values"] == per[0] + per[1]
    for seed in range(2):
        e = d["per_seed"][seed]
        assert np.mean(e["per_problem"]["correct"]["bon_oracle"]["2"]) == pytest.approx(
            e["accuracy"]["bon_oracle"]["2"]
        )
        h = e["per_problem"]["halves"]  # 8 samples: halves of 4, gains N = 1 -> 4
        assert (h["from"], h["to"]) == (1, 4) and len(h["coverage_gain"]) == 4
        assert all(-1 <= g <= 1 for g in h["coverage_gain"] + h["majority_gain"])
        auc = e["per_problem"]["auc"]
        assert len(auc["learned"]) == len(auc["oracle"]) <= 4
        assert all(a == 1.0 for a in auc["oracle"])
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
    assert set(d["verdicts"]) == set(lm_scaling_report.CLAIMS)
    # Outcomes of each verdict on synthetic data: tests/experiments/test_lm_scaling_report.py.
    for v in d["verdicts"].values():
        assert v["verdict"] in stats.VERDICTS and v["reason"]
        assert "improvement" not in v or v["improvement"]["n"] <= units
    assert d["tokens"]["4"]["mean"] >= d["tokens"]["1"]["mean"] * 3.9
    s = lm_scaling.summary(res)
    assert s["claim"] and len(s["rows"]) >= 5 + 3  # the search part adds its rows
    assert all("MDE" in row[2] for row in s["rows"][:5] if "undefined" not in row[2])
    text = lm_scaling.report(res)
    assert "| method |" in text and "Step-level search" in text and "Compute-optimal" in text
    assert os.path.getsize(os.path.join(workdir, "search_accuracy_vs_n.png")) > 0
    assert len(os.listdir(os.path.join(workdir, "models", "lm"))) == 1


def test_search_part_budgets_and_consistency(results):
    """Every search ran with both PRMs at both budgets on both seeds, within its budget;
    the best-of-N baseline is the repeated-sampling pool's; verdicts exist."""
    _, res = results
    sr = res["search"]["difficulty"][2]
    c = tiny_config()
    _, new = lm_scaling.lm_search.shapes(c)
    rounds = lm_scaling.lm_search.step_config(c).max_steps
    for kind in ("learned", "oracle"):
        table = sr["accuracy"][kind]
        assert {"beam", "particle_filter", "bon"} <= set(table)
        for m in ("beam", "particle_filter"):
            for n in (4,):
                iv = table[m][n]
                assert len(iv["values"]) == 8 and set(iv["values"]) <= {0.0, 1.0}
                tokens = sr["tokens"][m][kind][n]["values"]
                # A particle is one sequence; beam search refills its pool with copies of the
                # survivors when beams finish, so each of its rounds can spend N steps.
                cap = n * new if m == "particle_filter" else n * new * rounds
                assert all(0 < t <= cap for t in tokens), (m, kind, n, tokens)
        # The baseline is best-of-N from the pool, at the same N.
        key = {"learned": "bon_prm", "oracle": "bon_oracle"}[kind]
        base = res["difficulty"][2]["accuracy"][key][4]["values"]
        assert table["bon"][4]["values"] == base  # the same problems, in the same order
        for e in sr["per_seed"]:
            assert len(e["correct"]["particle_filter"][kind][4]) == 4
    v = sr["verdicts"]
    assert {"pf_vs_beam_at_4", "pf_vs_bon_at_4", "beam_learned_below_oracle",
            "oracle_gap_closes", "beats_single_sample"} <= set(v)  # fmt: skip
    assert set(sr["optimal"]) == {"learned", "oracle"}


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
    for field, value, match in [
        ("methods", ["greedy"], "search.methods"),
        ("prms", [], "search.prms"),
        ("budgets", [1, 8], "search.budgets"),  # not a subset of budgets [1, 2, 4]
        ("tau", 0.0, "search.tau"),
        ("mcts_candidates", 1, "search.mcts_candidates"),
    ]:
        c = tiny_config()
        c.search[field] = value
        with pytest.raises(ValueError, match=match):
            lm_scaling.validate(c)
