"""Intervals, exact tests, MDE, Holm and verdicts of experiments.stats, against closed
forms, SciPy and hand-computed examples."""

import itertools
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from inferax.experiments import plots, stats


def test_t_interval_closed_form():
    # n = 3, mean 2, s = 1: half-width t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051.
    s = stats.t_interval([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["n"] == 3 and s["finite"]
    half = 4.302652729911275 / math.sqrt(3)
    assert s["lo"] == pytest.approx(2.0 - half, rel=1e-9)
    assert s["hi"] == pytest.approx(2.0 + half, rel=1e-9)
    assert s["values"] == [1.0, 2.0, 3.0]
    one = stats.t_interval([0.5])
    assert one["mean"] == 0.5 and one["lo"] == -math.inf and one["hi"] == math.inf


def test_t_interval_coverage():
    """The 90% interval covers the true mean of N(1, 2^2) in 90% +- 1.5% of 4000 draws of n = 4."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        s = stats.t_interval(rng.normal(1.0, 2.0, size=4), confidence=0.9)
        hits += s["lo"] <= 1.0 <= s["hi"]
    assert abs(hits / 4000 - 0.9) < 0.015, hits / 4000


def test_non_finite_values_break_the_interval():
    for bad in (math.nan, math.inf, -math.inf):
        s = stats.t_interval([0.1, bad, 0.2])
        assert not s["finite"] and math.isnan(s["mean"]) and math.isnan(s["lo"])
    assert stats.format_interval(stats.t_interval([1.0, math.nan])) == "nan (non-finite)"


def _brute_force_permutation(d):
    sums = [sum(s * abs(x) for s, x in zip(signs, d, strict=True))
            for signs in itertools.product((1, -1), repeat=len(d))]  # fmt: skip
    obs = sum(d)
    return (np.mean([s >= obs - 1e-12 for s in sums]), np.mean([s <= obs + 1e-12 for s in sums]))


def test_permutation_test_against_brute_force():
    rng = np.random.default_rng(1)
    for n in (1, 3, 5, 8):
        d = rng.normal(0.3, 1.0, size=n)
        got = stats.permutation_test(d)
        assert got == pytest.approx(_brute_force_permutation(d.tolist()), abs=1e-12)
    # All positive: only the observed pattern is as large, p = 2^-n.
    assert stats.permutation_test([0.1, 0.3, 0.2, 0.5, 0.4])[0] == pytest.approx(1 / 32)
    # n > 16: the Monte Carlo path agrees with the normal approximation of the sign-flip sum.
    d = rng.normal(0.2, 1.0, size=40)
    z = d.sum() / math.sqrt(np.sum(d**2))
    assert stats.permutation_test(d)[0] == pytest.approx(sps.norm.sf(z), abs=0.01)


def test_sign_test_against_scipy():
    d = [0.2, -0.1, 0.3, 0.0, 0.5, 0.4, -0.2]  # 4 of the 6 non-zero are positive
    pg, pl = stats.sign_test(d)
    assert pg == pytest.approx(sps.binomtest(4, 6, 0.5, alternative="greater").pvalue)
    assert pl == pytest.approx(sps.binomtest(4, 6, 0.5, alternative="less").pvalue)
    assert stats.sign_test([0.0, 0.0]) == (1.0, 1.0)


def test_mde_against_scipy():
    """(t_{0.95, n-1} + t_{0.8, n-1}) sd / sqrt(n); and it is the effect found 80% of the time."""
    sd, n = 0.7, 10
    want = (sps.t.ppf(0.95, 9) + sps.t.ppf(0.8, 9)) * sd / math.sqrt(n)
    assert stats.mde(sd, n) == pytest.approx(want, rel=1e-12)
    assert stats.mde(sd, n, alpha=0.01, power=0.9) == pytest.approx(
        (sps.t.ppf(0.99, 9) + sps.t.ppf(0.9, 9)) * sd / math.sqrt(n), rel=1e-12)  # fmt: skip
    # Too few units for the exact test: nothing is detectable.
    assert stats.min_units() == 5 and stats.min_units(0.01) == 7
    assert stats.mde(sd, 4) == math.inf and stats.mde(sd, 5) < math.inf
    # Power check by simulation: a true effect equal to the MDE is detected ~80% of the time
    # by the one-sided t-test the formula is written for (approximately: +- 5%).
    rng = np.random.default_rng(0)
    d = rng.normal(want, sd, size=(4000, n))
    p = sps.ttest_1samp(d, 0.0, axis=1, alternative="greater").pvalue
    assert abs(np.mean(p < 0.05) - 0.8) < 0.05
    with pytest.raises(ValueError, match="diff_sd"):
        stats.mde(-1.0, 5)
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        stats.mde(1.0, 0)


def test_holm_hand_computed():
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03,
    # 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06. In input order:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match="p_values"):
        stats.holm([0.1, 1.5])


def test_zero_width_interval_decides_nothing():
    """The issue's case: three identical seeds give a zero-width interval, but 3 units
    cannot reach 5% in an exact test, so neither direction decides."""
    for lower in (False, True):
        v = stats.compare([0.5417] * 3, [0.5] * 3, lower_is_better=lower)
        assert v["verdict"] == stats.NOT_DECIDABLE, v
        assert v["improvement"]["lo"] == v["improvement"]["hi"]  # the zero-width interval
        assert "n = 3 < 5" in v["reason"] and v["mde"] == math.inf
    # From 5 seeds of the same sign, the exact test rejects (p = 1/32).
    v = stats.compare([0.5417] * 5, [0.5] * 5, lower_is_better=False)
    assert v["verdict"] == stats.HOLDS and v["p_holds"] == pytest.approx(1 / 32)
    v = stats.compare([0.5] * 5, [0.5417] * 5, lower_is_better=False)
    assert v["verdict"] == stats.FAILS


BASE = np.array([1.0, 1.2, 0.9, 1.1, 1.05, 0.95])


def test_verdict_holds_fails_tie_and_not_decidable():
    better = BASE - np.array([0.30, 0.32, 0.29, 0.31, 0.30, 0.28])  # lower is better
    assert stats.compare(better, BASE)["verdict"] == stats.HOLDS
    assert stats.compare(BASE, better)["verdict"] == stats.FAILS  # negative control
    assert stats.compare(better, BASE, lower_is_better=False)["verdict"] == stats.FAILS
    assert stats.compare(BASE, better, lower_is_better=False)["verdict"] == stats.HOLDS
    # Mixed signs, small spread: no rejection, and the MDE is below the paper's effect: a tie.
    mixed = BASE + np.array([0.02, -0.025, 0.01, -0.01, 0.015, -0.02])
    v = stats.compare(mixed, BASE, effect_size=0.1)
    assert v["verdict"] == stats.TIE and v["mde"] < 0.1 and "no significant" in v["reason"]
    # The same signs with a large spread: the MDE exceeds the paper's effect: undecidable.
    noisy = BASE + 10 * (mixed - BASE)
    v = stats.compare(noisy, BASE, effect_size=0.1)
    assert v["verdict"] == stats.NOT_DECIDABLE and v["mde"] > 0.1 and "MDE" in v["reason"]
    assert "not decidable at this size" in stats.describe(v) and "MDE" in stats.describe(v)
    # Consistently better, but by less than the metric resolves: a tie (either direction).
    tiny = BASE - 1e-4
    assert stats.compare(tiny, BASE)["verdict"] == stats.HOLDS
    v = stats.compare(tiny, BASE, noise_floor=1e-3)
    assert v["verdict"] == stats.TIE and "floor" in v["reason"]
    assert stats.compare(BASE, tiny, noise_floor=1e-3)["verdict"] == stats.TIE
    # Seed counts are descriptive.
    v = stats.compare(noisy, BASE, noise_floor=0.05)
    assert (v["seeds_better"], v["seeds_worse"]) == (3, 3)
    assert stats.describe(v).startswith("tie within noise (better in 3/6 seeds, worse in 3;")
    # One seed never decides.
    v = stats.compare([0.1], [5.0])
    assert v["verdict"] == stats.NOT_DECIDABLE and "n = 1" in v["reason"]
    # The sign test ignores magnitudes: 5 of 6 better is p = 7/64 > 5%.
    five = BASE - np.array([0.3, 0.3, 0.3, 0.3, 0.3, -0.01])
    assert stats.compare(five, BASE)["verdict"] == stats.HOLDS
    assert stats.compare(five, BASE, test="sign")["verdict"] == stats.TIE


def test_verdict_is_paired():
    """Large seed-to-seed spread, constant improvement: pairing finds it."""
    base = np.array([0.1, 5.0, 20.0, 1.0, 3.0])
    assert stats.compare(base - 0.05, base)["verdict"] == stats.HOLDS


def test_exceeds_holds_fails_and_ties():
    gains = np.array([0.11, 0.12, 0.10, 0.13, 0.12, 0.11])
    assert stats.exceeds(gains, 0.05)["verdict"] == stats.HOLDS
    assert stats.exceeds(gains, 0.2)["verdict"] == stats.FAILS
    v = stats.exceeds(gains, 0.115, effect_size=0.05)
    assert v["verdict"] == stats.TIE and v["threshold"] == 0.115
    assert stats.exceeds(gains, 0.2, lower_is_better=True)["verdict"] == stats.HOLDS
    with pytest.raises(ValueError, match="threshold"):
        stats.exceeds(gains, math.nan)


def test_family_correction_re_decides():
    """Three comparisons of 6 seeds: p = 1/64 each alone (holds), Holm keeps
    3/64 < 5% for the first; with 5 members of p = 1/64 the smallest is 5/64 > 5%."""
    d = np.array([0.3, 0.2, 0.4, 0.3, 0.25, 0.35])
    one = stats.compare(BASE - d, BASE)
    assert one["verdict"] == stats.HOLDS and one["p_value"] == pytest.approx(1 / 64)
    fam = stats.correct_family({"a": one, "b": one, "c": one})
    assert all(v["verdict"] == stats.HOLDS for v in fam.values())
    assert fam["a"]["p_adjusted"] == pytest.approx(3 / 64) and fam["a"]["family_size"] == 3
    fam = stats.correct_family({k: one for k in "abcde"})
    assert all(v["verdict"] != stats.HOLDS for v in fam.values())
    assert "Holm over 5" in fam["a"]["reason"]
    # The MDE is taken at alpha / m (larger than alone).
    assert fam["a"]["mde"] > one["mde"]
    # Non-finite members stay failures and do not count in m.
    broken = stats.compare([math.nan] * 6, BASE)
    fam = stats.correct_family({"a": one, "x": broken})
    assert fam["x"]["verdict"] == stats.FAILS and fam["a"]["family_size"] == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_fail(bad):
    a = [0.1, 0.2, bad]
    v = stats.compare(a, [0.5, 0.6, 0.7])
    assert v["verdict"] == stats.FAILS and "non-finite" in v["reason"] and "claimed" in v["reason"]
    v = stats.compare([math.inf] * 3, [math.inf] * 3)
    assert v["verdict"] == stats.FAILS
    v = stats.compare([0.1, 0.2, 0.3], [1.0, bad, 1.0])
    assert v["verdict"] == stats.FAILS and "baseline" in v["reason"]


def test_noise_floor():
    assert stats.noise_floor([0.01, -0.01, 0.0]) == pytest.approx(0.01)
    assert stats.noise_floor([0.3]) == 0.0
    assert stats.noise_floor([0.3, math.nan]) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="baseline: expected one value per seed"):
        stats.compare([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="noise_floor"):
        stats.compare([1.0], [1.0], noise_floor=-1.0)
    with pytest.raises(ValueError, match="effect_size"):
        stats.compare([1.0], [1.0], effect_size=0.0)
    with pytest.raises(ValueError, match="test: expected one of"):
        stats.compare([1.0], [1.0], test="t")
    with pytest.raises(ValueError, match="alpha"):
        stats.compare([1.0], [1.0], alpha=1.0)
    with pytest.raises(ValueError, match="values"):
        stats.t_interval([])
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1.0, 2.0], confidence=1.5)
    assert stats.seeds(7, 3) == [7, 8, 9]
    with pytest.raises(ValueError, match="num_seeds"):
        stats.seeds(0, 0)
    with pytest.raises(TypeError, match="seed"):
        stats.seeds(1.5, 2)


def test_errorbar_plot_writes_a_png(tmp_path):
    s = [stats.t_interval([1.0, 1.1, 0.9]), stats.t_interval([0.5, math.nan, 0.4])]
    path = plots.errorbar_plot(
        os.path.join(tmp_path, "p.png"),
        [("panel", {"a": ([4, 8], s)})],
        xlabel="NFE",
        ylabel="metric",
        logy=True,
        hline=0.2,
        hline_label="floor",
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
