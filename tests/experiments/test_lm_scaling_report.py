"""Every verdict of lm_scaling_report comes out holds, fails, tie and not decidable on
synthetic per-problem results built for each outcome (no training). The paired units
are the held-out problems, pooled over the seeds."""

import ml_collections
import numpy as np
import pytest

from inferax.experiments import lm_scaling_report as rep
from inferax.experiments import stats

KS = [1, 2, 4, 8, 16, 32]
SEEDS, PROBLEMS = 2, 8
UNITS = SEEDS * PROBLEMS  # a family of 5 needs 2^-n < 0.05 / 5: n >= 7
FLOOR = 1 / UNITS
OUTCOMES = (stats.HOLDS, stats.FAILS, stats.TIE, stats.NOT_DECIDABLE)


def config():
    return ml_collections.ConfigDict({"budgets": [1, 4, 8, 32], "num_problems": PROBLEMS})


def law(k, a=-1.5):
    return float(np.exp(a * k**-0.5))


def ramp(x0, step=0.01):
    return [x0 + step * u for u in range(UNITS)]


def alternating(center, half):
    return [center + half * (1 if u % 2 else -1) for u in range(UNITS)]


def entries(gain=None, offset=None, cov_gain=None, maj_gain=None, auc=None, oracle=None,
            problems=PROBLEMS):  # fmt: skip
    """Per seed, per-problem values (index u = seed * problems + j over the pooled units):
    coverage follows exp(-1.5 k^-0.5) up to k = 8, then rises by ``gain`` to k = 32
    (None: follows the law; ``offset`` added at k = 32 alone); the disjoint-halves gains
    of coverage and majority vote; the within-problem AUCs."""
    n = SEEDS * problems

    def col(v, default):
        return [default] * n if v is None else list(v)[:n]

    gain, offset = col(gain, None), col(offset, 0.0)
    cov_gain, maj_gain = col(cov_gain, 0.3), col(maj_gain, 0.0)
    auc, oracle = col(auc, 0.8), col(oracle, 1.0)
    out = []
    for s in range(SEEDS):
        us = range(s * problems, (s + 1) * problems)
        cov = {k: [law(k) for _ in us] for k in KS}
        for j, u in enumerate(us):
            if gain[u] is not None:
                cov[16][j], cov[32][j] = cov[8][j] + gain[u] / 2, cov[8][j] + gain[u]
            cov[32][j] += offset[u]
        out.append({"per_problem": {
            "coverage": cov, "single": [0.3] * problems,
            "halves": {"from": 1, "to": 4, "coverage_gain": [cov_gain[u] for u in us],
                       "majority_gain": [maj_gain[u] for u in us]},
            "auc": {"learned": [auc[u] for u in us], "oracle": [oracle[u] for u in us]},
            "correct": {"majority": {b: [1] * problems for b in (1, 4, 8, 32)}}}})  # fmt: skip
    return out


# claim -> outcome -> keyword arguments of ``entries`` (per pooled problem).
CASES = {
    "coverage_rises": {
        stats.HOLDS: {"gain": ramp(0.3)},
        stats.FAILS: {"gain": [0.0] * UNITS},
        stats.TIE: {"gain": alternating(FLOOR, 0.005)},
        stats.NOT_DECIDABLE: {"gain": alternating(FLOOR, 0.15)},
    },
    "majority_plateaus": {
        stats.HOLDS: {"maj_gain": ramp(0.0)},
        stats.FAILS: {"cov_gain": [0.1] * UNITS, "maj_gain": ramp(0.4)},
        stats.TIE: {"cov_gain": [0.2] * UNITS, "maj_gain": alternating(0.2, 0.005)},
        stats.NOT_DECIDABLE: {"cov_gain": [0.2] * UNITS, "maj_gain": alternating(0.2, 0.4)},
    },
    "along_fitted_law": {
        stats.HOLDS: {},
        stats.FAILS: {"offset": ramp(0.15, 0.005)},
        stats.TIE: {"offset": alternating(0.05, 0.003)},
        stats.NOT_DECIDABLE: {"offset": alternating(0.06, 0.1)},
    },
    "prm_above_chance": {
        stats.HOLDS: {"auc": ramp(0.8)},
        stats.FAILS: {"auc": ramp(0.3)},
        stats.TIE: {"auc": alternating(0.5, 0.01)},
        stats.NOT_DECIDABLE: {"auc": alternating(0.5, 0.3)},
    },
    "prm_below_oracle": {
        stats.HOLDS: {"auc": ramp(0.8)},
        stats.FAILS: {"oracle": [0.6] * UNITS, "auc": ramp(0.9, 0.005)},
        stats.TIE: {"oracle": [0.9] * UNITS, "auc": alternating(0.9, 0.004)},
        stats.NOT_DECIDABLE: {"oracle": [0.7] * UNITS, "auc": alternating(0.7, 0.25)},
    },
}


