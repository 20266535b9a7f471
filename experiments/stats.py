"""Seeds, confidence intervals and verdicts for the reproductions.

A reproduction measures each number once per seed (a seed draws the target,
trains the models and drives the sampler) and reports the mean with a
Student-t confidence interval over the seeds. A claim "A is better than B" is
decided on the *paired* per-seed differences (both methods see the same
seed's target, model and noise), never on one draw, by an **exact one-sided
sign-flip permutation test** of the paired differences (under "no effect" a
difference is as likely positive as negative; the claim names its direction,
so each direction is tested one-sided at level ``ALPHA``):

- **holds** when the test in the claim's direction rejects "no effect" at
  ``ALPHA`` (Holm-adjusted within a family of comparisons) and the mean
  improvement exceeds the metric's noise floor;
- **fails** when the test in the opposite direction rejects the same way and
  the mean is worse by more than the noise floor, or when any value of either
  method is not finite (a NaN or an infinite metric is a broken run, never a
  pass: ``inf <= inf`` decides nothing);
- **tie within noise** when neither rejects (or the difference is within the
  floor) and the comparison had the power to see the paper's effect: its
  minimum detectable effect (MDE) is at most the paper's effect size;
- **not decidable at this size** when neither rejects and the MDE is larger
  than the paper's effect size, or the number of paired units is too small
  for the exact test to reach ``ALPHA`` at all (n <= 4 at 5 %: the smallest
  one-sided p-value is 2^-n). A zero-width interval (every seed the same
  difference) therefore never decides with fewer than 5 seeds.

The noise floor is the smallest difference the metric resolves at the sample
sizes used, declared per metric: e.g. the seed-to-seed spread of the energy
distance between two independent sample sets from the *same* law, or one
problem's worth (1 / problems) of an accuracy. (The energy-distance estimator
used here is unbiased, so for equal laws it scatters around zero and can be
negative; a difference smaller than that scatter is not evidence either way.)

The MDE at n paired units with differences of standard deviation s is
``(t_{1 - alpha, n - 1} + t_{power, n - 1}) s / sqrt(n)`` (one-sided, like the
test; ``POWER`` = 80 %); infinite when n is too small for the exact test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps  # a dependency of scikit-learn, which the package requires

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "FAILS",
    "HOLDS",
    "NOT_DECIDABLE",
    "POWER",
    "TIE",
    "VERDICTS",
    "append_per_seed",
    "compare",
    "correct_family",
    "describe",
    "exceeds",
    "format_interval",
    "holm",
    "mde",
    "min_units",
    "noise_floor",
    "permutation_test",
    "seeds",
    "sign_test",
    "summarize_tree",
    "t_interval",
]

CONFIDENCE = 0.95
ALPHA = 0.05  # level of each one-sided test (family-wise with Holm's correction)
POWER = 0.8  # of the minimum detectable effect
HOLDS, FAILS, TIE = "holds", "fails", "tie within noise"
NOT_DECIDABLE = "not decidable at this size"
VERDICTS = (HOLDS, FAILS, TIE, NOT_DECIDABLE)
_EXACT_MAX_N = 16  # all 2^n sign flips up to here; a fixed Monte Carlo sample above
_MC_DRAWS = 1 << 16


def seeds(base: int, num: int) -> list[int]:
    """The seeds of a run: ``base, base + 1, ..., base + num - 1``.

    Raises:
        TypeError / ValueError: ``base`` not an int, ``num`` not an int >= 1.
    """
    for name, v, lo in (("seed", base, 0), ("num_seeds", num, 1)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{name}: expected an int, got {v!r}")
        if v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v}")
    return [int(base) + i for i in range(int(num))]


def _values(values, name: str) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(
            f"{name}: expected a non-empty 1-D sequence of numbers, got shape {v.shape}"
        )
    return v


def _check_level(name: str, x: float) -> None:
    if not (isinstance(x, int | float) and 0.0 < x < 1.0):
        raise ValueError(f"{name}: expected a number in (0, 1), got {x!r}")


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean and two-sided Student-t confidence interval of per-seed values.

    mean +- t_{(1 + c) / 2, n - 1} s / sqrt(n), s the sample standard deviation
    (ddof = 1). With one value the interval is (-inf, inf): one draw bounds
    nothing. With a non-finite value the mean and the bounds are NaN and
    ``finite`` is False.

    Returns:
        ``{"values", "mean", "lo", "hi", "n", "finite", "method"}`` (JSON-ready).
    """
    v = _values(values, "values")
    _check_level("confidence", confidence)
    out = {"values": v.tolist(), "n": int(v.size), "method": f"t{confidence:.0%}"}
    if not np.all(np.isfinite(v)):
        return {**out, "mean": math.nan, "lo": math.nan, "hi": math.nan, "finite": False}
    mean = float(v.mean())
    if v.size < 2:
        return {**out, "mean": mean, "lo": -math.inf, "hi": math.inf, "finite": True}
    half = float(sps.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {**out, "mean": mean, "lo": mean - half, "hi": mean + half, "finite": True}


def noise_floor(reference_values: Sequence[float]) -> float:
    """A metric's noise floor from per-seed values of the metric on exact samples.

    ``reference_values[i]``: the metric between an exact (data) sample set of
    the same size as the methods' and the reference set, at seed i. The floor
    is their sample standard deviation: the scatter of one metric estimate
    when nothing is wrong. With one seed (no spread) or non-finite values it is
    0 (then only the test decides).
    """
    v = _values(reference_values, "reference_values")
    if v.size < 2 or not np.all(np.isfinite(v)):
        return 0.0
    return float(v.std(ddof=1))


# ------------------------------------------------------------------ exact tests
def permutation_test(diff: Sequence[float]) -> tuple[float, float]:
    """Exact one-sided sign-flip permutation test of paired differences.

    Under "no effect" each difference is symmetric about 0, so every one of the
    2^n sign patterns of ``|diff|`` is equally likely; the statistic is the
    sum. All patterns are enumerated for n <= 16; above, 65536 fixed random
    patterns (seeded, with the observed one counted: ``(1 + k) / (1 + M)``).

    Args:
        diff: finite paired differences (claimed - baseline, improvement > 0).

    Returns:
        ``(p_greater, p_less)``: P(sum >= observed), P(sum <= observed) under
            the null. With n units the smallest is 2^-n.
    """
    d = _values(diff, "diff")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"diff: expected finite values, got {d.tolist()}")
    a, obs = np.abs(d), float(d.sum())
    tol = 1e-9 * max(1.0, float(a.sum()))
    if d.size <= _EXACT_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        sums = signs @ a
        return float(np.mean(sums >= obs - tol)), float(np.mean(sums <= obs + tol))
    rng = np.random.default_rng(0)
    sums = rng.choice((1.0, -1.0), size=(_MC_DRAWS, d.size)) @ a
    m = sums.size
    return (1 + int(np.sum(sums >= obs - tol))) / (1 + m), (1 + int(np.sum(sums <= obs + tol))) / (
        1 + m
    )


