"""Classifier-free guidance: the combination, the doubled batch, the NFE count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import flow, guidance, schedules

NULL = 3


def cond_velocity(x, t, labels):
    # A velocity whose conditional and unconditional branches are easy to tell apart.
    shift = jnp.where(labels == NULL, -1.0, labels.astype(x.dtype))[:, None]
    return -x + shift + t


def test_cfg_combines_as_specified():
    x = jax.random.normal(jax.random.key(0), (5, 2))
    labels = jnp.array([0, 1, 2, 1, 0])
    w = 2.0
    v = guidance.cfg(cond_velocity, labels, NULL, w)(x, 0.3)
    v_c = cond_velocity(x, 0.3, labels)
    v_u = cond_velocity(x, 0.3, jnp.full(5, NULL))
    np.testing.assert_allclose(v, v_c + w * (v_c - v_u), rtol=1e-6)
    # w = 0 is the conditional model, w = -1 the unconditional one.
    np.testing.assert_allclose(
        guidance.cfg(cond_velocity, labels, NULL, 0.0)(x, 0.3), v_c, rtol=1e-6
    )
    np.testing.assert_allclose(
        guidance.cfg(cond_velocity, labels, NULL, -1.0)(x, 0.3), v_u, rtol=1e-6
    )


def test_one_batched_call_per_evaluation_and_two_nfe():
    calls = []

    def counting(x, t, labels):
        calls.append(x.shape[0])
        return cond_velocity(x, t, labels)

    labels = jnp.array([0, 1, 2, 1])
    guided = guidance.cfg(counting, labels, NULL, 2.0)
    _, info = flow.sample(guided, jnp.zeros((4, 2)), schedules.uniform(6))
    assert int(info.nfe) == 12  # 6 steps x 2 branches
    assert set(calls) == {8}  # both branches in one doubled batch


def test_guidance_scale_can_be_traced():
    labels = jnp.array([0, 2])
    f = jax.jit(lambda w: guidance.cfg(cond_velocity, labels, NULL, w)(jnp.ones((2, 2)), 0.5))
    np.testing.assert_allclose(f(0.0), cond_velocity(jnp.ones((2, 2)), 0.5, labels))


def test_bad_null_cond_raises():
    with pytest.raises(ValueError, match="null_cond"):
        guidance.cfg(cond_velocity, jnp.array([0, 1, 2]), jnp.array([3, 3]), 2.0)
