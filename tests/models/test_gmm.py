"""The Gaussian-mixture oracle against independent float64 NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm


def _np_logpdf(x, means, covs, log_w):
    out = []
    for mu, cov, lw in zip(means, covs, log_w, strict=True):
        d = x - mu
        inv = np.linalg.inv(cov)
        _, logdet = np.linalg.slogdet(cov)
        out.append(
            lw - 0.5 * (np.einsum("ni,ij,nj->n", d, inv, d) + logdet + len(mu) * np.log(2 * np.pi))
        )
    out = np.stack(out, 1)
    m = out.max(1, keepdims=True)
    return (m + np.log(np.exp(out - m).sum(1, keepdims=True)))[:, 0]


@pytest.fixture
def mixture():
    covs = np.array(
        [[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.05], [-0.05, 0.4]], [[0.1, 0.0], [0.0, 0.1]]]
    )
    return gmm.gaussian_mixture([0.5, 0.3, 0.2], [[1.0, -1.0], [-2.0, 0.5], [0.0, 2.0]], covs)


def test_log_prob_matches_numpy(mixture):
    x = np.random.default_rng(0).normal(size=(50, 2)) * 2
    ref = _np_logpdf(
        x,
        np.asarray(mixture.means, np.float64),
        np.asarray(mixture.covs, np.float64),
        np.asarray(mixture.log_weights, np.float64),
    )
    np.testing.assert_allclose(
        mixture.log_prob(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-4
    )


def test_marginal_velocity_and_score_match_finite_differences(mixture):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(20, 2)), jnp.float32)
    for t in [0.0, 0.3, 0.8]:
        marg = mixture.marginal(t)
        grad = jax.vmap(jax.grad(lambda y, m=marg: m.log_prob(y[None])[0]))(x)
        np.testing.assert_allclose(mixture.score(x, t), grad, rtol=1e-4, atol=1e-4)
        # Linear-interpolant identity: score = (t u - x) / (1 - t).
        u = mixture.velocity(x, t)
        np.testing.assert_allclose(mixture.score(x, t), (t * u - x) / (1 - t), rtol=1e-4, atol=1e-4)


def test_velocity_is_conditional_expectation_by_monte_carlo():
    # E[x1 - x0 | x_t] estimated by binning joint samples around one point (1-D mixture).
    mix = gmm.gaussian_mixture([0.4, 0.6], [[-1.5], [1.0]], scale=0.5)
    key = jax.random.key(0)
    k1, k0 = jax.random.split(key)
    n, t, x_star = 2_000_000, 0.6, 0.3
    x1 = mix.sample(k1, n)
    x0 = jax.random.normal(k0, (n, 1))
    xt = t * x1 + (1 - t) * x0
    sel = np.abs(np.asarray(xt[:, 0]) - x_star) < 0.01
    mc = float(np.mean(np.asarray((x1 - x0)[sel, 0])))
    exact = float(mix.velocity(jnp.array([[x_star]]), t)[0, 0])
    se = float(np.std(np.asarray((x1 - x0)[sel, 0])) / np.sqrt(sel.sum()))
    assert abs(mc - exact) < 5 * se + 0.01, (mc, exact, se)


def test_sample_moments(mixture):
    x = mixture.sample(jax.random.key(3), 200_000)
    np.testing.assert_allclose(x.mean(0), mixture.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), mixture.covariance(), atol=0.02)


def test_flow_map_solves_the_ode():
    g = gmm.gaussian_mixture([1.0], [[1.0, -2.0]], [[[0.3, 0.1], [0.1, 0.2]]])
    x0 = jax.random.normal(jax.random.key(0), (5, 2))
    t, h = 0.4, 1e-3
    dx = (g.flow_map(x0, t + h) - g.flow_map(x0, t - h)) / (2 * h)
    np.testing.assert_allclose(dx, g.velocity(g.flow_map(x0, t), t), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(g.flow_map(x0, 0.0), x0, atol=1e-6)
    with pytest.raises(ValueError, match="one component"):
        gmm.eight_gaussians().flow_map(x0, 0.5)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="means"):
        gmm.gaussian_mixture([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="weights"):
        gmm.gaussian_mixture([1.0, -1.0], [[0.0], [1.0]])
    with pytest.raises(ValueError, match="covs"):
        gmm.gaussian_mixture([1.0], [[0.0, 0.0]], np.eye(3)[None])
