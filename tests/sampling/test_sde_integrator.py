"""The package's one Euler-Maruyama step (``sde.euler_maruyama``, ``sde.EULER_MARUYAMA``).

Truths: the step's closed form on given noise (float64 NumPy), the exact discrete
Ornstein-Uhlenbeck recursion it must produce, and the samplers built on it
(``sde.step``, the Feynman-Kac transition) reproducing it bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import feynman_kac as fk
from inferax.sampling import interpolants as I
from inferax.sampling import sde


def test_closed_form_on_given_noise_in_float32_and_float64():
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            x = jnp.asarray([[1.0, -2.0], [0.5, 3.0]], dtype)
            noise = jnp.asarray([[0.3, -1.1], [2.0, 0.0]], dtype)

            def drift_fn(x, t):
                return -x * (1.0 + t), jnp.asarray(0.7, x.dtype)

            x1, mean, std = jax.jit(sde.euler_maruyama, static_argnums=0)(
                drift_fn, x, 0.2, 0.45, noise
            )
            xn, nn = np.asarray(x, np.float64), np.asarray(noise, np.float64)
            want_mean = xn + 0.25 * (-xn * 1.2)
            np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
            np.testing.assert_allclose(std, 0.7 * np.sqrt(0.25), rtol=1e-6)
            np.testing.assert_allclose(x1, want_mean + 0.35 * nn, rtol=1e-6)
            assert x1.dtype == mean.dtype == std.dtype == dtype
            # a precomputed drift costs no evaluation and gives the same step
            again = sde.euler_maruyama(None, x, 0.2, 0.45, noise, drift0=drift_fn(x, 0.2))
            np.testing.assert_allclose(again[0], x1, rtol=1e-6)


def test_ornstein_uhlenbeck_stationary_variance_of_the_discrete_chain():
    """dx = -x dt + sqrt(2) dW stepped with dt: the EM chain is the AR(1)
    x' = (1 - dt) x + sqrt(2 dt) xi, whose stationary variance is 2 dt / (1 - (1 - dt)^2)
    = 1 / (1 - dt / 2) (1.111 at dt = 0.2), not the SDE's 1: the known EM bias."""
    dt, n = 0.2, 20_000
    x = jnp.zeros((n, 1))

    def body(x, i):
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(0), i), x.shape)
        x1, _, _ = sde.EULER_MARUYAMA.step(
            lambda x, t: (-x, jnp.sqrt(2.0)), x, i * dt, (i + 1) * dt, noise
        )
        return x1, None

    x = jax.jit(lambda x: jax.lax.scan(body, x, jnp.arange(60))[0])(x)
    var = float(jnp.var(x))
    # standard error of a variance from 20000 draws: 1.11 sqrt(2 / n) = 0.011
    assert abs(var - 1.0 / (1.0 - dt / 2)) < 0.045, var
    assert abs(var - 1.0) > 0.06  # the discretisation bias is visible


def test_samplers_use_it_and_budgets_derive_from_evals_per_step():
    m = gmm.gaussian_mixture([1.0], [[1.0, -0.5]], scale=0.7)
    x = jax.random.normal(jax.random.key(1), (16, 2))
    key = jax.random.key(2)
    x1, mean, std = sde.step(key, m.velocity, x, 0.3, 0.4, sde.resolve_g("linear"), I.linear())
    d0 = sde.drift(m.velocity, x, 0.3, "linear", I.linear())
    noise = jax.random.normal(key, x.shape, x.dtype)
    np.testing.assert_array_equal(x1, sde.euler_maruyama(None, x, 0.3, 0.4, noise, drift0=d0)[0])
    # the Feynman-Kac transition moves with the same step (beta = 1: the plain flow SDE)
    tr = fk.anneal(m.velocity, 1.0, g="linear")
    x_fk, _ = tr(key, x, (0.3, 0.4))
    np.testing.assert_allclose(x_fk, x1, rtol=1e-6, atol=1e-6)
    assert sde.EULER_MARUYAMA.evals_per_step == 1 and sde.SDE_SOLVERS["euler_maruyama"]
    assert sde.cost(10, 2) == 10 * sde.EULER_MARUYAMA.evals_per_step * 2
    assert sde.cost(jnp.linspace(0, 1, 6)) == 5
    assert tr.nfe_per_step == sde.EULER_MARUYAMA.evals_per_step * tr.nfe_per_eval


def test_bad_inputs():
    x = jnp.zeros((4, 2))
    with pytest.raises(TypeError, match="drift_fn: expected a callable"):
        sde.euler_maruyama(None, x, 0.0, 0.1, x)
    with pytest.raises(ValueError, match=r"noise: expected the shape of x \(4, 2\)"):
        sde.euler_maruyama(lambda x, t: (x, 1.0), x, 0.0, 0.1, jnp.zeros((4, 1)))
