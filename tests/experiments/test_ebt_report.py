"""Every verdict of ebt_report comes out holds, fails, tie and not decidable on synthetic
per-seed results built for each outcome (no model is trained)."""

import math

import numpy as np
import pytest

from inferax.experiments import ebt_report, stats

SEEDS = 8  # Holm over 4 claims needs 2^-n < 0.05 / 4: n >= 7
CFG = {"claim_steps": 4, "candidates": [1, 4], "verify_steps": 4, "steps": [1, 4]}
# claim -> (claimed node path, baseline node path); lower MSE is better.
CLAIMS = {
    "4 steps vs 1 step": (("steps", 4), ("steps", 1)),
    "G=4 vs G=1 (4 steps)": (("candidates", 4), ("candidates", 1)),
    "EBT best (G=4) vs 1 step (compute gain; feed-forward gain is 0)": (
        ("candidates", 4), ("steps", 1)),
    "EBT best (G=4) vs feed-forward": (("candidates", 4), ("ff",)),
}  # fmt: skip
DIFFS = {  # improvement = baseline - claimed, per seed (baseline ~0.3: effect 0.015)
    stats.HOLDS: [0.05 + 0.001 * i for i in range(SEEDS)],
    stats.FAILS: [-0.05 - 0.001 * i for i in range(SEEDS)],
    stats.TIE: [0.001 * (1 if i % 2 else -1) for i in range(SEEDS)],
    stats.NOT_DECIDABLE: [0.05 * (1 if i % 2 else -1) for i in range(SEEDS)],
}


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def results_for(claim, outcome):
    rng = np.random.default_rng(0)

    def leaf():
        return {"mse": stats.t_interval(rng.uniform(0.25, 0.35, SEEDS))}

    node = {"steps": {1: leaf(), 4: leaf()}, "candidates": {1: leaf(), 4: leaf()}, "ff": leaf()}
    claimed, base = CLAIMS[claim]
    vals = np.asarray(_get(node, claimed)["mse"]["values"]) + DIFFS[outcome]
    _get(node, base)["mse"] = stats.t_interval(vals)
    return {"config": CFG, "seeds": list(range(SEEDS)), "digits": {"clean contexts": node}}


@pytest.mark.parametrize("claim", sorted(CLAIMS))
@pytest.mark.parametrize("outcome", list(DIFFS))
def test_verdict_outcomes(claim, outcome):
    res = results_for(claim, outcome)
    v = ebt_report.verdicts(res)["digits/clean contexts"]
    assert set(v) == set(CLAIMS)
    assert v[claim]["verdict"] == outcome, (claim, outcome, v[claim]["reason"])
    assert (
        v[claim]["family_size"] == 4 and v[claim]["noise_floor"] == ebt_report.NOISE_FLOORS["mse"]
    )
    # The summary and the report show the recomputed verdicts.
    row = ebt_report.summary(res)["rows"][0]
    assert row[0] == "digits/clean contexts" and f": {v[claim]['verdict']}" in row[2]


def test_non_finite_fails_and_config_overrides():
    claim = "EBT best (G=4) vs feed-forward"
    res = results_for(claim, stats.HOLDS)
    res["digits"]["clean contexts"]["ff"]["mse"] = stats.t_interval([math.nan] + [0.3] * 7)
    assert ebt_report.verdicts(res)["digits/clean contexts"][claim]["verdict"] == stats.FAILS
    res = results_for(claim, stats.HOLDS)
    res["config"] = {**CFG, "noise_floors": {"mse": 0.1}}  # 0.05 is within a floor of 0.1
    assert ebt_report.verdicts(res)["digits/clean contexts"][claim]["verdict"] == stats.TIE
    res = results_for(claim, stats.TIE)
    res["config"] = {**CFG, "effect_size_relative": 1e-4}
    assert ebt_report.verdicts(res)["digits/clean contexts"][claim]["verdict"] == (
        stats.NOT_DECIDABLE
    )
