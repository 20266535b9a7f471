"""Every verdict of ebt_report (the four claims at each model size and the three size-trend
claims) comes out holds, fails, tie and not decidable on synthetic per-seed results built
for each outcome (no model is trained)."""

import math

import numpy as np
import pytest

from inferax.experiments import ebt, ebt_report, stats

SEEDS = 8  # Holm over 4 claims needs 2^-n < 0.05 / 4: n >= 7
SMALL, LARGE = 8, 32
CFG = {"claim_steps": 4, "candidates": [1, 4], "verify_steps": 4, "steps": [1, 4]}
# claim -> (claimed node path, baseline node path); lower MSE is better.
CLAIMS = {
    "4 steps vs 1 step": (("steps", 4), ("steps", 1)),
    "G=4 vs G=1 (4 steps)": (("candidates", 4), ("candidates", 1)),
    "EBT best (G=4) vs 1 step (compute gain; feed-forward gain is 0)": (
        ("candidates", 4), ("steps", 1)),
    "EBT best (G=4) vs feed-forward": (("candidates", 4), ("ff",)),
}  # fmt: skip
# trend claim -> (EBT leaf at the largest size set so that the claim's per-seed
# improvement is DIFF, the leaf it is measured against): gain = metric(against) - metric(leaf)
TREND = {
    "EBT's improvement from d=8 to d=32 (G=4) exceeds the feed-forward model's": None,
    "EBT's gain from 4 steps over 1 step grows from d=8 to d=32": (("steps", 4), ("steps", 1)),
    "EBT's gain from self-verification (G=4 vs G=1) grows from d=8 to d=32": (
        ("candidates", 4), ("candidates", 1)),
}  # fmt: skip
DIFFS = {  # improvement per seed (baseline ~0.3: effect 0.015)
    stats.HOLDS: [0.05 + 0.001 * i for i in range(SEEDS)],
    stats.FAILS: [-0.05 - 0.001 * i for i in range(SEEDS)],
    stats.TIE: [0.001 * (1 if i % 2 else -1) for i in range(SEEDS)],
    stats.NOT_DECIDABLE: [0.05 * (1 if i % 2 else -1) for i in range(SEEDS)],
}


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _v(node, path):
    return np.asarray(_get(node, path)["mse"]["values"])


def _set(node, path, values):
    _get(node, path)["mse"] = stats.t_interval(values)


def _results(sizes):
    return {"config": CFG, "seeds": list(range(SEEDS)), "digits": {"clean contexts": sizes}}


def _random_sizes():
    rng = np.random.default_rng(0)

    def leaf():
        return {"mse": stats.t_interval(rng.uniform(0.25, 0.35, SEEDS))}

    return {d: {"steps": {1: leaf(), 4: leaf()}, "candidates": {1: leaf(), 4: leaf()},
                "ff": leaf()} for d in (SMALL, LARGE)}  # fmt: skip


def results_for(claim, outcome):
    sizes = _random_sizes()
    node = sizes[LARGE]
    claimed, base = CLAIMS[claim]
    _set(node, base, _v(node, claimed) + DIFFS[outcome])
    return _results(sizes)


def trend_results_for(claim, outcome):
    sizes = _random_sizes()
    small, large = sizes[SMALL], sizes[LARGE]
    diff = np.asarray(DIFFS[outcome])
    if TREND[claim] is None:  # EBT gain (best at d=8 - best at d=32) = FF gain + diff
        best = ("candidates", 4)
        ff_gain = _v(small, ("ff",)) - _v(large, ("ff",))
        _set(large, best, _v(small, best) - ff_gain - diff)
    else:  # gain at d=32 = gain at d=8 + diff
        leaf, against = TREND[claim]
        gain_small = _v(small, against) - _v(small, leaf)
        _set(large, leaf, _v(large, against) - gain_small - diff)
    return _results(sizes)


@pytest.mark.parametrize("claim", sorted(CLAIMS))
@pytest.mark.parametrize("outcome", list(DIFFS))
def test_verdict_outcomes(claim, outcome):
    res = results_for(claim, outcome)
    out = ebt_report.verdicts(res)
    assert set(out) == {"digits/clean contexts/d=8", "digits/clean contexts/d=32",
                        "digits/clean contexts/trend d=8->32"}  # fmt: skip
    v = out["digits/clean contexts/d=32"]
    assert set(v) == set(CLAIMS)
    assert v[claim]["verdict"] == outcome, (claim, outcome, v[claim]["reason"])
    assert (
        v[claim]["family_size"] == 4 and v[claim]["noise_floor"] == ebt_report.NOISE_FLOORS["mse"]
    )
    # The summary and the report show the recomputed verdicts.
    row = {r[0]: r for r in ebt_report.summary(res)["rows"]}["digits/clean contexts/d=32"]
    assert f": {v[claim]['verdict']}" in row[2]


