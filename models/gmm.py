"""Analytic Gaussian-mixture oracle with exact flow-matching quantities.

For data x1 ~ sum_k pi_k N(mu_k, Sigma_k) and noise x0 ~ N(0, I), the linear
interpolant x_t = t x1 + (1 - t) x0 is again a mixture, with means t mu_k and
covariances C_k(t) = t^2 Sigma_k + (1 - t)^2 I. Its exact score and its
marginal velocity E[x1 - x0 | x_t] follow in closed form:

    v_k(x, t) = mu_k + (t Sigma_k - (1 - t) I) C_k(t)^{-1} (x - t mu_k)
    v(x, t)   = sum_k p(k | x, t) v_k(x, t)
    score     = - sum_k p(k | x, t) C_k(t)^{-1} (x - t mu_k)

so every sampler can be tested exactly, with no training. Pure JAX; works
under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GaussianMixture(NamedTuple):
    """A mixture of full-covariance Gaussians (a pytree).

    Attributes:
        log_weights: ``[K]`` normalised log mixture weights.
        means: ``[K, d]`` component means.
        covs: ``[K, d, d]`` component covariances (symmetric positive definite).
    """

    log_weights: jax.Array
    means: jax.Array
    covs: jax.Array

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> jax.Array:
        return jnp.exp(self.log_weights)

    # ----------------------------------------------------------------- density
    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """``[N, K]``: log pi_k + log N(x | mu_k, Sigma_k)."""
        return self.log_weights + _gauss_logpdf(x, self.means, self.covs)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """``[N]`` log density of the mixture at ``x [N, d]``."""
        return jax.nn.logsumexp(self.component_log_probs(x), axis=-1)

    def responsibilities(self, x: jax.Array) -> jax.Array:
        """``[N, K]`` posterior component probabilities p(k | x)."""
        return jax.nn.softmax(self.component_log_probs(x), axis=-1)

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``[num_samples, d]`` exact samples (those of ``sample_with_labels``)."""
        return self.sample_with_labels(key, num_samples)[0]

    def sample_with_labels(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """Exact samples ``[num_samples, d]`` and the int component ``[num_samples]`` of each."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=(num_samples,))
        chol = jnp.linalg.cholesky(self.covs)
        z = jax.random.normal(k_noise, (num_samples, self.dim), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z), comp

    def mean(self) -> jax.Array:
        return self.weights @ self.means

    def covariance(self) -> jax.Array:
        m = self.mean()
        d = self.means - m
        return jnp.einsum("k,kij->ij", self.weights, self.covs + d[:, :, None] * d[:, None, :])

    # --------------------------------------------- linear-interpolant marginals
    def marginal(self, t: jax.Array) -> GaussianMixture:
        """The law of x_t = t x1 + (1 - t) x0: means t mu_k, covs t^2 Sigma_k + (1-t)^2 I."""
        t = jnp.asarray(t, self.means.dtype)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return GaussianMixture(
            self.log_weights, t * self.means, t**2 * self.covs + (1 - t) ** 2 * eye
        )

    def velocity(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Exact marginal velocity E[x1 - x0 | x_t = x] at ``x [N, d]``, scalar ``t``."""
        t = jnp.asarray(t, self.means.dtype)
        marg = self.marginal(t)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        resid = x[:, None, :] - marg.means[None]  # [N, K, d]
        sol = _solve(marg.covs, resid)  # C_k^{-1} (x - t mu_k)
        gain = t * self.covs - (1 - t) * eye  # [K, d, d]
        v_k = self.means[None] + jnp.einsum("kij,nkj->nki", gain, sol)
        r = marg.responsibilities(x)
        return jnp.einsum("nk,nki->ni", r, v_k)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Exact score grad_x log p_t(x) of the marginal at time ``t`` (t < 1 or Sigma_k > 0)."""
        marg = self.marginal(t)
        resid = x[:, None, :] - marg.means[None]
        sol = _solve(marg.covs, resid)
        r = marg.responsibilities(x)
        return -jnp.einsum("nk,nki->ni", r, sol)

    def flow_map(self, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Exact ODE solution x_t from x_0 for a single Gaussian (K = 1).

        x_t = t mu + (t^2 Sigma + (1 - t)^2 I)^{1/2} x0, since the matrix square
        root commutes with the identity term.
        """
        if self.num_components != 1:
            raise ValueError(
                f"flow_map: closed form only for one component, got K = {self.num_components}"
            )
        t = jnp.asarray(t, self.means.dtype)
        c = self.marginal(t).covs[0]
        evals, evecs = jnp.linalg.eigh(c)
        sqrt_c = (evecs * jnp.sqrt(evals)) @ evecs.T
        return t * self.means[0] + x0 @ sqrt_c.T


def _solve(covs: jax.Array, resid: jax.Array) -> jax.Array:
    """C_k^{-1} r_nk for covs [K, d, d], resid [N, K, d].

    The K small inverses are formed once and applied with an einsum, which
    keeps the particle axis free of batched linear-algebra calls (and so
    shardable over devices).
    """
    d = covs.shape[-1]
    chol = jnp.linalg.cholesky(covs)
    eye = jnp.broadcast_to(jnp.eye(d, dtype=covs.dtype), covs.shape)
    inv = jax.scipy.linalg.cho_solve((chol, True), eye)
    return jnp.einsum("kij,nkj->nki", inv, resid)


def _gauss_logpdf(x: jax.Array, means: jax.Array, covs: jax.Array) -> jax.Array:
    d = means.shape[-1]
    chol = jnp.linalg.cholesky(covs)  # [K, d, d]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=covs.dtype), covs.shape)
    chol_inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)  # [K, d, d]
    resid = x[:, None, :] - means[None]  # [N, K, d]
    z = jnp.einsum("kij,nkj->nki", chol_inv, resid)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * (jnp.sum(z**2, axis=-1) + logdet + d * math.log(2 * math.pi))


