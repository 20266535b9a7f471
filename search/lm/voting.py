"""Sampling-based answer selection for language models: best-of-N with PRM aggregation,
majority and weighted voting, first-finish, pass@k and the coverage scaling law.

Everything works on arrays with a leading problem axis ``B`` and a sample axis
``N`` (the completions of ``decoding.sample``), so one batch of samples serves
every budget ``n <= N`` by taking the first ``n`` (the samples are i.i.d.).
Answers are canonical integers (``-1``: no answer); scores are in [0, 1].

References: search-and-learn (Beeching et al. 2024) for PRM aggregation and
weighted best-of-N; Wang et al. 2023 (self-consistency) for majority voting;
Chen et al. 2021 (eq. 1) for the unbiased pass@k; Brown et al. 2024 (Large
Language Monkeys, eq. 2) for coverage(k) ~ exp(a k^b).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from inferax.sampling import _checks

AGGREGATIONS = ("last", "min", "prod")


def aggregate(scores: jax.Array, scored: jax.Array, how: str = "last") -> jax.Array:
    """One score per trace from its step scores.

    Args:
        scores: ``[..., T]`` per-position scores in [0, 1].
        scored: ``[..., T]`` bool, the positions that end a step.
        how: ``"last"`` (the last step's score), ``"min"`` or ``"prod"``.

    Returns:
        ``[...]``; a trace without any scored position scores 0.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"how: expected one of {AGGREGATIONS}, got {how!r}")
    scores = jnp.asarray(scores, jnp.float32)
    any_ = jnp.any(scored, axis=-1)
    if how == "last":
        t = scores.shape[-1]
        idx = t - 1 - jnp.argmax(jnp.flip(scored, -1), axis=-1)
        out = jnp.take_along_axis(scores, idx[..., None], axis=-1)[..., 0]
    elif how == "min":
        out = jnp.min(jnp.where(scored, scores, 1.0), axis=-1)
    else:
        out = jnp.prod(jnp.where(scored, scores, 1.0), axis=-1)
    return jnp.where(any_, out, 0.0)


def _check_answers(answers, name="answers"):
    answers = jnp.asarray(answers)
    if answers.ndim != 2 or not jnp.issubdtype(answers.dtype, jnp.integer):
        raise ValueError(
            f"{name}: expected int answers [B, N], got {answers.dtype} {answers.shape}"
        )
    return answers


def best_of_n(answers: jax.Array, scores: jax.Array) -> jax.Array:
    """The answer of the highest-scoring sample with an answer, per problem (``[B, N] -> [B]``).

    Samples without an answer (-1: unfinished or malformed) are chosen only
    when no sample has one (then -1 is returned). A NaN score ranks below every
    number (as NaN log-weights count as ``-inf`` everywhere in inferax), so a broken
    verifier output never wins; when every answered sample's score is NaN or
    ``-inf``, the first answered sample is chosen.

    Args:
        answers: ``[B, N]`` int answers of ``N`` samples per problem (-1: none).
        scores: ``[B, N]`` verifier scores (higher is better).

    Returns:
        ``[B]`` the chosen answers.

    Raises:
        ValueError: ``answers`` is not an int ``[B, N]`` array, or ``scores`` has
            another shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from inferax.search.lm import voting
        >>> voting.best_of_n(jnp.array([[3, 5, -1]]), jnp.array([[0.2, 0.9, 1.0]])).tolist()
        [5]
    """
    answers = _check_answers(answers)
    scores = jnp.asarray(scores, jnp.float32)
    if scores.shape != answers.shape:
        raise ValueError(f"scores: expected shape {answers.shape} (as answers), got {scores.shape}")
    valid = answers >= 0
    key = jnp.where(valid & ~jnp.isnan(scores), scores, -jnp.inf)
    idx = jnp.where(jnp.max(key, axis=-1) > -jnp.inf, jnp.argmax(key, axis=-1),
                    jnp.argmax(valid, axis=-1))  # fmt: skip
    return jnp.take_along_axis(answers, idx[:, None], axis=1)[:, 0]


