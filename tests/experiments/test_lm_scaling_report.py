"""Every verdict of lm_scaling_report comes out holds, fails, tie and not decidable on
synthetic per-seed results built for each outcome (no training)."""

import ml_collections
import numpy as np
import pytest

from inferax.experiments import lm_scaling_report as rep
from inferax.experiments import stats

KS = [1, 2, 4, 8, 16, 32]
SEEDS = 8  # a family of 5 needs 2^-n < 0.05 / 5: n >= 7
OUTCOMES = (stats.HOLDS, stats.FAILS, stats.TIE, stats.NOT_DECIDABLE)


def config():
    return ml_collections.ConfigDict({"budgets": [1, 4, 8, 32], "num_problems": 16})


def law(k, a):
    return float(np.exp(a * k**-0.5))


def entry(i, *, gain=0.18, maj_gain=0.0, offset=0.0, auc=0.8, oracle=1.0):
    """One seed: coverage follows exp(a k^-0.5) up to k = 8, then rises by ``gain`` to
    k = 32 (+ ``offset`` at k = 32 alone); majority vote rises by ``maj_gain``."""
    a = -1.5 + 0.01 * i
    cov = {k: law(k, a) for k in KS}
    if gain is not None:
        cov[16], cov[32] = cov[8] + gain / 2, cov[8] + gain
    cov[32] += offset
    maj = {1: 0.3, 4: 0.4, 8: 0.4, 32: 0.4 + maj_gain}
    return {"coverage": cov, "accuracy": {"majority": maj}, "prm_auc": auc, "oracle_auc": oracle}


def alternating(center, half):
    return [center + half * (1 if i % 2 else -1) for i in range(SEEDS)]


# claim -> outcome -> per-seed keyword overrides of ``entry``.
FLOOR = 1 / 16
CASES = {
    "coverage_rises": {
        stats.HOLDS: {"gain": [0.3 + 0.01 * i for i in range(SEEDS)]},
        stats.FAILS: {"gain": [0.0] * SEEDS},
        stats.TIE: {"gain": alternating(FLOOR, 0.005)},
        stats.NOT_DECIDABLE: {"gain": [0.0, 0.3, 0.0, 0.25, 0.0, 0.01, 0.2, 0.0]},
    },
    "majority_plateaus": {
        stats.HOLDS: {"gain": [0.3] * SEEDS, "maj_gain": [0.0 + 0.01 * i for i in range(SEEDS)]},
        stats.FAILS: {"gain": [0.1] * SEEDS, "maj_gain": [0.4 + 0.01 * i for i in range(SEEDS)]},
        stats.TIE: {"gain": [0.2] * SEEDS, "maj_gain": alternating(0.2, 0.005)},
        stats.NOT_DECIDABLE: {"gain": [0.2] * SEEDS, "maj_gain": alternating(0.2, 0.4)},
    },
    "along_fitted_law": {
        stats.HOLDS: {"gain": [None] * SEEDS},
        stats.FAILS: {"gain": [None] * SEEDS, "offset": [0.15 + 0.005 * i for i in range(SEEDS)]},
        stats.TIE: {"gain": [None] * SEEDS, "offset": alternating(0.05, 0.003)},
        stats.NOT_DECIDABLE: {"gain": [None] * SEEDS, "offset": alternating(0.06, 0.1)},
    },
    "prm_above_chance": {
        stats.HOLDS: {"auc": [0.8 + 0.01 * i for i in range(SEEDS)]},
        stats.FAILS: {"auc": [0.3 + 0.01 * i for i in range(SEEDS)]},
        stats.TIE: {"auc": alternating(0.5, 0.01)},
        stats.NOT_DECIDABLE: {"auc": alternating(0.5, 0.3)},
    },
    "prm_below_oracle": {
        stats.HOLDS: {"auc": [0.8 + 0.01 * i for i in range(SEEDS)]},
        stats.FAILS: {"oracle": [0.6] * SEEDS, "auc": [0.9 + 0.005 * i for i in range(SEEDS)]},
        stats.TIE: {"oracle": [0.9] * SEEDS, "auc": alternating(0.9, 0.004)},
        stats.NOT_DECIDABLE: {"oracle": [0.7] * SEEDS, "auc": alternating(0.7, 0.25)},
    },
}


def entries(overrides: dict) -> list[dict]:
    return [entry(i, **{k: v[i] for k, v in overrides.items()}) for i in range(SEEDS)]


def test_every_claim_has_every_outcome():
    assert set(CASES) == set(rep.CLAIMS)
    v = rep.verdicts(config(), entries({}))
    assert set(v) == set(rep.CLAIMS)


@pytest.mark.parametrize("claim", sorted(CASES))
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_verdict_outcomes(claim, outcome):
    v = rep.verdicts(config(), entries(CASES[claim][outcome]))[claim]
    assert v["verdict"] == outcome, (claim, outcome, v["reason"])
    assert v["family_size"] == len(rep.CLAIMS)  # Holm over the difficulty's claims


def test_few_seeds_decide_nothing():
    """The quick config's 3 seeds cannot reach 5% in an exact test: nothing is decided."""
    few = entries({})[:3]
    for v in rep.verdicts(config(), few).values():
        assert v["verdict"] == stats.NOT_DECIDABLE, v


def test_held_out_residual_is_measured():
    cov = {k: law(k, -1.2) for k in KS}
    assert abs(rep.held_out_residual(cov)) < 1e-4
    cov[32] += 0.1
    assert rep.held_out_residual(cov) == pytest.approx(0.1, abs=1e-4)
    assert np.isnan(rep.held_out_residual({1: 0.2, 2: 0.3, 4: 0.4}))  # too few points
    with pytest.raises(ValueError, match="effect_sizes"):
        rep.effect_sizes(ml_collections.ConfigDict({"effect_sizes": {"nope": 1.0}}))


def test_undefined_metrics_are_not_decidable_but_a_diverged_metric_fails():
    """An AUC with one label class is undefined on this data: not decidable. A NaN that
    is a numerical failure still fails."""
    es = entries({"auc": [None] * SEEDS})
    v = rep.verdicts(config(), es)
    assert v["prm_above_chance"]["verdict"] == stats.NOT_DECIDABLE
    assert "one label class" in v["prm_below_oracle"]["reason"]
    assert v["coverage_rises"]["verdict"] == stats.HOLDS  # the other claims still decide
    broken = entries({"gain": [float("nan")] + [0.3] * (SEEDS - 1)})
    assert rep.verdicts(config(), broken)["coverage_rises"]["verdict"] == stats.FAILS
