"""Every verdict of flow_scaling.verdicts comes out holds, fails, tie and not decidable on
synthetic per-seed results built for each outcome (no model is trained)."""

import ml_collections
import numpy as np
import pytest

from inferax.experiments import flow_scaling, stats

SEEDS = 9  # a family of 7 needs 2^-n < 0.05 / 7: n >= 8
B, N0 = 32, 4
METHODS = ("rbf:vp", "rbf:linear", "rbf:ode")
# label -> (A, B, metric, budget of A, budget of B): the claim is "A > B" on the metric.
CLAIMS = {
    "32 NFE: rbf: linear SDE > ODE": ("rbf:linear", "rbf:ode", "reward", B, B),
    "32 NFE: rbf: VP SDE > linear SDE": ("rbf:vp", "rbf:linear", "reward", B, B),
    "32 NFE: rbf:vp > rbf:linear": ("rbf:vp", "rbf:linear", "reward", B, B),
    "32 NFE: rbf:vp > rbf:ode": ("rbf:vp", "rbf:ode", "reward", B, B),
    "hacking: searched reward rises (rbf:vp vs base)": ("rbf:vp", "base", "reward", B, N0),
    "hacking: held-out verifier falls (base vs rbf:vp)": ("base", "rbf:vp", "held_out", N0, B),
    "hacking: diversity falls (base vs rbf:vp)": ("base", "rbf:vp", "diversity", N0, B),
}
DIFFS = {
    stats.HOLDS: [0.5 + 0.01 * i for i in range(SEEDS)],
    stats.FAILS: [-0.5 - 0.01 * i for i in range(SEEDS)],
    stats.TIE: [0.01 * (1 if i % 2 else -1) for i in range(SEEDS)],
    stats.NOT_DECIDABLE: [0.5 * (1 if i % 2 else -1) for i in range(SEEDS)],
}


def config(**extra):
    return ml_collections.ConfigDict({"budgets": [16, B], "num_steps": N0, **extra})


def raw_for(claim: str, outcome: str) -> dict:
    rng = np.random.default_rng(0)
    raw = {m: {B: {k: list(rng.normal(-1.0, 0.3, SEEDS)) for k in ("reward", "held_out",
                                                                      "diversity")}}
           for m in METHODS}  # fmt: skip
    raw["base"] = {N0: {k: list(rng.normal(-1.0, 0.3, SEEDS)) for k in ("reward", "held_out",
                                                                         "diversity")}}  # fmt: skip
    a, b, metric, ba, bb = CLAIMS[claim]
    raw[a][ba][metric] = [x + d for x, d in zip(raw[b][bb][metric], DIFFS[outcome], strict=True)]
    return raw


def test_claims_are_the_verdicts():
    claim = "32 NFE: rbf:vp > rbf:ode"
    assert set(flow_scaling.verdicts(raw_for(claim, stats.HOLDS), config())) == set(CLAIMS)


def test_methods_are_compared_at_the_smallest_and_the_largest_budget():
    """With results at both budgets the four comparisons are made at each (labels carry
    the NFE), in one Holm family with the three hacking claims; each reads its own budget."""
    raw = raw_for("32 NFE: rbf:vp > rbf:ode", stats.HOLDS)
    for m in METHODS:  # at 16 NFE rbf:vp loses to rbf:ode by 0.5 in every seed
        raw[m][16] = {k: list(v) for k, v in raw["rbf:ode"][B].items()}
    raw["rbf:vp"][16]["reward"] = [x - 0.5 for x in raw["rbf:ode"][B]["reward"]]
    assert flow_scaling.verdict_budgets(config()) == [16, B]
    v = flow_scaling.verdicts(raw, config())
    assert len(v) == 11 and {x["family_size"] for x in v.values()} == {11}
    assert v["32 NFE: rbf:vp > rbf:ode"]["verdict"] == stats.HOLDS
    assert v["16 NFE: rbf:vp > rbf:ode"]["verdict"] == stats.FAILS
    assert v["16 NFE: rbf: linear SDE > ODE"]["verdict"] == stats.TIE  # identical values
    one = config(budgets=[B])  # one budget: one set of comparisons
    assert flow_scaling.verdict_budgets(one) == [B] and len(flow_scaling.verdicts(raw, one)) == 7


@pytest.mark.parametrize("claim", sorted(CLAIMS))
@pytest.mark.parametrize("outcome", list(DIFFS))
def test_verdict_outcomes(claim, outcome):
    v = flow_scaling.verdicts(raw_for(claim, outcome), config())[claim]
    assert v["verdict"] == outcome, (claim, outcome, v["reason"])
    assert v["family_size"] == len(CLAIMS)


def test_floor_and_effect_size_come_from_the_config():
    claim = "32 NFE: rbf:vp > rbf:ode"
    raw = raw_for(claim, stats.HOLDS)
    v = flow_scaling.verdicts(raw, config(noise_floors={"reward": 1.0}))[claim]
    assert v["verdict"] == stats.TIE and "floor" in v["reason"]  # 0.5 is within a floor of 1
    raw = raw_for(claim, stats.TIE)
    v = flow_scaling.verdicts(raw, config(effect_sizes={"reward": 0.001}))[claim]
    assert v["verdict"] == stats.NOT_DECIDABLE and v["effect_size"] == 0.001
    with pytest.raises(ValueError, match="config.effect_sizes"):
        flow_scaling.verdicts(raw, config(effect_sizes={"nfe": 1.0}))


@pytest.mark.parametrize("variant", ["quick", "full"])
def test_config_declares_floors_and_effects_and_verdicts_read_them(variant):
    from inferax.experiments import schema
    from inferax.experiments.configs import flow_scaling as fs_config

    c = fs_config.get_config(variant)
    schema.check(c, "flow_scaling")
    assert dict(c.noise_floors) == flow_scaling.NOISE_FLOORS
    assert dict(c.effect_sizes) == flow_scaling.EFFECT_SIZES
    if variant == "full":
        assert max(c.budgets) == 1000  # the papers' largest budget
        assert 2.0**-c.num_seeds < stats.ALPHA / 41  # the family can be decided
    c.budgets, c.num_steps = [16, B], N0
    c.effect_sizes.reward, c.noise_floors.reward = 0.7, 0.02
    claim = "32 NFE: rbf:vp > rbf:ode"
    v = flow_scaling.verdicts(raw_for(claim, stats.HOLDS), c)[claim]
    assert (v["effect_size"], v["noise_floor"]) == (0.7, 0.02)
