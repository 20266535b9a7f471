"""Sample-quality metrics used by the experiments.

All metrics take two sample sets with a leading sample axis and return a
Python float. They are checked against float64 NumPy references and against
closed forms in tests/experiments/test_metrics.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _pairwise_mean_dist(x: jax.Array, y: jax.Array, exclude_diagonal: bool) -> jax.Array:
    d = jnp.sqrt(jnp.maximum(jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1), 0.0))
    if exclude_diagonal:
        n = x.shape[0]
        return jnp.sum(d) / (n * (n - 1))
    return jnp.mean(d)


@jax.jit
def _energy_distance(x, y):
    return (
        2.0 * _pairwise_mean_dist(x, y, False)
        - _pairwise_mean_dist(x, x, True)
        - _pairwise_mean_dist(y, y, True)
    )


def energy_distance(x, y) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo).

    The within-sample terms exclude the diagonal (U-statistics), so the
    estimate is unbiased and can be slightly negative when the laws agree.
    Inputs are flattened to ``[n, features]``.
    """
    x = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
    y = jnp.asarray(y, jnp.float32).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} features like x, got {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"x, y: expected at least 2 samples each, got {len(x)} and {len(y)}")
    return float(_energy_distance(x, y))


def sliced_wasserstein(key: jax.Array, x, y, num_projections: int = 256) -> float:
    """Sliced 1-Wasserstein distance with ``num_projections`` random directions.

    Requires equal sample sizes (sorted projections are matched one to one).
    """
    x = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
    y = jnp.asarray(y, jnp.float32).reshape(len(y), -1)
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x {x.shape}, got {y.shape}")
    dirs = jax.random.normal(key, (x.shape[1], num_projections))
    dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = jnp.sort(x @ dirs, axis=0), jnp.sort(y @ dirs, axis=0)
    return float(jnp.mean(jnp.abs(px - py)))


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (as in FID).

    ||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2}), computed in
    float64 with symmetric eigendecompositions (no complex sqrtm).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    w1, v1 = np.linalg.eigh(cov1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = sqrt1 @ cov2 @ sqrt1
    w = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = np.sum(np.sqrt(np.clip(w, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def frechet_distance_features(f1, f2) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets."""
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def mode_weight_error(samples, means, target_weights) -> float:
    """Total-variation distance between the share of samples nearest each mode and the
    target mode weights: 0.5 sum_k |hat w_k - w_k|."""
    x = np.asarray(samples, np.float64)
    m = np.asarray(means, np.float64)
    w = np.asarray(target_weights, np.float64)
    nearest = np.argmin(((x[:, None, :] - m[None]) ** 2).sum(-1), axis=1)
    hat = np.bincount(nearest, minlength=len(m)) / len(x)
    return float(0.5 * np.abs(hat - w / w.sum()).sum())
