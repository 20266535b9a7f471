"""SDE sampling of flow models against the exact Gaussian-mixture oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import flow, sde
from inferax.sampling import interpolants as I

N = 20_000
TS = jnp.linspace(0.0, 1.0, 301)


def _mixture_1d():
    return gmm.gaussian_mixture([0.3, 0.7], [[-2.0], [1.5]], covs=[[[0.25]], [[0.64]]])


def _moments_1d(x):
    x = np.asarray(x[:, 0], np.float64)
    return x.mean(), x.var(), float(np.mean(x < -0.5))


def _matches_mixture(x, m):
    """Exact: mean 0.45, variance 3.0955, P(x < -0.5) = 0.3 (up to 1e-4 tail mass).

    Tolerances for 20000 samples: MC standard errors ~0.012 (mean), ~0.03
    (variance), 0.003 (fraction); the Euler-Maruyama bias on 300 steps is below that.
    """
    mean, var, frac = _moments_1d(x)
    return (
        abs(mean - float(m.mean()[0])) < 0.05
        and abs(var - float(m.covariance()[0, 0])) < 0.1
        and abs(frac - 0.3) < 0.012
    )


def test_zero_noise_is_the_euler_ode_bit_for_bit():
    m = gmm.eight_gaussians()
    x0 = jax.random.normal(jax.random.key(0), (512, 2))
    ts = jnp.linspace(0.0, 1.0, 33)
    x_ode, _ = flow.sample(m.velocity, x0, ts, solver="euler")
    x_sde, info = sde.sample(jax.random.key(5), m.velocity, x0, ts, g="zero")
    np.testing.assert_array_equal(np.asarray(x_sde), np.asarray(x_ode))
    x_sde0, _ = sde.sample(jax.random.key(5), m.velocity, x0, ts, g=0.0)
    np.testing.assert_array_equal(np.asarray(x_sde0), np.asarray(x_ode))
    assert int(info.num_steps) == 32 and int(info.nfe) == 32


@pytest.mark.parametrize("g", ["square", "sqrt", "linear", lambda t: 0.5 + 0.0 * t])
def test_sde_keeps_the_mixture_marginal(g):
    """1-D two-component mixture, 20000 samples, 300 steps (see ``_matches_mixture``)."""
    m = _mixture_1d()
    x0 = jax.random.normal(jax.random.key(1), (N, 1))
    x1, info = jax.jit(lambda k, x: sde.sample(k, m.velocity, x, TS, g=g))(jax.random.key(2), x0)
    assert _matches_mixture(x1, m), _moments_1d(x1)
    assert int(info.nfe) == 300


def test_sde_marginal_at_intermediate_time_and_trajectory():
    m = _mixture_1d()
    x0 = jax.random.normal(jax.random.key(3), (N, 1))
    _, info = sde.sample(jax.random.key(4), m.velocity, x0, TS, g="square", return_trajectory=True)
    assert info.trajectory.shape == (301, N, 1)
    np.testing.assert_array_equal(np.asarray(info.trajectory[0]), np.asarray(x0))
    marg = m.marginal(0.5)
    x_half = info.trajectory[150]
    assert abs(float(x_half.mean()) - float(marg.mean()[0])) < 0.03
    assert abs(float(x_half.var()) - float(marg.covariance()[0, 0])) < 0.05


def test_sde_is_stochastic_and_wrong_corrections_fail():
    """g > 0 spreads a point mass; a missing or wrong score correction fails the moments test."""
    m = _mixture_1d()
    x1, _ = sde.sample(jax.random.key(6), m.velocity, jnp.zeros((N, 1)), TS, g="sqrt")
    assert float(x1.std()) > 0.5
    x0 = jax.random.normal(jax.random.key(7), (N, 1))
    # (a) noise without the g^2/2 score drift
    g_fn = sde.G_SCHEDULES["sqrt"]

    def body(x, inp):
        i, t0, t1 = inp
        z = jax.random.normal(jax.random.fold_in(jax.random.key(8), i), x.shape)
        return x + (t1 - t0) * m.velocity(x, t0) + g_fn(t0) * jnp.sqrt(t1 - t0) * z, None

    no_score, _ = jax.lax.scan(body, x0, (jnp.arange(300), TS[:-1], TS[1:]))
    assert not _matches_mixture(no_score, m), _moments_1d(no_score)
    # (b) the score computed with the wrong interpolant
    bad, _ = sde.sample(jax.random.key(8), m.velocity, x0, TS, g="sqrt", interpolant=I.vp())
    assert not _matches_mixture(bad, m), _moments_1d(bad)
    good, _ = sde.sample(jax.random.key(8), m.velocity, x0, TS, g="sqrt")
    assert _matches_mixture(good, m), _moments_1d(good)


def test_vp_sde_keeps_the_eight_gaussians_marginal():
    """Converted VP velocity, VP score, g = square: the modes, their masses and widths."""
    m = gmm.eight_gaussians()
    vp = I.vp()
    v = I.convert_velocity(m.velocity, vp)
    x0 = jax.random.normal(jax.random.key(9), (N, 2))
    ts = 1.0 - (1.0 - jnp.linspace(0.0, 1.0, 401)) ** 2
    x1, _ = jax.jit(lambda k, x: sde.sample(k, v, x, ts, g="square", interpolant=vp))(
        jax.random.key(10), x0
    )
    d2 = jnp.sum((x1[:, None, :] - m.means[None]) ** 2, -1)
    nearest = jnp.argmin(d2, 1)
    counts = np.bincount(np.asarray(nearest), minlength=8) / N
    np.testing.assert_allclose(counts, 1 / 8, atol=0.012)  # SE 0.0023
    within = float(jnp.sqrt(jnp.mean(jnp.min(d2, 1)) / 2))
    assert abs(within - 0.2) < 0.01
    np.testing.assert_allclose(np.cov(np.asarray(x1).T), m.covariance(), atol=0.06)


def test_step_returns_the_proposal():
    m = _mixture_1d()
    x = jax.random.normal(jax.random.key(11), (8, 1))
    g_fn = sde.resolve_g("square")
    x_next, mean, std = sde.step(jax.random.key(12), m.velocity, x, 0.2, 0.25, g_fn, I.linear())
    score = (0.2 * m.velocity(x, 0.2) - x) / 0.8
    expected = x + 0.05 * (m.velocity(x, 0.2) + 0.5 * (3 * 0.8**2) ** 2 * score)
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, 3 * 0.8**2 * np.sqrt(0.05), rtol=1e-5)
    z = jax.random.normal(jax.random.key(12), x.shape)
    np.testing.assert_allclose(x_next, mean + std * z, rtol=1e-6, atol=1e-6)


def test_lookahead_and_step_share_one_velocity_evaluation():
    m = _mixture_1d()
    calls = []

    def v(x, t):
        calls.append(1)
        return m.velocity(x, t)

    x = jax.random.normal(jax.random.key(15), (16, 1))
    key, t0, t1, lin = jax.random.key(16), 0.3, 0.35, I.linear()
    g_fn = sde.resolve_g("square")
    # Two calls: a lookahead, then a step that evaluates the velocity again.
    lookahead_2 = I.posterior_mean_from_velocity(lin, v(x, t0), x, t0)
    two = sde.step(key, v, x, t0, t1, g_fn, lin)
    assert len(calls) == 2
    calls.clear()
    u = v(x, jnp.float32(t0))
    lookahead_1 = I.posterior_mean_from_velocity(lin, u, x, t0)
    one = sde.step(key, v, x, t0, t1, g_fn, lin, velocity=u)
    assert len(calls) == 1
    np.testing.assert_array_equal(np.asarray(lookahead_1), np.asarray(lookahead_2))
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    d_reused, _ = sde.drift(v, x, t0, g_fn, lin, velocity=u)
    np.testing.assert_array_equal(
        np.asarray(d_reused), np.asarray(sde.drift(v, x, t0, g_fn, lin)[0])
    )
    with pytest.raises(ValueError, match="velocity"):
        sde.step(key, v, x, t0, t1, g_fn, lin, velocity=u[:8])


def test_nfe_per_call_and_traces_the_velocity_exactly_once():
    traces = []

    def v(x, t):
        traces.append(1)
        return -x

    run = jax.jit(lambda k, x: sde.sample(k, v, x, jnp.linspace(0.0, 1.0, 11), nfe_per_call=2))
    _, info = run(jax.random.key(0), jnp.ones((4, 3)))
    assert int(info.nfe) == 20 == sde.cost(10, nfe_per_call=2)
    assert len(traces) == 1  # traced once, inside the scan body: no extra shape-check trace
    run(jax.random.key(1), jnp.zeros((4, 3)))
    assert len(traces) == 1  # same shapes: no retrace


def test_num_active_steps_equals_the_unpadded_grid():
    m = _mixture_1d()
    x0 = jax.random.normal(jax.random.key(13), (64, 1))
    ts = jnp.linspace(0.0, 1.0, 9)
    padded = jnp.concatenate([ts, jnp.ones(4)])
    key = jax.random.key(14)
    ref, ref_info = sde.sample(key, m.velocity, x0, ts)
    got, info = sde.sample(key, m.velocity, x0, padded, num_active_steps=8)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    assert int(info.nfe) == int(ref_info.nfe) == 8
    run = jax.jit(lambda n: sde.sample(key, m.velocity, x0, padded, num_active_steps=n))
    got, info = run(8)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert int(info.nfe) == 8 and int(info.num_steps) == 8
    short, info = run(5)
    ref5, _ = sde.sample(key, m.velocity, x0, ts[:6])
    np.testing.assert_allclose(np.asarray(short), np.asarray(ref5), rtol=1e-5, atol=1e-6)
    assert int(info.nfe) == 5


def test_bad_inputs():
    m = _mixture_1d()
    x0 = jnp.zeros((4, 1))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="g: expected one of"):
        sde.sample(key, m.velocity, x0, TS, g="cubic")
    with pytest.raises(ValueError, match="non-negative"):
        sde.sample(key, m.velocity, x0, TS, g=-1.0)
    with pytest.raises(ValueError, match=r"g\(t\) >= 0"):
        sde.sample(key, m.velocity, x0, TS, g=lambda t: t - 0.5)
    with pytest.raises(TypeError, match="g: expected"):
        sde.sample(key, m.velocity, x0, TS, g=[1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        sde.sample(key, m.velocity, x0, jnp.array([0.0, 0.5, 0.4, 1.0]))
    with pytest.raises(ValueError, match="ts"):
        sde.sample(key, m.velocity, x0, jnp.array([0.0, 1.5]))
    with pytest.raises(TypeError, match="x0"):
        sde.sample(key, m.velocity, [[0.0]], TS)
    with pytest.raises(TypeError, match="interpolant"):
        sde.sample(key, m.velocity, x0, TS, interpolant="vp")
    with pytest.raises(ValueError, match="velocity_fn"):
        sde.sample(key, lambda x, t: x[:, :0], x0, TS)


def test_sde_counts_non_finite_inputs_and_outputs_and_checks_them_on_request():
    """The SDE sampler reports NaN/inf like the ODE sampler (``FlowInfo``); with
    ``runtime_checks`` they are errors; a concrete NaN ``x0`` is refused up front."""
    from jax.experimental import checkify

    x0 = jax.random.normal(jax.random.key(0), (4, 2))
    ts = jnp.linspace(0.0, 1.0, 5)

    def v(x, t):  # finite everywhere except at t = 0.5 (the third grid time)
        return x / (t - 0.5)

    key = jax.random.key(1)
    _, ok = sde.sample(key, lambda x, t: -x, x0, ts, g="linear")
    assert int(ok.non_finite_inputs) == 0 and int(ok.non_finite_outputs) == 0
    assert bool(ok.grid_valid)
    _, info = jax.jit(lambda x: sde.sample(key, v, x, ts, g="linear"))(x0)
    # The step from t = 0.5 gives 4 x 2 non-finite entries; the state is then non-finite,
    # so the last step's 8 outputs are too: 16 in all.
    assert int(info.non_finite_outputs) == 16
    _, traced = jax.jit(lambda x: sde.sample(key, lambda y, t: -y, x, ts))(x0.at[1, 0].set(jnp.inf))
    assert int(traced.non_finite_inputs) == 1
    with pytest.raises(ValueError, match="x0: expected finite values"):
        sde.sample(key, lambda x, t: -x, x0.at[0, 0].set(jnp.nan), ts)
    err, _ = jax.jit(checkify.checkify(lambda: sde.sample(key, v, x0, ts, runtime_checks=True)))()
    with pytest.raises(checkify.JaxRuntimeError, match="velocity_fn: expected finite outputs"):
        err.throw()
