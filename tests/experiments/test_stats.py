"""Intervals and verdicts of experiments.stats, against closed forms and coverage."""

import math
import os

import numpy as np
import pytest

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
        assert s["values"][1] != s["values"][1] or math.isinf(s["values"][1])
    assert stats.format_interval(stats.t_interval([1.0, math.nan])) == "nan (non-finite)"


def test_verdict_holds_fails_and_ties():
    base = np.array([1.0, 1.2, 0.9, 1.1])
    better = base - np.array([0.30, 0.32, 0.29, 0.31])  # lower is better: clearly better
    assert stats.compare(better, base)["verdict"] == stats.HOLDS
    # The same numbers with the sign flipped (negative control): clearly worse.
    assert stats.compare(base, better)["verdict"] == stats.FAILS
    # Higher-is-better flips the reading of the same numbers.
    assert stats.compare(better, base, lower_is_better=False)["verdict"] == stats.FAILS
    assert stats.compare(base, better, lower_is_better=False)["verdict"] == stats.HOLDS
    # Paired differences of mixed sign: the interval contains 0.
    mixed = base + np.array([0.2, -0.25, 0.1, -0.1])
    v = stats.compare(mixed, base)
    assert v["verdict"] == stats.TIE and "contains 0" in v["reason"]
    # Consistently better, but by less than the metric resolves: a tie.
    tiny = base - 1e-4
    assert stats.compare(tiny, base)["verdict"] == stats.HOLDS
    v = stats.compare(tiny, base, noise_floor=1e-3)
    assert v["verdict"] == stats.TIE and "floor" in v["reason"]
    assert stats.compare(base, tiny, noise_floor=1e-3)["verdict"] == stats.TIE
    # Seed counts are descriptive: 2 of 4 seeds better, 2 worse, by more than 0.05.
    v = stats.compare(mixed, base, noise_floor=0.05)
    assert (v["seeds_better"], v["seeds_worse"]) == (2, 2)
    assert stats.describe(v) == "tie within noise (better in 2/4 seeds, worse in 2)"
    assert stats.describe(stats.compare(better, base)) == "holds (better in 4/4 seeds)"
    # One seed never decides.
    v = stats.compare([0.1], [5.0])
    assert v["verdict"] == stats.TIE and "one seed" in v["reason"]


def test_verdict_is_paired():
    """Large seed-to-seed spread, constant improvement: pairing finds it; unpaired would not."""
    base = np.array([0.1, 5.0, 20.0, 1.0])
    assert stats.compare(base - 0.05, base)["verdict"] == stats.HOLDS


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_fail(bad):
    a = [0.1, 0.2, bad]
    v = stats.compare(a, [0.5, 0.6, 0.7])
    assert v["verdict"] == stats.FAILS and "non-finite" in v["reason"] and "claimed" in v["reason"]
    # inf <= inf is not a pass: both broken still fails.
    v = stats.compare([math.inf] * 3, [math.inf] * 3)
    assert v["verdict"] == stats.FAILS
    # A broken baseline is not a win for the claim either.
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
