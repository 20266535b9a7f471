"""MALA from a score (``inferax.sampling.mala``) against an exact off-centre Gaussian.

Truths: a 2-D Gaussian N(MU, COV) with non-identity covariance, mean away from
the origin, whose exact samples a pi-invariant kernel must leave distributed as
N(MU, COV); the unadjusted Langevin step with the same step has the closed-form
stationary covariance V (I - eps P / 2)^-1 in P's eigenbasis (P = COV^-1), here
visibly too wide; and line integrals of the score of a Gaussian mixture against
differences of its exact log-density.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import mala

MU = np.array([2.0, -1.0])
COV = np.array([[1.0, 0.3], [0.3, 0.5]])  # eigenvalues 1.14 and 0.36
PREC = np.linalg.inv(COV)
N = 4000
EPS = 0.3  # large: unadjusted Langevin's stationary variance is 30-70 % too wide


def _score(x):
    return -(x - jnp.asarray(MU, x.dtype)) @ jnp.asarray(PREC, x.dtype)


def _log_density(x):
    d = x - jnp.asarray(MU, x.dtype)
    return -0.5 * jnp.sum((d @ jnp.asarray(PREC, x.dtype)) * d, -1)


def _exact_samples(key, dtype):
    z = jax.random.normal(key, (N, 2), dtype)
    return jnp.asarray(MU, dtype) + z @ jnp.asarray(np.linalg.cholesky(COV).T, dtype)


def _run(key, x, num_steps, *, adjusted=True, quadrature="simpson", exact=False):
    log_density_fn = _log_density if exact else None
    state = mala.init(x, _score, log_density_fn)

    def body(carry, i):
        state, acc = carry
        k = jax.random.fold_in(key, i)
        if adjusted:
            state, info = mala.step(k, state, _score, EPS, log_density_fn=log_density_fn,
                                    quadrature=quadrature)  # fmt: skip
            acc = acc + jnp.mean(info.acceptance_rate)
        else:
            xi = jax.random.normal(k, state.x.shape, state.x.dtype)
            y = state.x + EPS * state.score + jnp.sqrt(2.0 * EPS) * xi
            state = mala.MALAState(y, _score(y))
        return (state, acc), None

    (state, acc), _ = jax.lax.scan(body, (state, jnp.zeros((), x.dtype)), jnp.arange(num_steps))
    return state.x, acc / num_steps


def _moments(x):
    x = np.asarray(x, np.float64)
    return x.mean(0), np.cov(x.T)


# Monte Carlo tolerances for N = 4000 independent chains at stationarity: the mean's
# standard error is sqrt(COV_ii / N) <= 0.016, a covariance entry's
# sqrt((COV_ii COV_jj + COV_ij^2) / N) <= 0.022; 4.5 standard errors.
MEAN_TOL, COV_TOL = 0.075, 0.1


@pytest.mark.parametrize(
    ("dtype", "quadrature", "exact"),
    [
        (jnp.float32, "simpson", False),
        (jnp.float32, "trapezoid", False),
        (jnp.float32, "simpson", True),
        (jnp.float64, "simpson", False),
    ],
)
def test_mala_leaves_an_off_centre_gaussian_invariant(dtype, quadrature, exact):
    with jax.enable_x64(dtype == jnp.float64):
        x0 = _exact_samples(jax.random.key(1), dtype)
        x, acc = jax.jit(lambda k, x: _run(k, x, 60, quadrature=quadrature, exact=exact))(
            jax.random.key(2), x0
        )
        assert x.dtype == dtype
        mean, cov = _moments(x)
        assert np.abs(mean - MU).max() < MEAN_TOL, mean
        assert np.abs(cov - COV).max() < COV_TOL, cov
        # the chains did move: the final states are far from where they started
        assert float(jnp.mean(jnp.any(x != x0, axis=1))) > 0.99
        assert 0.3 < float(acc) < 0.95, float(acc)


def test_unadjusted_langevin_with_the_same_step_is_visibly_biased():
    """Negative control: same start and step, no accept test. In P's eigenbasis the
    stationary variance of x + eps S + sqrt(2 eps) xi is lam / (1 - eps / (2 lam))."""
    x0 = _exact_samples(jax.random.key(1), jnp.float32)
    x, _ = jax.jit(lambda k, x: _run(k, x, 60, adjusted=False))(jax.random.key(2), x0)
    _, cov = _moments(x)
    lam, vecs = np.linalg.eigh(COV)
    ula = vecs @ np.diag(lam / (1.0 - EPS / (2.0 * lam))) @ vecs.T
    # theory: variances 0.24 too wide here, 2.4 times MALA's tolerance
    assert np.abs(ula - COV).max() > 0.23
    assert np.abs(cov - COV).max() > 1.5 * COV_TOL, cov  # outside MALA's tolerance
    assert np.abs(cov - ula).max() < COV_TOL, (cov, ula)  # and where theory puts it


def test_mala_moves_a_bad_start_to_the_target():
    """Chains started at the origin (off target) reach N(MU, COV): other seeds."""
    for seed in (3, 4):
        x0 = jnp.zeros((N, 2), jnp.float32)
        x, _ = jax.jit(lambda k, x: _run(k, x, 150))(jax.random.key(seed), x0)
        mean, cov = _moments(x)
        assert np.abs(mean - MU).max() < MEAN_TOL and np.abs(cov - COV).max() < COV_TOL


def test_line_integral_matches_log_density_differences():
    """Exact for a Gaussian (affine score) with either rule; on a two-component mixture
    Simpson's error is far below the trapezoid's, and both shrink with the segment."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (64, 2)) + jnp.asarray(MU, jnp.float32)
    y = x + 0.5 * jax.random.normal(jax.random.key(1), (64, 2))
    want = _log_density(y) - _log_density(x)
    for rule in mala.QUADRATURES:
        got = mala.line_integral(_score, x, y, _score(x), _score(y), rule)
        np.testing.assert_allclose(got, want, atol=2e-5 * float(jnp.abs(want).max()) + 1e-5)

    mix = gmm.gaussian_mixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], scale=0.6)
    score = jax.vmap(jax.grad(lambda z: mix.log_prob(z[None])[0]))
    errors = {}
    for h in (0.4, 0.2):
        yh = x - jnp.asarray(MU, jnp.float32) + h * (y - x)
        xh = x - jnp.asarray(MU, jnp.float32)
        want = mix.log_prob(yh) - mix.log_prob(xh)
        for rule in mala.QUADRATURES:
            got = mala.line_integral(score, xh, yh, score(xh), score(yh), rule)
            errors[rule, h] = float(jnp.max(jnp.abs(got - want)))
    assert errors["simpson", 0.4] < 0.2 * errors["trapezoid", 0.4], errors
    # the orders: trapezoid O(h^3), Simpson O(h^5) (halving h: /8 and /32, with slack)
    assert errors["trapezoid", 0.2] < errors["trapezoid", 0.4] / 4, errors
    assert errors["simpson", 0.2] < errors["simpson", 0.4] / 10, errors


