"""Feynman-Kac resample-move with an invariant kernel (MALA): log Z that converges.

Two off-centre 2-D closed-form targets on the linear interpolant, exact velocities:

- ANNEAL: p^2 with p = N(MU, COV): q = N(MU, COV / 2), log Z1 / Z0 = -log|COV| / 2;
- PRODUCT: N(M1, C1) N(M2, C2): Gaussian with precision C1^-1 + C2^-1, log Z1 / Z0 =
  log N(M1; M2, C1 + C2) + log(4 pi) (Z0 = int N(0, I)^2 = 1 / (4 pi)).

Measured (float32, N = 1024, 8 seeds, 2 MALA steps per move, g = "square"; mean error
of log Z over seeds, its standard deviation in brackets):

    steps           25             50             100            200            400
    ANNEAL  MALA    0.534 (0.024)  0.238 (0.025)  0.106 (0.022)  0.053 (0.009)  0.021 (0.006)
            ULA     0.700 (0.204)  0.416 (0.053)  0.279 (0.026)  0.223 (0.025)  0.202 (0.022)
            none    0.506 (0.428)  0.363 (0.338)  -0.054 (0.411) -0.162 (0.336) -0.288 (0.183)
    PRODUCT MALA    0.445 (0.033)  0.198 (0.022)  0.087 (0.013)  0.040 (0.010)  0.018 (0.005)
            ULA     0.568 (0.068)  0.361 (0.019)  0.230 (0.029)  0.185 (0.032)  0.171 (0.021)
            none    0.486 (0.191)  0.196 (0.167)  0.019 (0.126)  -0.048 (0.154) -0.114 (0.546)

(ULA: the unadjusted Langevin kernel, eta = 0.1: its error stalls at ~0.2; without moves
the estimate scatters by 0.1-0.5 over seeds.) MALA's error halves with each doubling of
the steps, the first-order Euler-Maruyama discretisation of the corrector. Mean
acceptance 0.58-0.68 against the 0.574 target.

Each sampler compiles in ~9 s of CPU, so the file runs five: ANNEAL in float32 and
PRODUCT in float64 at 25 and 400 steps (one seed each, all different), and the ULA
control.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import feynman_kac as fk

MU = np.array([2.0, -1.0])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])
M1, C1 = np.array([1.5, 1.0]), np.array([[0.6, 0.1], [0.1, 0.4]])
M2, C2 = np.array([0.5, 2.0]), np.array([[0.3, -0.1], [-0.1, 0.5]])
A = gmm.gaussian_mixture([1.0], [MU], covs=[COV])
P1 = gmm.gaussian_mixture([1.0], [M1], covs=[C1])
P2 = gmm.gaussian_mixture([1.0], [M2], covs=[C2])


def _product_truth():
    prec = np.linalg.inv(C1) + np.linalg.inv(C2)
    cov = np.linalg.inv(prec)
    mean = cov @ (np.linalg.solve(C1, M1) + np.linalg.solve(C2, M2))
    s, dm = C1 + C2, M1 - M2
    log_z = (
        -0.5 * dm @ np.linalg.solve(s, dm)
        - 0.5 * np.log(np.linalg.det(2 * np.pi * s))
        + np.log(4 * np.pi)
    )
    return mean, cov, log_z


TARGETS = {
    # name: (transition, exact mean, exact covariance, exact log Z1 / Z0)
    "anneal": (fk.anneal(A.velocity, 2.0), MU, COV / 2, -0.5 * np.log(np.linalg.det(COV))),
    "product": (fk.product(P1.velocity, P2.velocity), *_product_truth()),
}
STEPS = (25, 400)
N, K = 2048, 2
DTYPES = {"anneal": jnp.float32, "product": jnp.float64}


def _run(name, steps, seed, **kw):
    tr, dtype = TARGETS[name][0], DTYPES[name]
    ts = jnp.linspace(0.0, 1.0, steps + 1)
    with jax.enable_x64(dtype == jnp.float64):
        run = jax.jit(lambda k: fk.sample(k, tr, N, ts, event_shape=(2,), dtype=dtype,
                                          langevin_steps=K, **kw))  # fmt: skip
        return jax.tree.map(np.asarray, run(jax.random.key(seed)))


@pytest.fixture(scope="module")
def adjusted():
    """``{(target, steps): (x, log_w, info)}`` with MALA moves, a different seed each."""
    runs, seed = {}, 0
    for name in TARGETS:
        for s in STEPS:
            runs[name, s], seed = _run(name, s, seed), seed + 1
    return runs


@pytest.mark.parametrize("name", list(TARGETS))
def test_log_z_error_shrinks_toward_zero_as_the_steps_grow(adjusted, name):
    """The trend (module docstring): small at 400 steps (measured ~0.02 +- 0.006), and
    below a fifth of the error at 25 steps (~0.45-0.53)."""
    exact = TARGETS[name][3]
    errors = [float(adjusted[name, s][2].log_Z) - exact for s in STEPS]
    assert abs(errors[-1]) < 0.05, errors
    assert abs(errors[-1]) < abs(errors[0]) / 5, errors
    assert adjusted[name, STEPS[-1]][2].log_Z.dtype == DTYPES[name]
    assert adjusted[name, STEPS[-1]][0].dtype == DTYPES[name]


@pytest.mark.parametrize("name", list(TARGETS))
def test_weighted_moments_converge_to_the_exact_target(adjusted, name):
    """Weighted mean and covariance of 2048 particles at 400 steps. Monte Carlo standard
    errors <= 0.011 (mean), <= 0.008 (covariance); tolerance 0.05 (+ the small bias)."""
    _, mean, cov, _ = TARGETS[name]
    x, lw, info = adjusted[name, STEPS[-1]]
    w = np.exp(lw.astype(np.float64))
    w /= w.sum()
    xs = x.astype(np.float64)
    m = w @ xs
    c = (w[:, None] * (xs - m)).T @ (xs - m)
    assert np.abs(m - mean).max() < 0.05, (m, mean)
    assert np.abs(c - cov).max() < 0.05, (c, cov)
    assert not info.all_invalid.any() and int(info.num_nan.sum()) == 0
    # MALA spreads duplicates out: many initial particles keep descendants
    assert int(info.num_distinct_ancestors) > N // 4, info.num_distinct_ancestors


def test_acceptance_rate_and_nfe_are_reported(adjusted):
    for name in TARGETS:
        tr = TARGETS[name][0]
        for s in STEPS:
            info = adjusted[name, s][2]
            assert abs(float(info.acceptance_rate) - 0.574) < 0.15, info.acceptance_rate
            # every step but the last resamples: one move of 1 + 2K scores each
            want = tr.nfe_per_step * s + tr.nfe_per_eval * (1 + 2 * K) * (s - 1)
            assert int(info.nfe) == want == fk.cost_per_particle(tr, s, K)
    assert TARGETS["product"][0].nfe_per_eval == 2 and TARGETS["anneal"][0].nfe_per_eval == 1


def test_unadjusted_moves_stay_biased(adjusted):
    """Negative control at 400 steps on the annealed target: the unadjusted kernel's
    log Z error stalls (~0.2, measured), far outside MALA's."""
    exact = TARGETS["anneal"][3]
    _, _, ula = _run("anneal", STEPS[-1], seed=1, adjusted=False)  # MALA's seed
    mala_err = float(adjusted["anneal", STEPS[-1]][2].log_Z) - exact
    ula_err = float(ula.log_Z) - exact
    assert ula_err > 0.12 and ula_err > 3 * abs(mala_err), (ula_err, mala_err)
    assert np.isnan(ula.acceptance_rate)  # no Metropolis test ran
    assert int(ula.nfe) == STEPS[-1] + K * (STEPS[-1] - 1)
    tr = TARGETS["anneal"][0]
    assert fk.cost_per_particle(tr, STEPS[-1], K, adjusted=False) == int(ula.nfe)