def gaussian_mixture(weights, means, covs=None, scale: float = 1.0) -> GaussianMixture:
    """Builds a mixture; ``covs`` defaults to ``scale^2 I`` for every component.

    Raises:
        ValueError: on inconsistent shapes or non-positive weights.
    """
    means = jnp.asarray(means, jnp.result_type(float))
    if means.ndim != 2:
        raise ValueError(f"means: expected shape [K, d], got {means.shape}")
    k, d = means.shape
    w = np.asarray(weights, np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights: expected shape ({k},) to match means, got {w.shape}")
    if np.any(w <= 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights: expected positive finite weights, got {w}")
    log_w = jnp.asarray(np.log(w / w.sum()), means.dtype)
    if covs is None:
        covs = jnp.broadcast_to(scale**2 * jnp.eye(d, dtype=means.dtype), (k, d, d))
    covs = jnp.asarray(covs, means.dtype)
    if covs.shape != (k, d, d):
        raise ValueError(f"covs: expected shape ({k}, {d}, {d}), got {covs.shape}")
    return GaussianMixture(log_w, means, covs)


def eight_gaussians(radius: float = 2.0, scale: float = 0.2) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians on a circle."""
    ang = np.arange(8) * 2 * np.pi / 8
    means = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return gaussian_mixture(np.ones(8), means, scale=scale)


def random_mixture(
    key: jax.Array,
    num_components: int = 40,
    dim: int = 2,
    loc_scale: float = 40.0,
    scale: float = 1.0,
) -> GaussianMixture:
    """Equal-weight mixture with means uniform on ``[-loc_scale, loc_scale]^dim``.

    ``num_components=40, loc_scale=40`` is the 40-mode annealing benchmark of
    the Feynman-Kac corrector paper.
    """
    means = jax.random.uniform(key, (num_components, dim), minval=-loc_scale, maxval=loc_scale)
    return gaussian_mixture(np.ones(num_components), means, scale=scale)
