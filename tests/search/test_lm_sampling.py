"""Tests for inferax.search.lm.voting.

Truths: pass@k against the combinatorial formula (math.comb) and a Monte
Carlo estimate of drawing k of n without replacement; the coverage law's
parameters recovered from data drawn from a known law; hand-worked votes and
aggregations, with negative controls (a wrong weight changes the winner).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.search.lm import voting as ls


def test_pass_at_k_exact_and_monte_carlo():
    for n, c, k in [(10, 3, 1), (10, 3, 4), (20, 0, 5), (20, 20, 3), (64, 5, 16), (9, 6, 4)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert ls.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert ls.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    n, c, k = 12, 3, 4
    pool = np.arange(n) < c
    hits = np.mean([pool[rng.permutation(n)[:k]].any() for _ in range(20000)])
    assert abs(hits - ls.pass_at_k(n, c, k)) < 0.015
    got = ls.pass_at_k(np.array([10, 10]), np.array([2, 5]), 3)
    assert got.shape == (2,) and got[1] > got[0]
    with pytest.raises(ValueError, match="k: expected 1 <= k <= n"):
        ls.pass_at_k(5, 1, 6)
    with pytest.raises(ValueError, match="c: expected 0 <= c <= n"):
        ls.pass_at_k(5, 6, 1)
    with pytest.raises(TypeError, match="k: expected integers"):
        ls.pass_at_k(5, 1, 1.5)


def test_coverage_fit_recovers_known_law():
    a, b = -1.6, -0.45
    ks = 2 ** np.arange(9)
    rng = np.random.default_rng(1)
    m = 40000  # Bernoulli draws per k
    cov = rng.binomial(m, ls.coverage_law(ks, a, b)) / m
    fit = ls.fit_coverage(ks, cov)
    assert abs(fit["a"] - a) < max(4 * fit["a_se"], 0.02)
    assert abs(fit["b"] - b) < max(4 * fit["b_se"], 0.01)
    assert fit["points"] == 9 and fit["a_se"] > 0 and fit["b_se"] > 0
    # negative control: another law is not recovered
    other = ls.fit_coverage(ks, ls.coverage_law(ks, -1.0, -0.2))
    assert abs(other["b"] - b) > 0.2
    with pytest.raises(ValueError, match="cov: expected at least 3"):
        ls.fit_coverage([1, 2, 4], [1.0, 1.0, 0.5])
    # a law whose early points sit far from 1 is fitted there too (no log(-log) bias)
    ks2 = np.array([1, 2, 4, 8, 16, 32])
    exact = ls.coverage_law(ks2, -0.7, -0.6)
    fit2 = ls.fit_coverage(ks2, np.minimum(exact + np.array([0, 0, 0, 0, 0.004, 0.004]), 1.0))
    assert np.max(np.abs(ls.coverage_law(ks2, fit2["a"], fit2["b"]) - exact)) < 0.01


def test_coverage_from_counts():
    cov = ls.coverage(np.array([0, 4, 8]), 8, [1, 8])
    np.testing.assert_allclose(cov, [(0 + 0.5 + 1) / 3, 2 / 3])


def test_aggregations():
    scores = jnp.array([[0.9, 0.5, 0.8, 0.1], [0.9, 0.5, 0.8, 0.1], [0.3, 0.3, 0.3, 0.3]])
    scored = jnp.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_allclose(ls.aggregate(scores, scored, "last"), [0.8, 0.1, 0.0])
    np.testing.assert_allclose(ls.aggregate(scores, scored, "min"), [0.8, 0.1, 0.0])
    np.testing.assert_allclose(ls.aggregate(scores, scored, "prod"), [0.72, 0.036, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="how: expected one of"):
        ls.aggregate(scores, scored, "mean")


def test_votes_and_best_of_n():
    answers = jnp.array([[3, 3, 5, 5, 5, -1], [-1, -1, -1, -1, -1, -1], [1, 2, 2, 1, 7, 7]])
    w = jnp.array([[0.9, 0.9, 0.1, 0.1, 0.1, 1.0], [1.0] * 6, [0.1, 0.2, 0.2, 0.1, 0.3, 0.4]])
    assert ls.majority_vote(answers, 10).tolist() == [5, -1, 1]  # tie 1/2/7 -> smallest
    assert ls.weighted_vote(answers, w, 10).tolist() == [3, -1, 7]
    # negative control: uniform weights give the majority answer back
    assert ls.weighted_vote(answers, jnp.ones(w.shape), 10).tolist() == [5, -1, 1]
    # the best-scoring sample without an answer (-1) is passed over
    assert ls.best_of_n(answers, w).tolist() == [3, -1, 7]
    # a NaN score never wins (it used to: argmax takes NaN as the maximum); with every
    # answered sample's score NaN or -inf, the first answered sample is chosen
    nan = jnp.nan
    s = jnp.array([[0.2, nan, 0.9, 0.1, nan, 1.0], [nan] * 6, [nan, -jnp.inf, nan, nan, nan, nan]])
    a2 = answers.at[2, 0].set(-1)
    assert ls.best_of_n(a2, s).tolist() == [5, -1, 2]
    assert jax.jit(ls.best_of_n)(a2, s).tolist() == [5, -1, 2]
    with pytest.raises(ValueError, match=r"scores: expected shape \(3, 6\) \(as answers\)"):
        ls.best_of_n(answers, w[:, :5])
    ff = ls.first_finish(
        answers, jnp.array([[9, 7, 7, 8, 9, 3]] * 3), jnp.array([[1, 1, 1, 1, 1, 0]] * 3, bool)
    )
    assert ff.answer.tolist() == [3, -1, 2] and ff.tokens_spent.tolist() == [42] * 3
    with pytest.raises(ValueError, match="answers: expected int answers"):
        ls.majority_vote(jnp.zeros((3,), jnp.int32), 10)


def test_votes_reject_out_of_range_answers():
    """Issue 18: an answer outside [0, num_answers) was dropped silently."""
    answers = jnp.array([[3, 3, 12], [1, -2, 1]])
    with pytest.raises(ValueError, match=r"answers: expected integers in \[0, num_answers = 10\)"):
        ls.majority_vote(answers, 10)
    with pytest.raises(ValueError, match=r"got \[-2, 12\]"):
        ls.weighted_vote(answers, jnp.ones(answers.shape), 10)
    # in range (and -1) passes; the out-of-range problem alone would have voted 3
    assert ls.majority_vote(jnp.array([[3, 3, 9], [-1, -1, 0]]), 10).tolist() == [3, 0]
    with pytest.raises(ValueError, match="weights: expected shape"):
        ls.weighted_vote(jnp.array([[3, 3, 9]]), jnp.ones((2,)), 10)


def test_weighted_vote_nan_weights_count_as_zero():
    """Issue 18: a NaN weight made the winner an answer nobody voted for."""
    answers = jnp.array([[4, 4, 7], [5, 5, 5], [2, 6, 6]])
    w = jnp.array([[jnp.nan, 0.2, 0.3], [jnp.nan, jnp.nan, jnp.nan], [0.9, jnp.nan, 0.1]])
    got = ls.weighted_vote(answers, w, 10).tolist()
    # row 0: 4 has 0.2 (NaN -> 0), 7 has 0.3; row 1: all weights 0, only 5 was voted;
    # row 2: 2 has 0.9, 6 has 0.1
    assert got == [7, 5, 2]
    # negative control: with the NaN as a real weight the answers change
    assert ls.weighted_vote(answers, jnp.nan_to_num(w, nan=1.0), 10).tolist() == [4, 5, 6]
