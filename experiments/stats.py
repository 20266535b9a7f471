"""Seeds, confidence intervals and verdicts for the reproductions.

A reproduction measures each number once per seed (a seed draws the target,
trains the models and drives the sampler) and reports the mean with a
Student-t confidence interval over the seeds. A claim "A is better than B" is
decided on the *paired* per-seed differences (both methods see the same
seed's target, model and noise), never on one draw:

- **holds** when the whole interval of the improvement lies above zero and its
  mean exceeds the metric's noise floor;
- **fails** when the whole interval lies below zero and the mean is worse by
  more than the noise floor, or when any value of either method is not finite
  (a NaN or an infinite metric is a broken run, never a pass: ``inf <= inf``
  decides nothing);
- **tie within noise** otherwise (including a single seed, whose interval is
  unbounded).

The noise floor is the smallest difference the metric resolves at the sample
sizes used: e.g. the seed-to-seed spread of the energy distance between two
independent sample sets from the *same* law. (The energy-distance estimator
used here is unbiased, so for equal laws it scatters around zero and can be
negative; a difference smaller than that scatter is not evidence either way.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps  # a dependency of scikit-learn, which the package requires

__all__ = [
    "CONFIDENCE",
    "HOLDS",
    "FAILS",
    "TIE",
    "compare",
    "describe",
    "format_interval",
    "noise_floor",
    "append_per_seed",
    "seeds",
    "summarize_tree",
    "t_interval",
]

CONFIDENCE = 0.95
HOLDS, FAILS, TIE = "holds", "fails", "tie within noise"


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
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence}")
    out = {"values": v.tolist(), "n": int(v.size), "method": f"t{confidence:.0%}"}
    if not np.all(np.isfinite(v)):
        return {**out, "mean": math.nan, "lo": math.nan, "hi": math.nan, "finite": False}
    mean = float(v.mean())
    if v.size < 2:
        return {**out, "mean": mean, "lo": -math.inf, "hi": math.inf, "finite": True}
    half = float(sps.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {**out, "mean": mean, "lo": mean - half, "hi": mean + half, "finite": True}


def noise_floor(reference_values: Sequence[float]) -> float:
    """The metric's noise floor from per-seed values of the metric on exact samples.

    ``reference_values[i]``: the metric between an exact (data) sample set of
    the same size as the methods' and the reference set, at seed i. The floor
    is their sample standard deviation: the scatter of one metric estimate
    when nothing is wrong. With one seed (no spread) or non-finite values it is
    0 (then only the interval decides).
    """
    v = _values(reference_values, "reference_values")
    if v.size < 2 or not np.all(np.isfinite(v)):
        return 0.0
    return float(v.std(ddof=1))


def compare(
    claimed: Sequence[float],
    baseline: Sequence[float],
    *,
    lower_is_better: bool = True,
    noise_floor: float = 0.0,
    confidence: float = CONFIDENCE,
) -> dict:
    """Verdict on "``claimed`` is better than ``baseline``" from paired per-seed values.

    The improvement per seed is ``baseline - claimed`` when lower is better,
    else ``claimed - baseline``; its t-interval (``t_interval``) and mean
    against ``noise_floor`` decide the verdict as the module docstring says.

    Args:
        claimed: per-seed metric of the method the claim favours.
        baseline: per-seed metric of the method it is compared with, same seeds
            in the same order.
        lower_is_better: the metric's direction.
        noise_floor: differences whose mean is within this of zero are ties.
        confidence: of the interval.

    Returns:
        ``{"verdict", "reason", "improvement" (a t_interval dict), "noise_floor",
        "seeds_better", "seeds_worse"}``; the last two count the seeds whose
        improvement is above ``noise_floor`` / below ``-noise_floor``
        (descriptive: they do not enter the verdict).

    Raises:
        ValueError: unpaired inputs (different lengths) or a negative / NaN floor.
    """
    a, b = _values(claimed, "claimed"), _values(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(
            f"baseline: expected one value per seed like claimed ({a.size}), got {b.size}"
        )
    if not (noise_floor >= 0.0 and math.isfinite(noise_floor)):
        raise ValueError(f"noise_floor: expected a finite number >= 0, got {noise_floor}")
    with np.errstate(invalid="ignore"):  # inf - inf: non-finite, handled below
        diff = (b - a) if lower_is_better else (a - b)
    imp = t_interval(diff, confidence)
    out = {
        "improvement": imp,
        "noise_floor": float(noise_floor),
        # Descriptive only (the verdict is the interval's): seeds beyond the floor each way.
        "seeds_better": int(np.sum(diff > noise_floor)),
        "seeds_worse": int(np.sum(diff < -noise_floor)),
    }
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        bad = [n for n, v in (("claimed", a), ("baseline", b)) if not np.all(np.isfinite(v))]
        return {**out, "verdict": FAILS, "reason": f"non-finite metric ({', '.join(bad)})"}
    if imp["lo"] > 0.0 and imp["mean"] > noise_floor:
        return {**out, "verdict": HOLDS, "reason": "interval above 0 and mean above the floor"}
    if imp["hi"] < 0.0 and imp["mean"] < -noise_floor:
        return {**out, "verdict": FAILS, "reason": "interval below 0 and mean below -floor"}
    if a.size < 2:
        reason = "one seed: no interval"
    elif imp["lo"] <= 0.0 <= imp["hi"]:
        reason = "interval contains 0"
    else:
        reason = "difference within the noise floor"
    return {**out, "verdict": TIE, "reason": reason}


def describe(verdict: dict) -> str:
    """``"tie within noise (better in 4/5 seeds, worse in 1)"``: a verdict with its seed counts."""
    n = verdict["improvement"]["n"]
    text = f"{verdict['verdict']} (better in {verdict['seeds_better']}/{n} seeds"
    worse = verdict["seeds_worse"]
    return text + (f", worse in {worse})" if worse else ")")


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