def _check_range(answers: jax.Array, num_answers: int) -> None:
    """ValueError naming ``answers`` when a concrete answer is outside ``[-1, num_answers)``."""
    a = _checks.concrete_value(answers)
    if a is None:
        return
    bad = (a < -1) | (a >= num_answers)
    if np.any(bad):
        raise ValueError(
            f"answers: expected integers in [0, num_answers = {num_answers}) or -1 (no answer), "
            f"got {sorted(set(a[bad].tolist()))[:5]}"
        )


def weighted_vote(answers: jax.Array, weights: jax.Array, num_answers: int) -> jax.Array:
    """Per problem, the answer with the largest summed weight (-1 if none is valid).

    Answers are integers in ``[0, num_answers)``; -1 (no answer) never wins.
    Only answers some sample gave can win; ties go to the smaller answer. NaN
    weights count as 0 (as NaN log-weights count as ``-inf`` everywhere in
    inferax), so a NaN never picks the winner.

    Args:
        answers: ``[B, N]`` int answers of ``N`` samples per problem (-1: none).
        weights: ``[B, N]`` the samples' weights (e.g. ``LMSearchResult.weights``).
        num_answers: the number of distinct answers.

    Returns:
        ``[B]`` int32 winning answers (-1 where no sample answered).

    Raises:
        ValueError: when ``answers`` is concrete (not traced) and holds a value
            outside ``[-1, num_answers)``, or ``weights`` has another shape. Under
            ``jit`` such answers cannot be checked and count as no answer.

    Example:
        >>> import jax.numpy as jnp
        >>> from inferax.search.lm import voting
        >>> answers = jnp.array([[3, 5, 5], [-1, -1, -1]])
        >>> voting.weighted_vote(answers, jnp.array([[0.9, 0.3, 0.3]] * 2), 10).tolist()
        [3, -1]
    """
    answers = _check_answers(answers)
    num_answers = _checks.positive_int(num_answers, "num_answers")
    _check_range(answers, num_answers)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != answers.shape:
        raise ValueError(
            f"weights: expected shape {answers.shape} (as answers), got {weights.shape}"
        )
    onehot = jax.nn.one_hot(answers, num_answers)  # -1 and out of range -> all zeros
    total = jnp.einsum("bnk,bn->bk", onehot, jnp.where(jnp.isnan(weights), 0.0, weights))
    voted = jnp.sum(onehot, axis=1) > 0
    has = jnp.any(voted, axis=-1)
    best = jnp.argmax(jnp.where(voted, total, -jnp.inf), axis=-1)
    return jnp.where(has, best, -1).astype(jnp.int32)


def majority_vote(answers: jax.Array, num_answers: int) -> jax.Array:
    """Per problem, the most frequent valid answer (self-consistency; ``weighted_vote``
    with unit weights: same range check, -1 when no sample answered).

    Args:
        answers: ``[B, N]`` int answers of ``N`` samples per problem (-1: none).
        num_answers: the number of distinct answers.

    Returns:
        ``[B]`` int32 most frequent answers (ties: the smaller one).

    Raises:
        ValueError: as ``weighted_vote``.

    Example:
        >>> import jax.numpy as jnp
        >>> from inferax.search.lm import voting
        >>> voting.majority_vote(jnp.array([[3, 5, 5, -1], [2, 2, 7, 7]]), 10).tolist()
        [5, 2]
    """
    answers = _check_answers(answers)
    return weighted_vote(answers, jnp.ones(answers.shape), num_answers)


class FirstFinish(NamedTuple):
    """First-finish search: the answer of the shortest finished sample.

    Attributes:
        answer: ``[B]``.
        tokens_spent: ``[B]`` N x (the first finisher's length): all N samples
            decode in lock-step until one finishes.
    """

    answer: jax.Array
    tokens_spent: jax.Array


def first_finish(answers: jax.Array, num_tokens: jax.Array, finished: jax.Array) -> FirstFinish:
    """First-finish search over ``N`` lock-step samples (ties: the lower index)."""
    answers = _check_answers(answers)
    n = answers.shape[1]
    length = jnp.where(finished, num_tokens, jnp.iinfo(jnp.int32).max)
    idx = jnp.argmin(length, axis=-1)
    first = jnp.take_along_axis(num_tokens, idx[:, None], axis=1)[:, 0]
    answer = jnp.take_along_axis(answers, idx[:, None], axis=1)[:, 0]
    return FirstFinish(answer, n * first)