def test_the_fk_mala_move_leaves_an_intermediate_target_invariant():
    """Exact samples of q_t = p_t^2 at t = 0.6 (p_t = N(t MU, t^2 COV + (1 - t)^2 I) on the
    linear interpolant, so q_t = N(t MU, Sigma_t / 2)), moved 30 MALA steps with the
    velocity-derived score and a fixed step: the law is unchanged."""
    t = 0.6
    sigma = (t**2 * COV + (1 - t) ** 2 * np.eye(2)) / 2
    z = jax.random.normal(jax.random.key(5), (4000, 2))
    chol = jnp.asarray(np.linalg.cholesky(sigma).T, jnp.float32)
    x0 = jnp.asarray(t * MU, jnp.float32) + z @ chol
    move = fk.mala_move(TARGETS["anneal"][0], 30)
    x, acc, inv_fisher = jax.jit(move)(jax.random.key(6), x0, t, 0.1)
    xs = np.asarray(x, np.float64)
    # standard errors: mean <= 0.006, covariance entries <= 0.004 (N = 4000)
    assert np.abs(xs.mean(0) - t * MU).max() < 0.03
    assert np.abs(np.cov(xs.T) - sigma).max() < 0.02, (np.cov(xs.T), sigma)
    assert 0.3 < float(acc) < 1.0
    # 1 / F = d / E|S|^2 = 2 / tr(Sigma_t^-1) for a Gaussian
    assert abs(float(inv_fisher) - 2 / np.trace(np.linalg.inv(sigma))) < 0.01


def test_bad_move_options():
    tr, key, ts = TARGETS["anneal"][0], jax.random.key(0), jnp.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="quadrature: expected one of"):
        fk.sample(key, tr, 8, ts, event_shape=(2,), langevin_steps=1, quadrature="midpoint")
    with pytest.raises(TypeError, match="adjusted: expected a bool"):
        fk.sample(key, tr, 8, ts, event_shape=(2,), langevin_steps=1, adjusted="yes")
    with pytest.raises(ValueError, match="target_acceptance"):
        fk.sample(key, tr, 8, ts, event_shape=(2,), langevin_steps=1, target_acceptance=1.5)
    with pytest.raises(ValueError, match="adaptation_rate"):
        fk.sample(key, tr, 8, ts, event_shape=(2,), langevin_steps=1, adaptation_rate=0.0)
    with pytest.raises(TypeError, match="adjusted"):
        fk.cost_per_particle(tr, 4, 1, adjusted=1)
    assert fk.move_evals(0) == 0 and fk.move_evals(3) == 7 and fk.move_evals(3, False) == 3
    assert fk.move_evals(3, quadrature="trapezoid") == 4
