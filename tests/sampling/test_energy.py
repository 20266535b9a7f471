"""Energy minimisation (``inferax.sampling.energy``) against analytic truths.

Quadratic energies have exact gradient-descent iterates (contraction factor
``|1 - alpha lam|`` per step) and exact Langevin stationary laws; the training
gradient through the unrolled minimisation is checked against central finite
differences in float64, with the first-order control failing.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inferax.sampling import distributed, energy

LAM = np.array([0.5, 2.0, 4.0])


def quad(m, y, lam=LAM):
    """E = 1/2 sum lam (y - m)^2, minimiser m (the context)."""
    return 0.5 * jnp.sum(jnp.asarray(lam, y.dtype) * (y - m) ** 2)


def test_gradient_descent_contracts_at_the_predicted_rate():
    with jax.enable_x64(True):
        key = jax.random.key(0)
        m = jax.random.normal(key, (5, 3), jnp.float64)
        y0 = jnp.zeros((5, 3), jnp.float64)
        alpha = 0.2
        y, info = energy.minimize(None, quad, m, y0, num_steps=12, step_size=alpha,
                                  trajectory=True)  # fmt: skip
        err = np.abs(np.asarray(info.trajectory) - np.asarray(m)[None])  # [13, 5, 3]
        ratio = err[1:] / err[:-1]
        expect = np.abs(1.0 - alpha * np.asarray(LAM))  # 0.9, 0.6, 0.2
        np.testing.assert_allclose(ratio, np.broadcast_to(expect, ratio.shape), rtol=1e-6)
        # Energies follow E_k = sum lam/2 (1 - alpha lam)^(2k) (y0 - m)^2.
        k = np.arange(13)[:, None, None]
        e_true = np.sum(0.5 * LAM * expect ** (2 * k) * np.asarray(m)[None] ** 2, axis=-1)
        np.testing.assert_allclose(info.energies, e_true, rtol=1e-9)
        np.testing.assert_array_equal(info.evaluations, 13)
        assert info.grad_norms.shape == (12, 5)
        # Many steps reach the analytic minimiser.
        y, _ = energy.minimize(None, quad, m, y0, num_steps=400, step_size=alpha)
        np.testing.assert_allclose(y, m, atol=1e-12)


def test_adam_converges_and_step_counts():
    m = jnp.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    y, info = energy.minimize(None, quad, m, jnp.zeros_like(m), num_steps=400,
                              optimizer=optax.adam(0.05))  # fmt: skip
    np.testing.assert_allclose(y, m, atol=2e-3)
    assert info.energies[-1].max() < 1e-5 < info.energies[0].min()
    assert energy.max_evaluations(400) == 401


def test_optimizer_is_applied_per_candidate():
    """Global-norm clipping must not couple candidates: each runs as if alone."""
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
    m = jnp.array([[100.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    y, _ = energy.minimize(None, quad, m, jnp.zeros_like(m), num_steps=5, optimizer=opt)
    alone, _ = energy.minimize(None, quad, m[1:], jnp.zeros((1, 3)), num_steps=5, optimizer=opt)
    np.testing.assert_allclose(y[1], alone[0], rtol=1e-6)
    # Control: one optimizer over the whole population would clip candidate 1 by 0's norm.
    assert float(alone[0, 0]) > 0.01


def double_well(c, y):
    """(y^2 - 1)^2 + c y: for c > 0 the left well (y ~ -1) is the lower one."""
    return jnp.sum((y**2 - 1.0) ** 2 + c * y)


def test_self_verify_picks_the_lowest_energy():
    c = jnp.array([0.3, -0.3])  # context 0: left well lower; context 1: right well lower
    starts = jnp.array([0.8, -0.2, 1.5, 0.1])  # two end right, two end left (by sign)
    y0 = jnp.broadcast_to(starts[None, :, None], (2, 4, 1))
    chosen, ys, info = energy.self_verify(None, double_well, c, y0, num_candidates=4,
                                          num_steps=100, step_size=0.05)  # fmt: skip
    assert ys.shape == (2, 4, 1) and chosen.shape == (2, 1)
    final = np.array([[double_well(ci, yi) for yi in row] for ci, row in zip(c, ys, strict=True)])
    np.testing.assert_allclose(info.final_energies, final, rtol=1e-5)
    assert list(np.asarray(info.chosen)) == list(final.argmin(1))
    assert float(chosen[0, 0]) < -0.9 and float(chosen[1, 0]) > 0.9
    np.testing.assert_array_equal(info.evaluations, 4 * 101)
    # Known candidates, no steps: the exact argmin of the given energies, NaN never chosen.
    known = jnp.array([[[0.0], [-1.0], [1.0], [jnp.nan]]])
    ch, _, inf0 = energy.self_verify(None, double_well, jnp.array([0.3]), known,
                                     num_candidates=4, num_steps=0, step_size=0.1)  # fmt: skip
    assert int(inf0.chosen[0]) == 1 and float(ch[0, 0]) == -1.0


def test_callable_starts_use_fold_in_per_candidate():
    def init(k, _):
        return jax.random.normal(k, (3,))

    m = jnp.zeros((6, 3))
    y, info = energy.minimize(jax.random.key(1), quad, m, init, num_steps=0, step_size=0.1)
    np.testing.assert_allclose(y[4], init(jax.random.fold_in(jax.random.key(1), 4), None))
    assert info.energies.shape == (1, 6)


def test_scaled_langevin_samples_exp_minus_e_and_unscaled_does_not():
    with jax.enable_x64(True):
        alpha, lam, mu, n = 0.025, 2.0, 0.7, 4000
        e = partial(quad, lam=lam)
        m = jnp.full((n, 1), mu, jnp.float64)
        y0 = jnp.zeros((n, 1), jnp.float64)
        y, _ = energy.minimize(jax.random.key(2), e, m, y0, num_steps=int(8 / (alpha * lam)),
                               step_size=alpha, noise="langevin")  # fmt: skip
        y = np.asarray(y)[:, 0]
        r = 1.0 - alpha * lam
        var_discrete = 2.0 * r**2 / (lam * (2.0 - alpha * lam))  # noise before the step
        se = var_discrete * np.sqrt(2.0 / n)
        assert abs(y.mean() - mu) < 4 * np.sqrt(var_discrete / n)
        assert abs(y.var() - var_discrete) < 4 * se
        assert abs(y.var() - 1.0 / lam) < 2 * alpha + 4 * se  # exp(-E): 1 / lam, up to O(alpha)
        sigma = 0.1
        yu, _ = energy.minimize(jax.random.key(2), e, m, y0, num_steps=int(8 / (alpha * lam)),
                                step_size=alpha, noise="unscaled", noise_scale=sigma)  # fmt: skip
        var_u = sigma**2 * r**2 / (1.0 - r**2)  # depends on alpha: not exp(-E)
        vu = float(np.var(np.asarray(yu)))
        assert abs(vu - var_u) < 4 * var_u * np.sqrt(2.0 / n)
        assert abs(vu - 1.0 / lam) > 0.1


def _fd_check(num_steps: int, truncate: bool, second_order: bool):
    """Relative error of the unrolled training gradient against central differences."""
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
        x = jax.random.normal(k1, (4, 3), jnp.float64)
        target = jax.random.normal(k2, (4, 2), jnp.float64)
        theta = {"w": 0.5 * jax.random.normal(k3, (3, 2), jnp.float64),
                 "a": jnp.array(0.3, jnp.float64)}  # fmt: skip

        def loss(theta):
            def e(xi, y):  # grad_y E depends on w nonlinearly: Hessian terms matter
                h = jnp.tanh(xi @ theta["w"])
                return 0.5 * jnp.sum((y - h) ** 2) + 0.1 * jnp.sum(jnp.cos(y * h))

            _, info = energy.minimize(None, e, x, jnp.zeros((4, 2), jnp.float64),
                                      num_steps=num_steps, step_size=theta["a"],
                                      truncate=truncate, second_order=second_order,
                                      trajectory=True)  # fmt: skip
            preds = info.trajectory[1:]  # the loss on every step's prediction
            return jnp.mean(jnp.sum((preds - target[None]) ** 2, axis=-1))

        g = jax.jit(jax.grad(loss))(theta)
        loss = jax.jit(loss)
        flat, unravel = jax.flatten_util.ravel_pytree(theta)
        eps = 1e-6
        fd = np.array([
            (loss(unravel(flat.at[i].add(eps))) - loss(unravel(flat.at[i].add(-eps)))) / (2 * eps)
            for i in range(flat.size)
        ])  # fmt: skip
        ga = np.asarray(jax.flatten_util.ravel_pytree(g)[0])
        return np.max(np.abs(ga - fd)) / np.max(np.abs(fd))


@pytest.mark.parametrize("num_steps", [1, 3])
def test_training_gradient_matches_finite_differences(num_steps):
    assert _fd_check(num_steps, truncate=False, second_order=True) < 1e-7


@pytest.mark.parametrize("num_steps", [1, 3])
def test_dropping_the_second_order_term_fails_the_check(num_steps):
    assert _fd_check(num_steps, truncate=False, second_order=False) > 1e-2


def test_truncation_differs_from_full_unroll_beyond_one_step():
    # One step: truncation changes nothing (y_0 does not depend on the parameters).
    assert _fd_check(1, truncate=True, second_order=True) < 1e-7
    assert _fd_check(3, truncate=True, second_order=True) > 1e-3


def test_early_stopping_and_active_steps():
    m = jnp.array([[2.0, 2.0, 2.0]])
    alpha, tol = 0.2, 0.05
    y, info = energy.minimize(None, quad, m, jnp.zeros((1, 3)), num_steps=30,
                              step_size=alpha, tol=tol, trajectory=True)  # fmt: skip
    e = np.asarray(info.energies[:, 0])
    s = int(info.stopped_at[0])
    # It stops at the first step whose energy fell by less than tol, and stays there.
    drops = e[:-1][:-1] - e[:-1][1:]
    first = int(np.argmax(drops < tol)) + 1
    assert 0 < s == first < 30 and int(info.evaluations[0]) == s + 1
    np.testing.assert_allclose(info.trajectory[s:, 0], np.broadcast_to(y[0], (31 - s, 3)))
    # num_active_steps = k is the same as num_steps = k (traced, one program).
    run = jax.jit(lambda k: energy.minimize(None, quad, m, jnp.zeros((1, 3)), num_steps=30,
                                            step_size=alpha, num_active_steps=k))  # fmt: skip
    y5, i5 = run(5)
    ref, _ = energy.minimize(None, quad, m, jnp.zeros((1, 3)), num_steps=5, step_size=alpha)
    np.testing.assert_allclose(y5, ref, rtol=1e-6)
    assert int(i5.stopped_at[0]) == 5 and int(i5.evaluations[0]) == 6


def test_same_result_sharded_over_4_devices(devices):
    m = jax.random.normal(jax.random.key(5), (16, 3))
    y0 = jnp.zeros((16, 3))

    def go(m, y0):
        return energy.minimize(jax.random.key(6), double_well, m[:, 0] * 0.2, y0, num_steps=10,
                               step_size=0.05, noise="unscaled", noise_scale=0.1)  # fmt: skip

    ref, ref_info = jax.jit(go)(m, y0)
    mesh = distributed.particle_mesh(devices)
    ms, ys = distributed.shard_particles((m, y0), mesh)
    out, info = jax.jit(go)(ms, ys)
    assert len(out.sharding.device_set) == 4
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(info.energies, ref_info.energies, rtol=1e-6, atol=1e-6)
    # Different keys give different noise (the comparison above can fail).
    other, _ = jax.jit(lambda m, y: energy.minimize(
        jax.random.key(7), double_well, m[:, 0] * 0.2, y, num_steps=10, step_size=0.05,
        noise="unscaled", noise_scale=0.1))(ms, ys)  # fmt: skip
    assert float(jnp.max(jnp.abs(other - ref))) > 1e-3


def test_bad_inputs_name_the_argument():
    m, y0 = jnp.zeros((2, 3)), jnp.zeros((2, 3))
    kw = {"num_steps": 2, "step_size": 0.1}
    with pytest.raises(ValueError, match="energy_fn.*scalar"):
        energy.minimize(None, lambda c, y: y, m, y0, **kw)
    with pytest.raises(ValueError, match="num_candidates"):
        energy.self_verify(None, quad, m, y0[:, None], num_candidates=0, **kw)
    with pytest.raises(ValueError, match="step_size.*positive"):
        energy.minimize(None, quad, m, y0, num_steps=2, step_size=-0.1)
    with pytest.raises(ValueError, match="noise"):
        energy.minimize(jax.random.key(0), quad, m, y0, noise="brownian", **kw)
    with pytest.raises(ValueError, match="step_size"):
        energy.minimize(None, quad, m, y0, num_steps=2, step_size=0.1, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="noise"):
        energy.minimize(jax.random.key(0), quad, m, y0, num_steps=2, optimizer=optax.sgd(0.1),
                        noise="langevin")  # fmt: skip
    with pytest.raises(ValueError, match="y0"):
        energy.minimize(None, quad, m, jnp.zeros((3, 3)), **kw)
    with pytest.raises(TypeError, match="y0"):
        energy.minimize(None, quad, m, jnp.zeros((2, 3), jnp.int32), **kw)
    with pytest.raises(ValueError, match="key"):
        energy.minimize(None, quad, m, y0, noise="unscaled", **kw)