def test_every_claim_has_every_outcome():
    assert set(CASES) == set(rep.CLAIMS)
    v = rep.verdicts(config(), entries())
    assert set(v) == set(rep.CLAIMS)


@pytest.mark.parametrize("claim", sorted(CASES))
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_verdict_outcomes(claim, outcome):
    v = rep.verdicts(config(), entries(**CASES[claim][outcome]))[claim]
    assert v["verdict"] == outcome, (claim, outcome, v["reason"])
    assert v["family_size"] == len(rep.CLAIMS)  # Holm over the difficulty's claims
    assert v["n"] == UNITS  # paired over problems pooled over seeds
    assert v.get("noise_floor") in (0.0, 0.01, pytest.approx(FLOOR))


def test_few_problems_decide_nothing():
    """4 pooled problems cannot reach 5% / 5 in an exact test: nothing is decided."""
    for v in rep.verdicts(config(), entries(problems=2)).values():
        assert v["verdict"] == stats.NOT_DECIDABLE, v


def test_pooling_and_residuals():
    es = entries(gain=ramp(0.3))
    g = rep.pooled(es, "coverage", 32) - rep.pooled(es, "coverage", 8)
    np.testing.assert_allclose(g, ramp(0.3))
    assert rep.num_units(es) == UNITS
    r, mean = rep.law_residuals(entries(offset=[0.1] * UNITS))
    assert r.shape == (UNITS,) and mean == pytest.approx(0.1, abs=1e-3)
    cov = {k: law(k, -1.2) for k in KS}
    assert abs(rep.held_out_residual(cov)) < 1e-4
    cov[32] += 0.1
    assert rep.held_out_residual(cov) == pytest.approx(0.1, abs=1e-4)
    assert np.isnan(rep.held_out_residual({1: 0.2, 2: 0.3, 4: 0.4}))  # too few points
    with pytest.raises(ValueError, match="effect_sizes"):
        rep.effect_sizes(ml_collections.ConfigDict({"effect_sizes": {"nope": 1.0}}))


def test_undefined_metrics_are_not_decidable_but_a_diverged_metric_fails():
    """No problem whose steps have both labels: the AUC is undefined, not decidable. A
    NaN that is a numerical failure still fails."""
    es = entries()
    for e in es:
        e["per_problem"]["auc"] = {"learned": [], "oracle": []}
    v = rep.verdicts(config(), es)
    assert v["prm_above_chance"]["verdict"] == stats.NOT_DECIDABLE
    assert "both labels" in v["prm_below_oracle"]["reason"]
    assert v["coverage_rises"]["verdict"] == stats.HOLDS  # the other claims still decide
    broken = entries(gain=[float("nan")] + ramp(0.3)[1:])
    assert rep.verdicts(config(), broken)["coverage_rises"]["verdict"] == stats.FAILS


def test_rows_report_the_mde():
    """Every verdict row names its MDE; an undecided one reads 'not decidable at this
    size, MDE = ...'."""
    es = entries(cov_gain=[0.2] * UNITS, maj_gain=alternating(0.2, 0.4))
    for e in es:
        e.update(accuracy={}, tokens={b: 10.0 for b in (1, 4, 8, 32)}, fit=None,
                 prm_auc=0.7, oracle_auc=1.0)  # fmt: skip
    models = {"lm_loss": [1.0], "rm_loss": [0.5], "prm_data_correct": 0.5}
    c = config()
    c.seed, c.num_seeds = 0, SEEDS
    res = rep.collect(c, {2: es}, models)
    rows = rep.summary(res)["rows"]
    assert len(rows) == len(rep.CLAIMS) and all("MDE" in r[2] for r in rows)
    maj = next(r for r in rows if "majority" in r[0])
    assert maj[2].startswith(f"{stats.NOT_DECIDABLE}, MDE = ") and "problems" in maj[2]
    assert res["difficulty"][2]["num_problems"] == UNITS
    assert "| method |" in rep.report({**res, "plots": []})