@pytest.mark.parametrize("claim", sorted(TREND))
@pytest.mark.parametrize("outcome", list(DIFFS))
def test_trend_verdict_outcomes(claim, outcome):
    res = trend_results_for(claim, outcome)
    v = ebt_report.verdicts(res)["digits/clean contexts/trend d=8->32"]
    assert set(v) == set(TREND)
    assert v[claim]["verdict"] == outcome, (claim, outcome, v[claim]["reason"])
    assert v[claim]["family_size"] == 3
    np.testing.assert_allclose(v[claim]["improvement"]["values"], DIFFS[outcome], atol=1e-12)
    if outcome == stats.NOT_DECIDABLE:
        assert v[claim]["mde"] > v[claim]["effect_size"]
    # ebt.verdicts (what results.json stores) is the report's.
    assert ebt.verdicts(res)["digits/clean contexts/trend d=8->32"][claim]["verdict"] == outcome
    md = ebt_report.report({**res, "digits": {**res["digits"], "scalars": _scalars()}})
    assert claim in md and "| inference | d = 8 | d = 32 |" in md
    row = {r[0]: r for r in ebt_report.summary(res)["rows"]}["digits/clean contexts/trend d=8->32"]
    assert "d=8 -> d=32" in row[1] and f": {outcome}" in row[2]


def _scalars():
    leaf = stats.t_interval([0.1] * SEEDS)
    keys = ("alpha", "train_loss_final", "ff_train_loss_final")
    return {d: {k: leaf for k in keys} for d in (SMALL, LARGE)}


def test_one_size_has_no_trend_and_json_keys_work():
    res = results_for("4 steps vs 1 step", stats.HOLDS)
    del res["digits"]["clean contexts"][SMALL]
    assert set(ebt_report.verdicts(res)) == {"digits/clean contexts/d=32"}
    # After a JSON round trip the sizes and step counts are strings.
    res = trend_results_for(sorted(TREND)[0], stats.HOLDS)
    js = {str(d): {b: ({str(k): x for k, x in n[b].items()} if b != "ff" else n[b])
                   for b in n} for d, n in res["digits"]["clean contexts"].items()}  # fmt: skip
    a = ebt_report.verdicts(res)
    b = ebt_report.verdicts({**res, "digits": {"clean contexts": js}})
    assert {k: {c: x["verdict"] for c, x in v.items()} for k, v in a.items()} == {
        k: {c: x["verdict"] for c, x in v.items()} for k, v in b.items()}  # fmt: skip


def test_non_finite_fails_and_config_overrides():
    claim = "EBT best (G=4) vs feed-forward"
    key = "digits/clean contexts/d=32"
    res = results_for(claim, stats.HOLDS)
    res["digits"]["clean contexts"][LARGE]["ff"]["mse"] = stats.t_interval([math.nan] + [0.3] * 7)
    assert ebt_report.verdicts(res)[key][claim]["verdict"] == stats.FAILS
    res = results_for(claim, stats.HOLDS)
    res["config"] = {**CFG, "noise_floors": {"mse": 0.1}}  # 0.05 is within a floor of 0.1
    assert ebt_report.verdicts(res)[key][claim]["verdict"] == stats.TIE
    res = results_for(claim, stats.TIE)
    res["config"] = {**CFG, "effect_size_relative": 1e-4}
    assert ebt_report.verdicts(res)[key][claim]["verdict"] == stats.NOT_DECIDABLE


def test_quick_and_full_configs_pass_the_schema_with_three_sizes():
    from inferax.experiments import schema
    from inferax.experiments.configs import ebt as ebt_config

    for variant in ("quick", "full"):
        c = ebt_config.get_config(variant)
        schema.check(c, "ebt")
        for t in ("digits", "tokens"):
            assert len(c[t].d_models) == 3
        assert c.effect_size_relative == ebt_report.EFFECT_SIZE_RELATIVE
        assert dict(c.noise_floors) == ebt_report.NOISE_FLOORS
    assert 2.0 ** -ebt_config.get_config("full").num_seeds < stats.ALPHA / 4