def pass_at_k(n: npt.ArrayLike, c: npt.ArrayLike, k: npt.ArrayLike) -> np.ndarray:
    """The unbiased pass@k estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021).

    Computed as ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` in float64;
    broadcasts over arrays of ``n``, ``c``, ``k``.

    Args:
        n: samples drawn per problem (int or int array).
        c: correct samples among them.
        k: the ``k`` of pass@k.

    Returns:
        float64 array of the estimates (the broadcast shape of the arguments).

    Raises:
        TypeError: for non-integer ``n``, ``c`` or ``k``.
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n``.

    Example:
        >>> from inferax.search.lm import voting
        >>> float(voting.pass_at_k(n=10, c=0, k=5)), float(voting.pass_at_k(n=10, c=6, k=5))
        (0.0, 1.0)
    """
    n, c, k = (np.asarray(v) for v in (n, c, k))
    for name, v in (("n", n), ("c", c), ("k", k)):
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name}: expected integers, got dtype {v.dtype}")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError(f"c: expected 0 <= c <= n, got c={c.tolist()}, n={n.tolist()}")
    if np.any(k < 1) or np.any(k > n):
        raise ValueError(f"k: expected 1 <= k <= n, got k={k.tolist()}, n={n.tolist()}")
    n, c, k = np.broadcast_arrays(n, c, k)
    out = np.empty(n.shape, np.float64)
    for idx in np.ndindex(n.shape):
        ni, ci, ki = int(n[idx]), int(c[idx]), int(k[idx])
        if ni - ci < ki:
            out[idx] = 1.0
        else:
            i = np.arange(ni - ci + 1, ni + 1, dtype=np.float64)
            out[idx] = 1.0 - np.prod(1.0 - ki / i)
    return out


def coverage(num_correct, n: int, ks) -> np.ndarray:
    """Coverage(k): mean pass@k over problems, for every ``k`` in ``ks``."""
    num_correct = np.asarray(num_correct)
    return np.asarray([pass_at_k(n, num_correct, k).mean() for k in ks])


def fit_coverage(ks, cov) -> dict:
    """Fits coverage(k) = exp(a k^b) (Large Language Monkeys, eq. 2) by least squares.

    Nonlinear least squares on the coverage values themselves
    (``scipy.optimize.curve_fit``), started from the linear fit of
    ``log(-log coverage) = log(-a) + b log k`` on the points inside (0, 1)
    (that transform alone over-weights points near coverage 1, where it is
    noisiest).

    Returns:
        ``{"a", "b", "a_se", "b_se", "points"}``: estimates with standard errors
            from the fit's covariance.

    Raises:
        ValueError: with fewer than 3 finite points, fewer than 2 inside (0, 1),
            or when the fit does not converge.
    """
    from scipy import optimize

    ks, cov = np.asarray(ks, np.float64), np.asarray(cov, np.float64)
    ok = np.isfinite(cov) & np.isfinite(ks) & (ks > 0)
    inner = ok & (cov > 0) & (cov < 1)
    if ok.sum() < 3 or inner.sum() < 2:
        raise ValueError(
            "cov: expected at least 3 finite coverage values, 2 of them strictly inside (0, 1), "
            f"got {cov.tolist()}"
        )
    x, y = np.log(ks[inner]), np.log(-np.log(cov[inner]))
    b0, log_neg_a0 = np.polyfit(x, y, 1)
    try:
        (a, b), pcov = optimize.curve_fit(
            lambda k, a, b: np.exp(a * k**b), ks[ok], cov[ok], p0=(-math.exp(log_neg_a0), b0),
            maxfev=10_000,
        )  # fmt: skip
    except RuntimeError as e:
        raise ValueError(f"cov: the law exp(a k^b) could not be fitted ({e})") from None
    se = np.sqrt(np.clip(np.diag(pcov), 0.0, None)) if np.all(np.isfinite(pcov)) else [np.nan] * 2
    return {"a": float(a), "b": float(b), "a_se": float(se[0]), "b_se": float(se[1]),
            "points": int(ok.sum())}  # fmt: skip


def coverage_law(ks, a: float, b: float) -> np.ndarray:
    """exp(a k^b)."""
    return np.exp(a * np.asarray(ks, np.float64) ** b)
