"""Exact samples of 2-D target densities for the experiments.

``grid_samples`` draws from any unnormalised 2-D log-density on a fine grid
(tempered mixtures, CFG geometric mixtures); ``product_mixture`` gives the
closed-form product of two Gaussian mixtures; ``build_problems`` draws the
Feynman-Kac experiment's three targets (with their exact samplers) from a config
and a key.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from inferax.models import gmm

__all__ = ["build_problems", "grid_samples", "product_mixture"]


def grid_samples(
    key: jax.Array, log_density_fn: Callable, lo, hi, resolution: int, n: int
) -> np.ndarray:
    """Exact-up-to-discretisation samples of an unnormalised 2-D density.

    Evaluates ``log_density_fn([M, 2]) -> [M]`` at the centres of a
    ``resolution x resolution`` grid over the box ``[lo, hi]``, draws cells with
    probability proportional to the density (inverse CDF in float64) and places
    each sample uniformly inside its cell.

    Returns:
        ``float32 [n, 2]``.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo.shape != (2,) or hi.shape != (2,) or not np.all(hi > lo):
        raise ValueError(f"lo, hi: expected 2-D corners with hi > lo, got {lo} and {hi}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution: expected an int >= 2, got {resolution!r}")
    h = (hi - lo) / resolution
    centres = [lo[d] + (np.arange(resolution) + 0.5) * h[d] for d in range(2)]
    rows = max(1, 200_000 // resolution)
    fn = jax.jit(log_density_fn)
    logits = np.empty((resolution, resolution), np.float64)
    for r0 in range(0, resolution, rows):
        idx = np.arange(r0, r0 + rows) % resolution  # fixed chunk shape: one compile
        xx, yy = np.meshgrid(centres[0][idx], centres[1], indexing="ij")
        pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
        vals = np.asarray(fn(pts), np.float64).reshape(rows, resolution)
        keep = min(rows, resolution - r0)
        logits[r0 : r0 + keep] = vals[:keep]
    logits = np.where(np.isfinite(logits), logits, -np.inf).ravel()
    cdf = np.cumsum(np.exp(logits - logits.max()))
    k_cell, k_jit = jax.random.split(key)
    u = np.asarray(jax.random.uniform(k_cell, (n,)), np.float64) * cdf[-1]
    cell = np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)
    ij = np.stack([cell // resolution, cell % resolution], -1)
    jitter = np.asarray(jax.random.uniform(k_jit, (n, 2)), np.float64)
    return (lo + (ij + jitter) * h).astype(np.float32)


def product_mixture(p1: gmm.GaussianMixture, p2: gmm.GaussianMixture) -> gmm.GaussianMixture:
    """The normalised product p1 p2 of two mixtures: a mixture of K1 K2 Gaussians.

    N(x; m_i, S_i) N(x; m_j, S_j) = N(m_i; m_j, S_i + S_j) N(x; m_ij, S_ij) with
    S_ij = (S_i^-1 + S_j^-1)^-1 and m_ij = S_ij (S_i^-1 m_i + S_j^-1 m_j); weights
    pi_i pi_j N(m_i; m_j, S_i + S_j), normalised (computed in float64).
    """
    m1, m2 = np.asarray(p1.means, np.float64), np.asarray(p2.means, np.float64)
    c1, c2 = np.asarray(p1.covs, np.float64), np.asarray(p2.covs, np.float64)
    lw1, lw2 = np.asarray(p1.log_weights, np.float64), np.asarray(p2.log_weights, np.float64)
    d = m1.shape[1]
    p1i, p2i = np.linalg.inv(c1), np.linalg.inv(c2)
    cov = np.linalg.inv(p1i[:, None] + p2i[None])  # [K1, K2, d, d]
    mean = np.einsum("abij,abj->abi", cov, (p1i @ m1[..., None])[:, None, :, 0]
                     + (p2i @ m2[..., None])[None, :, :, 0])  # fmt: skip
    s = c1[:, None] + c2[None]
    diff = m1[:, None] - m2[None]
    quad = np.einsum("abi,abi->ab", diff, np.linalg.solve(s, diff[..., None])[..., 0])
    log_norm = -0.5 * (quad + np.linalg.slogdet(s)[1] + d * np.log(2 * np.pi))
    logw = (lw1[:, None] + lw2[None] + log_norm).ravel()
    w = np.exp(logw - logw.max())
    return gmm.gaussian_mixture(w, mean.reshape(-1, d), cov.reshape(-1, d, d))


def _scaled(mix: gmm.GaussianMixture, s: float) -> gmm.GaussianMixture:
    return gmm.GaussianMixture(mix.log_weights, mix.means / s, mix.covs / s**2)


def _mixture(key, num_components, loc_scale, scale, weight_range=0.0) -> gmm.GaussianMixture:
    """``random_mixture`` means; log-weights uniform in [-weight_range, weight_range]."""
    k_m, k_w = jax.random.split(key)
    base = gmm.random_mixture(k_m, num_components, 2, loc_scale, scale)
    logw = jax.random.uniform(k_w, (num_components,), minval=-1.0, maxval=1.0)
    return gmm.gaussian_mixture(np.exp(weight_range * np.asarray(logw)), base.means, base.covs)


def _box(mixes) -> tuple[np.ndarray, np.ndarray]:
    means = np.concatenate([np.asarray(m.means) for m in mixes])
    std = max(float(np.sqrt(np.max(np.asarray(m.covs)))) for m in mixes)
    return means.min(0) - 5 * std, means.max(0) + 5 * std


def build_problems(config, key: jax.Array) -> dict:
    """Base mixtures, exact target samplers, mode centres and settings per target."""
    k_a, k_p1, k_p2, k_c = jax.random.split(key, 4)
    a = config.anneal
    base = _mixture(k_a, a.num_components, a.loc_scale, a.scale, a.log_weight_range)
    base = _scaled(base, a.data_scale)
    pc = config.product
    p1 = _scaled(_mixture(k_p1, pc.p1.num_components, pc.p1.loc_scale, pc.p1.scale), pc.data_scale)
    p2 = _scaled(_mixture(k_p2, pc.p2.num_components, pc.p2.loc_scale, pc.p2.scale), pc.data_scale)
    prod = product_mixture(p1, p2)
    c = config.cfg
    k = c.num_classes * c.components_per_class
    cmix = _mixture(k_c, k, c.loc_scale, c.scale)
    cls = np.repeat(np.arange(c.num_classes), c.components_per_class)
    classes = [
        gmm.gaussian_mixture(np.ones(c.components_per_class), cmix.means[cls == i], scale=c.scale)
        for i in range(c.num_classes)
    ]
    res = config.grid_resolution
    pw = np.asarray(prod.weights)
    problems = {
        "anneal": {
            "mixtures": {"p": base},
            "centres": np.asarray(base.means),
            "box": _box([base]),
            "settings": {
                f"beta={b:g}": {"beta": b, "log_density": lambda x, b=b: b * base.log_prob(x)}
                for b in a.betas
            },
        },
        "product": {
            "mixtures": {"p1": p1, "p2": p2},
            "centres": np.asarray(prod.means)[pw > 1e-3],
            "box": _box([prod]),
            "settings": {"p1*p2": {"exact": prod}},
        },
        "cfg": {
            "mixtures": {"q_u": cmix, **{f"q_{i}": q for i, q in enumerate(classes)}},
            "centres": np.asarray(cmix.means),
            "box": _box([cmix]),
            "class_of_component": cls,
            "settings": {
                f"w={w:g}": {
                    "w": w,
                    "log_density": lambda x, w=w: (
                        (1 - w) * cmix.log_prob(x) + w * classes[c.cond_class].log_prob(x)
                    ),
                }
                for w in c.ws
            },
        },
    }
    for prob in problems.values():
        for s in prob["settings"].values():
            if "exact" in s:
                s["sampler"] = lambda k, n, m=s["exact"]: np.asarray(m.sample(k, n))
            else:
                lo, hi = prob["box"]
                s["sampler"] = lambda k, n, f=s["log_density"], lo=lo, hi=hi: grid_samples(
                    k, f, lo, hi, res, n
                )
    return problems