def sign_test(diff: Sequence[float]) -> tuple[float, float]:
    """Exact one-sided sign test of paired differences (zeros dropped).

    Returns:
        ``(p_greater, p_less)``: binomial(n', 1/2) tail probabilities of at
            least / at most the observed number of positive differences among the
            n' non-zero ones (1.0, 1.0 when all are zero).
    """
    d = _values(diff, "diff")
    pos, nz = int(np.sum(d > 0)), int(np.sum(d != 0))
    if nz == 0:
        return 1.0, 1.0
    return float(sps.binom.sf(pos - 1, nz, 0.5)), float(sps.binom.cdf(pos, nz, 0.5))


_TESTS = {"permutation": permutation_test, "sign": sign_test}


def min_units(alpha: float = ALPHA) -> int:
    """The fewest paired units at which an exact one-sided test can reach ``alpha``: the
    smallest n with 2^-n < alpha (5 at 5 %)."""
    _check_level("alpha", alpha)
    return int(math.floor(-math.log2(alpha))) + 1


def mde(diff_sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a one-sided paired test at ``n`` units.

    ``(t_{1 - alpha, n - 1} + t_{power, n - 1}) * diff_sd / sqrt(n)``: the true
    mean difference that a level-``alpha`` test detects with probability
    ``power`` (normal differences). Infinite when ``n < min_units(alpha)`` (the
    exact test cannot reject at all) or ``diff_sd`` is not finite.

    Raises:
        ValueError: ``diff_sd`` negative, ``n`` not an int >= 1, levels outside (0, 1).
    """
    _check_level("alpha", alpha)
    _check_level("power", power)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if not diff_sd >= 0.0:
        raise ValueError(f"diff_sd: expected a number >= 0, got {diff_sd}")
    if n < min_units(alpha) or not math.isfinite(diff_sd):
        return math.inf
    q = sps.t.ppf(1.0 - alpha, n - 1) + sps.t.ppf(power, n - 1)
    return float(q * diff_sd / math.sqrt(n))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; family-wise error <= alpha).

    Sorted ascending, the i-th (0-based) of m is multiplied by m - i, made
    non-decreasing along the order and capped at 1; ``adjusted[j] < alpha``
    exactly when Holm's procedure rejects hypothesis j at ``alpha``.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1 or np.any(~(p >= 0) | (p > 1)):
        raise ValueError(f"p_values: expected a 1-D sequence in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        adj[j] = running
    return adj.tolist()


# ------------------------------------------------------------------ verdicts
def compare(
    claimed: Sequence[float],
    baseline: Sequence[float],
    *,
    lower_is_better: bool = True,
    noise_floor: float = 0.0,
    effect_size: float | None = None,
    alpha: float = ALPHA,
    test: str = "permutation",
    confidence: float = CONFIDENCE,
) -> dict:
    """Verdict on "``claimed`` is better than ``baseline``" from paired per-seed values.

    The improvement per seed is ``baseline - claimed`` when lower is better,
    else ``claimed - baseline``; the exact one-sided test of it, its mean
    against ``noise_floor`` and its MDE against ``effect_size`` decide the
    verdict as the module docstring says.

    Args:
        claimed: per-seed metric of the method the claim favours.
        baseline: per-seed metric of the method it is compared with, same seeds
            in the same order.
        lower_is_better: the metric's direction.
        noise_floor: the metric's resolution: a mean improvement within this of
            zero is a tie even when the test rejects.
        effect_size: the paper's effect (the improvement the claim is about, in
            the metric's units); when the comparison's MDE exceeds it, an
            undecided comparison is "not decidable at this size" instead of a
            tie. ``None``: no effect size stated (only too few units make a
            comparison undecidable).
        alpha: level of each one-sided test.
        test: ``"permutation"`` (exact sign-flip, uses magnitudes) or ``"sign"``.
        confidence: of the reported interval (descriptive; the test decides).

    Returns:
        ``{"verdict", "reason", "improvement" (a t_interval dict), "noise_floor",
            "effect_size", "alpha", "test", "p_holds", "p_fails", "p_value",
            "p_adjusted", "family_size", "mde", "n", "seeds_better", "seeds_worse"}``:
            ``p_value`` is the smaller one-sided p (the data's direction),
            ``p_adjusted`` the same after a family correction (``correct_family``);
            the seed counts (improvement above ``noise_floor`` / below its
            negative) are descriptive.

    Raises:
        ValueError: unpaired inputs (different lengths), a negative / NaN floor
            or effect size, an unknown test or a level outside (0, 1).
    """
    a, b = _values(claimed, "claimed"), _values(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(
            f"baseline: expected one value per seed like claimed ({a.size}), got {b.size}"
        )
    if not (noise_floor >= 0.0 and math.isfinite(noise_floor)):
        raise ValueError(f"noise_floor: expected a finite number >= 0, got {noise_floor}")
    if effect_size is not None and not (effect_size > 0.0 and math.isfinite(effect_size)):
        raise ValueError(f"effect_size: expected a finite number > 0 or None, got {effect_size}")
    if test not in _TESTS:
        raise ValueError(f"test: expected one of {sorted(_TESTS)}, got {test!r}")
    _check_level("alpha", alpha)
    with np.errstate(invalid="ignore"):  # inf - inf: non-finite, handled below
        diff = (b - a) if lower_is_better else (a - b)
    out = {
        "improvement": t_interval(diff, confidence),
        "noise_floor": float(noise_floor),
        "effect_size": None if effect_size is None else float(effect_size),
        "alpha": float(alpha),
        "test": test,
        "n": int(diff.size),
        "family_size": 1,
        # Descriptive only (the test decides): seeds beyond the floor each way.
        "seeds_better": int(np.sum(diff > noise_floor)),
        "seeds_worse": int(np.sum(diff < -noise_floor)),
    }
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        bad = [n for n, v in (("claimed", a), ("baseline", b)) if not np.all(np.isfinite(v))]
        return {**out, "p_holds": math.nan, "p_fails": math.nan, "p_value": math.nan,
                "p_adjusted": math.nan, "mde": math.nan, "verdict": FAILS,
                "reason": f"non-finite metric ({', '.join(bad)})"}  # fmt: skip
    p_holds, p_fails = _TESTS[test](diff)
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.inf
    out.update(p_holds=p_holds, p_fails=p_fails, p_value=min(p_holds, p_fails))
    out.update(p_adjusted=out["p_value"], mde=mde(sd, diff.size, alpha=alpha))
    return _decide(out)


def _decide(v: dict) -> dict:
    """Sets ``verdict`` and ``reason`` of a finite comparison from its (adjusted) p-value."""
    imp, floor, alpha = v["improvement"], v["noise_floor"], v["alpha"]
    mean, n, m = imp["mean"], v["n"], v["family_size"]
    significant = v["p_adjusted"] < alpha
    towards_holds = v["p_holds"] <= v["p_fails"]
    fam = f", Holm over {m}" if m > 1 else ""
    p_text = f"p = {v['p_adjusted']:.3g}{fam}"
    if significant and towards_holds and mean > floor:
        return {**v, "verdict": HOLDS, "reason": f"improvement > 0 ({p_text}), mean above floor"}
    if significant and not towards_holds and mean < -floor:
        return {**v, "verdict": FAILS, "reason": f"improvement < 0 ({p_text}), mean below -floor"}
    if significant:
        return {**v, "verdict": TIE, "reason": f"difference within the noise floor ({p_text})"}
    need = min_units(alpha / m)
    if n < need:
        reason = (f"n = {n} < {need}: the exact test cannot reach alpha = {alpha:g}{fam}, "
                  "MDE = inf")  # fmt: skip
        return {**v, "verdict": NOT_DECIDABLE, "reason": reason}
    eff = v["effect_size"]
    if eff is not None and v["mde"] > eff:
        reason = f"{p_text}; MDE = {_num(v['mde'])} > paper's effect {_num(eff)}"
        return {**v, "verdict": NOT_DECIDABLE, "reason": reason}
    return {**v, "verdict": TIE, "reason": f"no significant difference ({p_text})"}


def exceeds(
    values: Sequence[float],
    threshold: float,
    *,
    lower_is_better: bool = False,
    effect_size: float | None = None,
    alpha: float = ALPHA,
    test: str = "permutation",
) -> dict:
    """Verdict on "the per-seed ``values`` exceed ``threshold``" (or stay below it).

    ``compare`` of ``values`` against a constant baseline, noise floor 0: the
    threshold is the claim's stated margin (e.g. "coverage gains more than
    eps"), so **fails** means the values are significantly on the wrong side
    of it.

    Args:
        values: per-seed values (or per-seed differences) the claim is about.
        threshold: the stated margin, a finite number.
        lower_is_better: the claim is "below ``threshold``".
        effect_size: the paper's distance from the threshold, for the MDE check.
        alpha: level of each one-sided test.
        test: as in ``compare``.

    Returns:
        ``compare``'s dict, plus ``"threshold"``.
    """
    v = _values(values, "values")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number, got {threshold}")
    out = compare(v, np.full(v.shape, float(threshold)), lower_is_better=lower_is_better,
                  effect_size=effect_size, alpha=alpha, test=test)  # fmt: skip
    return {**out, "threshold": float(threshold)}


def correct_family(family: Mapping[str, dict], alpha: float | None = None) -> dict:
    """Re-decides a family of ``compare`` verdicts with Holm–Bonferroni adjusted p-values.

    Each comparison's p-value (its smaller one-sided p) is adjusted over the
    finite members of the family; its MDE is recomputed at ``alpha / m`` (the
    first Holm step, conservative). Non-finite comparisons stay failures.

    Args:
        family: ``{name: compare(...) dict}``.
        alpha: family-wise level (default: each member's own ``alpha``).

    Returns:
        ``{name: verdict dict}`` with ``p_adjusted`` and ``family_size`` set.
    """
    names = [k for k, v in family.items() if math.isfinite(v["p_value"])]
    adj = holm([family[k]["p_value"] for k in names]) if names else []
    out = {k: dict(v) for k, v in family.items()}
    m = len(names)
    for k, p in zip(names, adj, strict=True):
        v = out[k]
        if alpha is not None:
            _check_level("alpha", alpha)
            v["alpha"] = float(alpha)
        sd = v["improvement"]
        s = float(np.std(sd["values"], ddof=1)) if v["n"] > 1 else math.inf
        v.update(p_adjusted=float(p), family_size=m, mde=mde(s, v["n"], alpha=v["alpha"] / m))
        out[k] = _decide(v)
    return out


def describe(verdict: dict) -> str:
    """``"tie within noise (better in 4/5 seeds, worse in 1; p = 0.19, MDE 0.012)"``."""
    n = verdict["improvement"]["n"]
    text = f"{verdict['verdict']} (better in {verdict['seeds_better']}/{n} seeds"
    worse = verdict["seeds_worse"]
    text += f", worse in {worse}" if worse else ""
    if "p_adjusted" not in verdict:  # a verdict dict from before the tests (old results)
        return text + ")"
    if not math.isfinite(verdict["p_adjusted"]):
        return text + "; non-finite)"
    text += f"; p = {verdict['p_adjusted']:.2g}"
    if verdict.get("family_size", 1) > 1:
        text += f" Holm/{verdict['family_size']}"
    eff = verdict.get("effect_size")
    text += f", MDE {_num(verdict['mde'])}" + (f" vs paper {_num(eff)}" if eff else "")
    return text + ")"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def format_interval(summary: dict) -> str:
    """``"mean [lo, hi]"`` of a ``t_interval`` dict (``"nan (non-finite)"`` if broken)."""
    if not summary["finite"]:
        return "nan (non-finite)"
    if summary["n"] < 2:
        return f"{_num(summary['mean'])} (1 seed)"
    return f"{_num(summary['mean'])} [{_num(summary['lo'])}, {_num(summary['hi'])}]"


def summarize_tree(tree):
    """Replaces every list of per-seed numbers in a nested dict by its ``t_interval``.

    Other leaves (ints such as step counts, strings) are kept as they are.
    """
    if isinstance(tree, dict):
        return {k: summarize_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return t_interval(tree)
    return tree


def append_per_seed(tree: dict, path: tuple, entry: dict, fixed: tuple = ("steps", "nfe")) -> None:
    """Appends one seed's ``entry`` to ``tree[path[0]][path[1]]...[metric]`` (lists over seeds).

    Keys in ``fixed`` (settings that do not vary with the seed, e.g. step
    counts) are stored as plain values instead.
    """
    node = tree
    for p in path:
        node = node.setdefault(p, {})
    for k, v in entry.items():
        if k in fixed:
            node[k] = v
        else:
            node.setdefault(k, []).append(float(v))
