"""Tests for inferax.sampling.smc.

Truths used: the exact evidence of a linear-Gaussian state-space model
(Kalman filter in float64 NumPy) and of a Gaussian tempering path, the
closed-form tempered posterior, and a NumPy re-simulation of the ESS rule.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import resampling, smc

# x_0 ~ N(0, 1), x_t = A x_{t-1} + N(0, Q), y_t ~ N(x_t, R), t = 1..T.
A, Q, R = 0.9, 0.5, 0.3
YS = np.array([0.4, -0.3, 1.1, 0.8, -0.5, 0.2], np.float32)


def kalman_log_evidence(ys, a=A, q=Q, r=R):
    """log p(y_1:T) by the Kalman filter, float64."""
    m, p, total = 0.0, 1.0, 0.0
    for y in np.asarray(ys, np.float64):
        m, p = a * m, a * a * p + q
        s = p + r
        total += -0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s)
        gain = p / s
        m, p = m + gain * (y - m), (1 - gain) * p
    return total


def bootstrap_transition(key, x, y):
    x_new = A * x + np.sqrt(Q) * jax.random.normal(key, x.shape)
    inc = -0.5 * (jnp.log(2 * jnp.pi * R) + (y - x_new) ** 2 / R)
    return x_new, inc


def _log_z_over_keys(alg, n, num_keys, seed=0):
    @jax.jit
    def one(key):
        k0, k1 = jax.random.split(key)
        state = alg.init(jax.random.normal(k0, (n,)))
        final, infos = alg.run(k1, state, jnp.asarray(YS))
        return final.log_Z, infos.resampled

    return jax.vmap(one)(jax.random.split(jax.random.key(seed), num_keys))


@pytest.mark.parametrize(
    "scheme,threshold", [("systematic", 0.5), ("multinomial", 1.0), ("residual", 0.0)]
)
def test_evidence_is_unbiased_in_z(scheme, threshold):
    alg = smc.build(bootstrap_transition, resampling=scheme, ess_threshold=threshold)
    log_z, resampled = _log_z_over_keys(alg, n=32, num_keys=4000)
    ratio = np.exp(np.asarray(log_z, np.float64) - kalman_log_evidence(YS))
    se = ratio.std() / np.sqrt(ratio.size)
    assert abs(ratio.mean() - 1.0) < 5 * se, (ratio.mean(), se)
    assert se < 0.02  # the test has power: a 10% error in Z would be caught
    assert abs(ratio.mean() - 1.1) > 5 * se
    # log Z itself is biased low (Jensen): E[log Z_hat] < log Z.
    assert np.mean(np.log(ratio)) < -3 * np.std(np.log(ratio)) / np.sqrt(ratio.size)
    frac = float(np.mean(resampled))
    assert {0.0: frac == 0.0, 1.0: frac == 1.0, 0.5: 0.0 < frac < 1.0}[threshold]


def test_evidence_wrong_model_is_rejected():
    # Negative control: the estimator disagrees with the evidence of another model.
    alg = smc.build(bootstrap_transition)
    log_z, _ = _log_z_over_keys(alg, n=32, num_keys=2000, seed=1)
    ratio = np.exp(np.asarray(log_z, np.float64) - kalman_log_evidence(YS, r=0.4))
    assert abs(ratio.mean() - 1.0) > 5 * ratio.std() / np.sqrt(ratio.size)


# Tempering from N(0, 1) to gamma(x) = N(x; 0, 1) exp(-(x - MU)^2 / (2 S2)).
MU, S2 = 3.0, 0.25


def _tempered_params(beta):
    prec = 1.0 + beta / S2
    return (beta * MU / S2) / prec, 1.0 / prec  # mean, var of pi_beta


def tempering_transition(key, x, betas):
    beta_prev, beta = betas[0], betas[1]
    inc = -(beta - beta_prev) * (x - MU) ** 2 / (2 * S2)
    mean, var = _tempered_params(beta)
    # Reversible Gaussian AR(1) kernel, exactly pi_beta-invariant.
    rho = 0.5
    x_new = mean + rho * (x - mean) + jnp.sqrt((1 - rho**2) * var) * jax.random.normal(key, x.shape)
    return x_new, inc


def test_tempered_smc_recovers_gaussian_target():
    betas = jnp.linspace(0.0, 1.0, 11)
    step_inputs = jnp.stack([betas[:-1], betas[1:]], axis=1)
    alg = smc.build(tempering_transition, resampling="systematic", ess_threshold=0.5)
    n = 20_000
    state = alg.init(jax.random.normal(jax.random.key(0), (n,)))
    final, infos = jax.jit(alg.run)(jax.random.key(1), state, step_inputs)
    w = np.exp(np.asarray(resampling.log_normalize(final.log_weights)[0], np.float64))
    x = np.asarray(final.particles, np.float64)
    mean = np.sum(w * x)
    var = np.sum(w * (x - mean) ** 2)
    exact_mean, exact_var = _tempered_params(1.0)
    assert abs(mean - exact_mean) < 0.03 and abs(var - exact_var) < 0.03, (mean, var)
    exact_log_z = np.log(np.sqrt(2 * np.pi * S2)) - 0.5 * np.log(2 * np.pi * (1 + S2))
    exact_log_z -= 0.5 * MU**2 / (1 + S2)
    assert abs(float(final.log_Z) - exact_log_z) < 0.03
    assert bool(jnp.any(infos.resampled))
    np.testing.assert_allclose(float(jnp.sum(infos.log_Z_increment)), float(final.log_Z), 1e-5)


def test_wrong_weight_sign_misses_target():
    # Negative control: without moves only the weights pull N(0, 1) particles to
    # the target (mean 2.4); the flipped increment sign pushes them away.
    betas = jnp.linspace(0.0, 1.0, 11)
    step_inputs = jnp.stack([betas[:-1], betas[1:]], axis=1)
    x0 = jax.random.normal(jax.random.key(0), (20_000,))
    means = []
    for sign in (1.0, -1.0):

        def no_move(key, x, b, sign=sign):
            return x, sign * tempering_transition(key, x, b)[1]

        alg = smc.build(no_move)
        final, _ = alg.run(jax.random.key(1), alg.init(x0), step_inputs)
        w = np.exp(np.asarray(resampling.log_normalize(final.log_weights)[0], np.float64))
        means.append(np.sum(w * np.asarray(final.particles, np.float64)))
    assert abs(means[0] - _tempered_params(1.0)[0]) < 0.05
    assert means[1] < 0.0


def _increment_transition(key, particles, inc):
    return particles, inc


def _simulate_resampling(incs, threshold, resample_last=True):
    """NumPy re-simulation of the adaptive rule on deterministic increments."""
    n = incs.shape[1]
    lw = np.zeros(n)
    out = []
    for t, inc in enumerate(incs):
        lw = lw + inc
        w = np.exp(lw - lw.max())
        ess = w.sum() ** 2 / (w**2).sum()
        allowed = resample_last or t < len(incs) - 1
        do = allowed and (threshold >= 1.0 or ess < threshold * n)
        out.append((ess, do))
        if do:
            lw = np.zeros(n)
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("resample_last", [True, False])
def test_resampling_happens_exactly_when_ess_is_low(threshold, resample_last):
    rng = np.random.default_rng(0)
    incs = (rng.normal(size=(12, 16)) * 0.6).astype(np.float32)
    incs[-1] *= 6.0  # the last step is degenerate: resampled unless forbidden
    alg = smc.build(_increment_transition, ess_threshold=threshold)
    state = alg.init({"id": jnp.arange(16), "x": jnp.zeros((16, 2))})
    final, infos = alg.run(jax.random.key(0), state, jnp.asarray(incs), resample_last=resample_last)
    expected = _simulate_resampling(incs.astype(np.float64), threshold, resample_last)
    np.testing.assert_allclose(infos.ess, [e for e, _ in expected], rtol=1e-4)
    np.testing.assert_array_equal(infos.resampled, [d for _, d in expected])
    if 0.0 < threshold < 1.0:
        assert 0 < int(jnp.sum(infos.resampled)) < 12
    for t in range(12):
        if not expected[t][1]:
            np.testing.assert_array_equal(infos.ancestors[t], np.arange(16))
    # Ancestry is applied to every leaf: ids compose the ancestor maps.
    ids = np.arange(16)
    for t in range(12):
        ids = ids[np.asarray(infos.ancestors[t])]
    np.testing.assert_array_equal(final.particles["id"], ids)
    if expected[-1][1]:
        np.testing.assert_array_equal(final.log_weights, 0.0)


def test_step_may_resample_flag():
    alg = smc.build(_increment_transition, ess_threshold=1.0)
    state = alg.init(jnp.zeros((4, 1)))
    inc = jnp.array([0.0, -5.0, -5.0, -5.0])
    step = jax.jit(alg.step)
    _, info = step(jax.random.key(0), state, inc, jnp.array(False))
    assert not bool(info.resampled)
    _, info = step(jax.random.key(0), state, inc, jnp.array(True))
    assert bool(info.resampled)


def test_all_invalid_is_flagged():
    def transition(key, x, kill):
        inc = jnp.where(kill, -jnp.inf, jnp.where(jnp.arange(x.shape[0]) == 1, jnp.nan, -(x**2)))
        return x + 1.0, inc

    alg = smc.build(transition, ess_threshold=1.0)
    state = alg.init(jnp.linspace(-1.0, 1.0, 8))
    kill = jnp.array([False, False, True, False])
    final, infos = jax.jit(alg.run)(jax.random.key(0), state, kill)
    np.testing.assert_array_equal(infos.all_invalid, [False, False, True, True])
    np.testing.assert_array_equal(infos.resampled, [True, True, False, False])
    assert float(final.log_Z) == -np.inf
    assert np.all(np.isfinite(np.asarray(infos.log_Z_increment[:2])))
    np.testing.assert_array_equal(infos.ess[2:], 0.0)
    np.testing.assert_array_equal(infos.ancestors[2:], np.tile(np.arange(8), (2, 1)))
    assert not np.any(np.asarray(infos.ancestors[:2]) == 1)  # NaN weight never chosen
    assert np.all(np.isfinite(np.asarray(final.particles)))


def test_jit_traces_once():
    traces = []

    def transition(key, x, y):
        traces.append(1)
        return bootstrap_transition(key, x, y)

    alg = smc.build(transition)
    run = jax.jit(alg.run)
    state = alg.init(jnp.zeros(64))
    out1 = run(jax.random.key(0), state, jnp.asarray(YS))
    out2 = run(jax.random.key(1), state, jnp.asarray(YS) + 1.0)
    assert len(traces) == 1
    assert not np.array_equal(out1[0].particles, out2[0].particles)
    out3 = run(jax.random.key(0), state, jnp.asarray(YS))
    np.testing.assert_array_equal(out1[0].particles, out3[0].particles)


def test_bad_input():
    with pytest.raises(ValueError, match="resampling.*got 'nope'"):
        smc.build(_increment_transition, resampling="nope")
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="ess_threshold.*\\[0, 1\\]"):
            smc.build(_increment_transition, ess_threshold=bad)
    with pytest.raises(TypeError, match="ess_threshold"):
        smc.build(_increment_transition, ess_threshold="0.5")
    with pytest.raises(TypeError, match="transition_fn"):
        smc.build(None)
    with pytest.raises(ValueError, match="log_weights.*\\(4,\\).*\\(5,\\)"):
        smc.init(jnp.zeros((4, 2)), jnp.zeros(5))
    with pytest.raises(TypeError, match="log_weights.*floating"):
        smc.init(jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="particles.*leading axis.*\\[4, 3\\]"):
        smc.init({"a": jnp.zeros(4), "b": jnp.zeros((3, 2))})
    alg = smc.build(lambda k, x, s: (x, jnp.zeros(3)))
    with pytest.raises(ValueError, match="transition_fn.*\\(4,\\).*\\(3,\\)"):
        alg.step(jax.random.key(0), smc.init(jnp.zeros(4)), None)
    alg = smc.build(_increment_transition)
    with pytest.raises(ValueError, match="step_inputs"):
        alg.run(jax.random.key(0), smc.init(jnp.zeros(4)), ())
    with pytest.raises(ValueError, match="step_inputs.*leading"):
        alg.run(jax.random.key(0), smc.init(jnp.zeros(4)), {"a": jnp.zeros((3, 4)), "b": 1.0})
