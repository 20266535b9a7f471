"""Metrics against float64 references and closed forms."""

import jax
import numpy as np
import pytest

from inferax.experiments import metrics


def test_energy_distance_matches_numpy_and_detects_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(200, 2)) + 0.5

    def d(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    ref = 2 * d(x, y).mean() - d(x, x).sum() / (300 * 299) - d(y, y).sum() / (200 * 199)
    np.testing.assert_allclose(metrics.energy_distance(x, y), ref, rtol=1e-4)
    same = metrics.energy_distance(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))
    assert abs(same) < 0.02 < ref


def test_sliced_wasserstein_of_a_shift():
    # Projected shift of c along direction u is |c . u|; its mean over uniform u in 2-D is 2|c|/pi.
    x = np.random.default_rng(1).normal(size=(4000, 2))
    c = np.array([1.0, 0.0])
    sw = metrics.sliced_wasserstein(jax.random.key(0), x, x + c, num_projections=4000)
    np.testing.assert_allclose(sw, 2 / np.pi, rtol=0.03)


def test_frechet_distance_closed_form():
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    c1, c2 = np.diag([1.0, 2.0, 3.0]), np.diag([4.0, 2.0, 0.5])
    expected = 5.0 + sum((np.sqrt(a) - np.sqrt(b)) ** 2 for a, b in [(1, 4), (2, 2), (3, 0.5)])
    np.testing.assert_allclose(metrics.frechet_distance(mu1, c1, mu2, c2), expected, rtol=1e-10)
    assert abs(metrics.frechet_distance(mu1, c1, mu1, c1)) < 1e-10


def test_mode_weight_error():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    samples = np.concatenate([np.zeros((30, 2)), np.full((70, 2), [10.0, 0.0])])
    assert metrics.mode_weight_error(samples, means, [0.3, 0.7]) == pytest.approx(0.0)
    assert metrics.mode_weight_error(samples, means, [0.5, 0.5]) == pytest.approx(0.2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        metrics.energy_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="shape"):
        metrics.sliced_wasserstein(jax.random.key(0), np.zeros((5, 2)), np.zeros((6, 2)))
