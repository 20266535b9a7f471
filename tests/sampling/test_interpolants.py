"""Interpolants against the exact Gaussian-mixture oracle (models/gmm.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import cost, flow
from inferax.sampling import interpolants as I

TIMES = [0.0, 0.1, 0.37, 0.5, 0.8, 0.95]


def _mixture():
    return gmm.gaussian_mixture(
        [0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], covs=[[[0.5, 0.1], [0.1, 0.3]], 0.4 * np.eye(2)]
    )


def _points(n=64, seed=0):
    return 2.0 * jax.random.normal(jax.random.key(seed), (n, 2))


def _exact_posterior_mean(m, x, t):
    """E[x1 | x_t = x] for the linear path, from the mixture posterior (float32 JAX)."""
    marg = m.marginal(t)
    resid = x[:, None, :] - marg.means[None]
    sol = jnp.linalg.solve(marg.covs[None], resid[..., None])[..., 0]  # C_k^{-1}(x - t mu_k)
    comp = m.means[None] + t * jnp.einsum("kij,nkj->nki", m.covs, sol)
    return jnp.einsum("nk,nki->ni", marg.responsibilities(x), comp)


def test_boundary_values_and_vp_identity():
    lin, vp = I.linear(), I.vp()
    assert float(lin.a(0.0)) == 0.0 and float(lin.b(0.0)) == 1.0
    assert float(lin.a(1.0)) == 1.0 and float(lin.b(1.0)) == 0.0
    assert float(vp.a(1.0)) == 1.0 and float(vp.b(1.0)) == 0.0
    # a(0) is tiny, not exactly 0: exp(-(beta_max + beta_min) / 4).
    np.testing.assert_allclose(float(vp.a(0.0)), np.exp(-(20.0 + 0.1) / 4), rtol=1e-5)
    ts = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(vp.a(ts) ** 2 + vp.b(ts) ** 2, 1.0, rtol=1e-6)


@pytest.mark.parametrize("make", [I.linear, I.vp, lambda: I.vp(0.5, 5.0)])
def test_closed_form_derivatives_match_autodiff(make):
    interp = make()
    for t in [0.0, 0.2, 0.5, 0.9, 0.99]:
        da, db = I.derivatives_by_autodiff(interp, t)
        np.testing.assert_allclose(interp.da(jnp.float32(t)), da, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(interp.db(jnp.float32(t)), db, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", TIMES)
def test_linear_score_and_posterior_mean_match_oracle(t):
    m, x = _mixture(), _points()
    u = m.velocity(x, t)
    np.testing.assert_allclose(
        I.score_from_velocity(I.linear(), u, x, t), m.score(x, t), rtol=1e-4, atol=1e-4
    )
    x1_hat = I.posterior_mean_from_velocity(I.linear(), u, x, t)
    np.testing.assert_allclose(x1_hat, _exact_posterior_mean(m, x, t), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x1_hat, x + (1 - t) * u, rtol=1e-5, atol=1e-5)
    # the inverse map (regular for t > 0)
    if t > 0:
        back = I.velocity_from_score(I.linear(), m.score(x, t), x, t)
        np.testing.assert_allclose(back, u, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("s", [0.05, 0.3, 0.6, 0.9])
def test_vp_conversion_score_and_posterior_mean(s):
    """VP quantities from the converted velocity equal the rescaled linear-path truths."""
    m, x = _mixture(), _points()
    vp = I.vp()
    u_vp = I.convert_velocity(m.velocity, vp)(x, jnp.float32(s))
    t_s, c_s = I.time_to_linear(vp, s)
    # x_bar_s = c_s x_{t_s}: p_vp(x) = p_lin(x / c) / c^d, so score_vp = score_lin(x / c) / c.
    np.testing.assert_allclose(
        I.score_from_velocity(vp, u_vp, x, s), m.score(x / c_s, t_s) / c_s, rtol=2e-3, atol=2e-3
    )
    np.testing.assert_allclose(
        I.posterior_mean_from_velocity(vp, u_vp, x, s),
        _exact_posterior_mean(m, x / c_s, t_s),
        rtol=2e-3,
        atol=2e-3,
    )


@pytest.mark.parametrize("s", [0.0, 0.25, 0.7, 0.97])
def test_vp_marginal_is_rescaled_linear_marginal(s):
    """Moments of a_bar x1 + b_bar x0 equal c_s times those of the linear marginal at t_s."""
    m, vp = _mixture(), I.vp()
    t_s, c_s = I.time_to_linear(vp, s)
    a, b = vp.a(jnp.float32(s)), vp.b(jnp.float32(s))
    lin = m.marginal(t_s)
    np.testing.assert_allclose(c_s * lin.mean(), a * m.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        c_s**2 * lin.covariance(), a**2 * m.covariance() + b**2 * jnp.eye(2), rtol=1e-5, atol=1e-6
    )
    # and by Monte Carlo from the definition of the VP path
    k1, k2 = jax.random.split(jax.random.key(3))
    xs = a * m.sample(k1, 200_000) + b * jax.random.normal(k2, (200_000, 2))
    np.testing.assert_allclose(xs.mean(0), c_s * lin.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(np.asarray(xs).T), c_s**2 * lin.covariance(), atol=0.02)


def test_converted_vp_velocity_reproduces_mixture_moments():
    """flow.sample of the converted VP velocity from N(0, I) reaches the data moments.

    Tolerances: 20000 samples give standard errors ~0.01 (mean) and ~0.02
    (covariance); the start N(0, I) differs from the VP marginal at s = 0 by
    a(0) x1 (a(0) ~ 6.6e-3), and Euler on 400 steps adds ~0.01.
    """
    m = _mixture()
    v = I.convert_velocity(m.velocity, I.vp())
    x0 = jax.random.normal(jax.random.key(1), (20_000, 2))
    ts = 1.0 - (1.0 - jnp.linspace(0.0, 1.0, 401)) ** 2  # finer near the data, where b' diverges
    x1, info = jax.jit(lambda x: flow.sample(v, x, ts))(x0)
    assert int(info.nfe) == 400
    np.testing.assert_allclose(x1.mean(0), m.mean(), atol=0.04)
    np.testing.assert_allclose(np.cov(np.asarray(x1).T), m.covariance(), atol=0.06)
    frac_left = float(jnp.mean(x1[:, 0] < -0.25))
    assert abs(frac_left - 0.3) < 0.015
    # negative check: the unconverted linear velocity run on the same grid as if it
    # were VP differs (same grid, so the test can tell paths apart).
    x1_lin, _ = flow.sample(m.velocity, x0, ts)
    np.testing.assert_allclose(x1_lin.mean(0), m.mean(), atol=0.04)  # itself correct
    wrong = I.convert_velocity(lambda x, t: m.velocity(x, 1.0 - t), I.vp())
    x1_wrong, _ = flow.sample(wrong, x0, ts)
    assert np.max(np.abs(np.cov(np.asarray(x1_wrong).T) - m.covariance())) > 0.2


def test_convert_velocity_keeps_the_cost_and_traces_once():
    traces = []

    def v(x, t):
        traces.append(1)
        return -x

    u = I.convert_velocity(cost.with_cost(v, 2), I.vp())
    assert isinstance(u, cost.Costed) and cost.nfe_per_call(u) == 2
    x0 = jnp.ones((4, 2))
    assert int(flow.sample(u, x0, jnp.linspace(0.0, 0.9, 4))[1].nfe) == 6
    plain = I.convert_velocity(v, I.vp())
    assert not isinstance(plain, cost.Costed) and cost.nfe_per_call(plain) == 1
    traces.clear()
    f = jax.jit(u)
    f(jnp.ones((4, 2)), 0.3)
    f(jnp.ones((4, 2)), 0.6)
    assert len(traces) == 1


MU, SIGMA = 2.0, 0.5  # 1-D data N(MU, SIGMA^2), off the origin


@pytest.mark.parametrize("interp", [I.linear(), I.vp()], ids=["linear", "vp"])
def test_renoise_keeps_the_exact_gaussian_marginal_and_coupling(interp):
    n, t, s = 200_000, 0.7, 0.4
    k1, k0, kr = jax.random.split(jax.random.key(20), 3)
    x1 = MU + SIGMA * jax.random.normal(k1, (n, 1))
    x_t = interp.a(t) * x1 + interp.b(t) * jax.random.normal(k0, (n, 1))
    x_s = I.renoise(kr, interp, x_t, t, s)
    assert x_s.shape == x_t.shape and x_s.dtype == x_t.dtype
    a_s, b_s = float(interp.a(s)), float(interp.b(s))
    xs, d = np.asarray(x_s[:, 0], np.float64), np.asarray(x1[:, 0], np.float64)
    # Exact: x_s = a_s x1 + b_s eps. SEs with 2e5 samples: mean ~2e-3, var/cov ~3e-3.
    assert abs(xs.mean() - a_s * MU) < 0.01
    assert abs(xs.var() - (a_s**2 * SIGMA**2 + b_s**2)) < 0.015
    assert abs(np.cov(xs, d)[0, 1] - a_s * SIGMA**2) < 0.01  # the joint with the data, too
    # Negative control: an ad hoc re-noising x_t + sqrt(t - s) eps misses the marginal.
    ad_hoc = x_t + np.sqrt(t - s) * jax.random.normal(kr, x_t.shape)
    assert abs(float(ad_hoc.mean()) - a_s * MU) > 0.1


@pytest.mark.parametrize("interp", [I.linear(), I.vp()], ids=["linear", "vp"])
def test_renoise_kernels_compose(interp):
    n, t, s, r, x = 200_000, 0.8, 0.55, 0.3, 1.3
    x_t = jnp.full((n, 1), x)
    ka, kb, kc = jax.random.split(jax.random.key(21), 3)
    two_hops = I.renoise(kb, interp, I.renoise(ka, interp, x_t, t, s), s, r)
    one_hop = I.renoise(kc, interp, x_t, t, r)
    a_t, b_t, a_r, b_r = (
        float(f(u)) for f, u in ((interp.a, t), (interp.b, t), (interp.a, r), (interp.b, r))
    )
    mean, var = a_r / a_t * x, b_r**2 - (a_r * b_t / a_t) ** 2
    for y in (two_hops, one_hop):
        y = np.asarray(y, np.float64)
        assert abs(y.mean() - mean) < 0.01 and abs(y.var() / var - 1) < 0.02
    # s = t is the identity.
    np.testing.assert_allclose(I.renoise(ka, interp, x_t[:4], t, t), x_t[:4], rtol=1e-5)


def test_renoise_rejects_bad_times():
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"t: expected a time with a\(t\) > 0"):
        I.renoise(jax.random.key(0), I.linear(), x, 0.0, 0.0)
    with pytest.raises(ValueError, match="s: expected a time s <= t"):
        I.renoise(jax.random.key(0), I.linear(), x, 0.3, 0.5)
    with pytest.raises(TypeError, match="interp"):
        I.renoise(jax.random.key(0), "linear", x, 0.5, 0.3)
    # Traced times: no trace-time check, the kernel still runs.
    out = jax.jit(lambda t, s: I.renoise(jax.random.key(0), I.vp(), x, t, s))(0.5, 0.3)
    eager = I.renoise(jax.random.key(0), I.vp(), x, 0.5, 0.3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta_min"):
        I.vp(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="beta_min"):
        I.vp(beta_min=-1.0)
    with pytest.raises(TypeError, match="target"):
        I.convert_velocity(lambda x, t: x, "vp")
    with pytest.raises(TypeError, match="velocity_fn_linear"):
        I.convert_velocity(3.0, I.vp())
    with pytest.raises(TypeError, match="interpolant"):
        I.check_interpolant(lambda t: t)