def test_costs_adaptation_and_bad_inputs():
    assert mala.evals_per_step("simpson") == 2 and mala.evals_per_step("trapezoid") == 1
    assert mala.evals_per_step("simpson", exact=True) == 1
    calls = []

    def counted(x):
        calls.append(1)  # runs once per traced call
        return _score(x)

    state = mala.init(jnp.zeros((8, 2)), counted)
    mala.step(jax.random.key(0), state, counted, 0.1)
    assert len(calls) == 1 + mala.evals_per_step("simpson")
    log_h = jnp.log(jnp.float32(0.1))
    assert float(mala.adapt_log_step_size(log_h, 0.9)) > float(log_h)  # too many accepted
    assert float(mala.adapt_log_step_size(log_h, 0.2)) < float(log_h)  # too few
    assert float(mala.adapt_log_step_size(log_h, jnp.nan)) == float(log_h)
    with pytest.raises(ValueError, match="quadrature: expected one of"):
        mala.step(jax.random.key(0), state, _score, 0.1, quadrature="gauss")
    with pytest.raises(ValueError, match="log_density"):
        mala.step(jax.random.key(0), state, _score, 0.1, log_density_fn=_log_density)
    with pytest.raises(ValueError, match="score_fn: expected an output of the shape"):
        mala.init(jnp.zeros((8, 2)), lambda x: x[:, :1])
    with pytest.raises(ValueError, match="log_density_fn: expected an output of shape"):
        mala.init(jnp.zeros((8, 2)), _score, lambda x: x)
