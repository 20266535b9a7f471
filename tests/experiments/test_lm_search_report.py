"""Every verdict of lm_search_report comes out holds, fails, tie and not decidable on
synthetic paired values built for each outcome (no search is run): the verdicts take
paired units (per-problem outcomes in the experiment, here any paired numbers)."""

import ml_collections
import numpy as np
import pytest

from inferax.experiments import lm_search_report as srep
from inferax.experiments import stats

SEEDS = 9  # paired units; a family of 6 needs 2^-n < 0.05 / 6: n >= 7
BUDGETS = [4, 16]
FLOOR, EFFECT = 1 / 16, 0.10
OUTCOMES = (stats.HOLDS, stats.FAILS, stats.TIE, stats.NOT_DECIDABLE)


def const(x):
    return [x + 0.001 * i for i in range(SEEDS)]


def alternating(center, half):
    return [center + half * (1 if i % 2 else -1) for i in range(SEEDS)]


def table(pf_lo=0.4, pf_hi=0.7, beam_lo=0.4, beam_hi=0.5, bon_lo=0.4, bon_hi=0.5):
    def col(lo, hi):
        return {4: lo if isinstance(lo, list) else const(lo),
                16: hi if isinstance(hi, list) else const(hi)}  # fmt: skip

    return {"particle_filter": col(pf_lo, pf_hi), "beam": col(beam_lo, beam_hi),
            "bon": col(bon_lo, bon_hi)}  # fmt: skip


def acc(learned=None, oracle=None):
    return {"learned": table(**(learned or {})),
            "oracle": table(**(oracle or {"pf_hi": 0.8, "beam_hi": 0.78}))}  # fmt: skip


# claim -> outcome -> (learned overrides, oracle overrides)
CASES = {
    "pf_vs_beam_at_16": {
        stats.HOLDS: ({}, None),
        stats.FAILS: ({"beam_hi": 0.9}, None),
        stats.TIE: ({"beam_hi": alternating(0.7, 0.005)}, None),
        stats.NOT_DECIDABLE: ({"beam_hi": alternating(0.7, 0.3)}, None),
    },
    "pf_vs_bon_at_16": {
        stats.HOLDS: ({}, None),
        stats.FAILS: ({"bon_hi": 0.9}, None),
        stats.TIE: ({"bon_hi": alternating(0.7, 0.005)}, None),
        stats.NOT_DECIDABLE: ({"bon_hi": alternating(0.7, 0.3)}, None),
    },
    # Rates over log2 N (two doublings): PF 0.15 per doubling, beam / BoN 0.05.
    "pf_rate_vs_beam": {
        stats.HOLDS: ({}, None),
        stats.FAILS: ({"beam_lo": 0.1, "beam_hi": 0.9}, None),
        stats.TIE: ({"beam_hi": alternating(0.7, 0.005)}, None),
        stats.NOT_DECIDABLE: ({"beam_hi": alternating(0.7, 0.3)}, None),
    },
    "pf_rate_vs_bon": {
        stats.HOLDS: ({}, None),
        stats.FAILS: ({"bon_lo": 0.1, "bon_hi": 0.9}, None),
        stats.TIE: ({"bon_hi": alternating(0.7, 0.005)}, None),
        stats.NOT_DECIDABLE: ({"bon_hi": alternating(0.7, 0.3)}, None),
    },
    "beam_learned_below_oracle": {
        stats.HOLDS: ({}, None),
        stats.FAILS: ({"beam_hi": 0.95}, None),
        stats.TIE: ({"beam_hi": alternating(0.78, 0.005)}, None),
        stats.NOT_DECIDABLE: ({"beam_hi": alternating(0.78, 0.3)}, None),
    },
    "oracle_gap_closes": {
        stats.HOLDS: ({}, None),  # learned gap 0.2, oracle gap 0.02
        stats.FAILS: ({}, {"pf_hi": 0.9, "beam_hi": 0.3}),
        stats.TIE: ({}, {"pf_hi": 0.8, "beam_hi": alternating(0.6, 0.005)}),
        stats.NOT_DECIDABLE: ({}, {"pf_hi": 0.8, "beam_hi": alternating(0.6, 0.3)}),
    },
}


def run(learned, oracle, single=None):
    single = const(0.2) if single is None else single
    return srep.verdicts(acc(learned, oracle), single, BUDGETS, FLOOR, EFFECT)


@pytest.mark.parametrize("claim", sorted(CASES))
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_verdict_outcomes(claim, outcome):
    v = run(*CASES[claim][outcome])[claim]
    assert v["verdict"] == outcome, (claim, outcome, v["reason"])
    assert v["family_size"] == len(CASES)


def test_every_claim_is_tested():
    assert set(run({}, None)) == set(CASES) | {"beats_single_sample"}


def test_beats_single_sample_family():
    """Holm over methods x PRMs x budgets; fails when one is significantly below."""
    b = run({}, None)["beats_single_sample"]
    assert b["verdict"] == stats.HOLDS and len(b["family"]) == 12
    assert all(v["family_size"] == 12 for v in b["family"].values())
    b = run({"beam_lo": 0.05}, None)["beats_single_sample"]
    assert b["verdict"] == stats.FAILS and b["below"] == ["beam search (learned) N=4"]
    b = run({}, None, single=alternating(0.4, 0.005))["beats_single_sample"]
    assert b["verdict"] == stats.TIE  # the N = 4 cells equal single-sample accuracy
    b = run({}, None, single=alternating(0.4, 0.3))["beats_single_sample"]
    assert b["verdict"] == stats.NOT_DECIDABLE and b["undecided"]


def test_slopes_are_the_per_problem_rate():
    """The per-problem least-squares slope over log2 N; its mean is the slope of the mean."""
    per_n = {1: [0, 0, 1], 4: [0, 1, 1], 16: [1, 1, 1]}
    r = srep.slopes(per_n, [1, 4, 16])
    np.testing.assert_allclose(r, [0.25, 0.25, 0.0])
    means = [np.mean(per_n[n]) for n in (1, 4, 16)]
    assert np.mean(r) == pytest.approx(np.polyfit([0, 2, 4], means, 1)[0])


def test_collect_and_summary_rows():
    """collect() pools the per-problem outcomes over seeds, reads the effect sizes from the
    config, takes the floor from the problem count; rows name each claim and the rates."""
    c = ml_collections.ConfigDict({"search": {
        "budgets": BUDGETS, "prms": ["learned"], "effect_sizes": {"accuracy": 0.2}}})  # fmt: skip
    rng = np.random.default_rng(0)
    P = 40  # problems per seed, 2 seeds

    def draw(p):
        return (rng.uniform(size=P) < p).astype(int).tolist()

    search = [{"correct": {"particle_filter": {"learned": {4: draw(0.5), 16: draw(0.9)}},
                           "beam": {"learned": {4: draw(0.5), 16: draw(0.45)}}},
               "tokens": {"particle_filter": {"learned": {4: 10.0, 16: 40.0}}}}
              for _ in range(2)]  # fmt: skip
    base = [{"per_problem": {"single": [0.3] * P,
                             "correct": {"bon_prm": {4: draw(0.5), 16: draw(0.55)}}}}
            for _ in range(2)]  # fmt: skip
    out = srep.collect(c, {2: search}, {2: base})
    r = out["difficulty"][2]
    assert r["num_problems"] == 2 * P
    v = r["verdicts"]
    assert v["pf_vs_beam_at_16"]["verdict"] == stats.HOLDS
    assert v["pf_vs_beam_at_16"]["n"] == 2 * P
    assert v["pf_vs_beam_at_16"]["effect_size"] == 0.2
    assert v["pf_vs_beam_at_16"]["noise_floor"] == pytest.approx(1 / (2 * P))
    assert v["pf_rate_vs_beam"]["effect_size"] == srep.EFFECT_SIZES["rate"]
    pf = search[0]["correct"]["particle_filter"]["learned"]
    assert r["accuracy"]["learned"]["particle_filter"][16]["values"][:P] == pf[16]
    assert r["rates"]["learned"]["particle_filter"]["mean"] > r["rates"]["learned"]["beam"]["mean"]
    rows = srep.summary_rows(out)
    assert any("particle filter above beam" in r[0] and r[2].startswith("holds") for r in rows)
    rate = next(r for r in rows if "scaling rate" in r[0] and "beam" in r[0])
    assert "PF" in rate[1] and "MDE" in rate[2]
    assert "rate (accuracy per doubling of N)" in "\n".join(srep.report_lines(out))
    c.search.effect_sizes = {"speed": 1.0}
    with pytest.raises(ValueError, match="search.effect_sizes"):
        srep.collect(c, {2: search}, {2: base})
