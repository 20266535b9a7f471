"""Flow-matching loss against a float64 NumPy recomputation, and the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inferax.models import flow_matching as fm

NULL = 3  # three classes 0..2, NULL label 3


def linear_apply(params, x, t, labels=None):
    """v = x W + t b + E[labels]: a model whose loss is easy to recompute."""
    v = x @ params["w"] + t[:, None] * params["b"]
    if labels is not None:
        v = v + params["e"][labels]
    return v


def make_params(d=3):
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    return {
        "w": jax.random.normal(k1, (d, d)),
        "b": jax.random.normal(k2, (d,)),
        "e": jax.random.normal(k3, (NULL + 1, d)),
    }


def numpy_loss(params, key, x1, labels=None, p_uncond=0.0):
    """Float64 recomputation: the documented key split, then the loss formula."""
    k_x0, k_t, k_drop = jax.random.split(key, 3)
    n = x1.shape[0]
    x0 = np.asarray(jax.random.normal(k_x0, x1.shape), np.float64)
    t = np.asarray(jax.random.uniform(k_t, (n,)), np.float64)
    x1 = np.asarray(x1, np.float64)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    v = xt @ p["w"] + t[:, None] * p["b"]
    if labels is not None:
        labels = np.asarray(labels)
        if p_uncond > 0:
            drop = np.asarray(jax.random.bernoulli(k_drop, p_uncond, (n,)))
            labels = np.where(drop, NULL, labels)
        v = v + p["e"][labels]
    return np.mean((v - (x1 - x0)) ** 2)


@pytest.fixture(scope="module")
def batch():
    x1 = jax.random.normal(jax.random.key(5), (64, 3)) * 2.0 + 1.0
    labels = jax.random.randint(jax.random.key(6), (64,), 0, NULL)
    return x1, labels


def test_loss_matches_numpy_float64(batch):
    x1, labels = batch
    params, key = make_params(), jax.random.key(7)
    got = fm.flow_matching_loss(params, linear_apply, key, x1)
    np.testing.assert_allclose(float(got), numpy_loss(params, key, x1), rtol=1e-5)
    got = fm.flow_matching_loss(params, linear_apply, key, x1, labels)
    np.testing.assert_allclose(float(got), numpy_loss(params, key, x1, labels), rtol=1e-5)
    got = fm.flow_matching_loss(
        params, linear_apply, key, x1, labels, p_uncond=0.4, null_label=NULL
    )
    want = numpy_loss(params, key, x1, labels, p_uncond=0.4)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # The dropout must matter (else the comparison above proves nothing about it).
    assert abs(want - numpy_loss(params, key, x1, labels)) > 1e-3


def test_negative_wrong_sign_or_interpolant_differs(batch):
    # A target x0 - x1 or an interpolant t x0 + (1 - t) x1 gives a clearly different value.
    x1, _ = batch
    params, key = make_params(), jax.random.key(7)
    got = float(fm.flow_matching_loss(params, linear_apply, key, x1))
    k_x0, k_t, _ = jax.random.split(key, 3)
    x0 = jax.random.normal(k_x0, x1.shape)
    t = jax.random.uniform(k_t, (64,))[:, None]
    flipped = jnp.mean((linear_apply(params, (1 - t) * x0 + t * x1, t[:, 0]) - (x0 - x1)) ** 2)
    swapped = jnp.mean((linear_apply(params, t * x0 + (1 - t) * x1, t[:, 0]) - (x1 - x0)) ** 2)
    assert abs(got - float(flipped)) > 0.1 and abs(got - float(swapped)) > 0.1


def test_zero_velocity_loss_is_second_moment():
    # With v = 0 the loss is E|x1 - x0|^2 / d = E[x1^2] + 1 per coordinate (exact in expectation).
    x1 = jnp.full((20000, 2), 1.5)
    loss = fm.flow_matching_loss(None, lambda p, x, t: jnp.zeros_like(x), jax.random.key(0), x1)
    np.testing.assert_allclose(float(loss), 1.5**2 + 1.0, rtol=0.02)  # MC std ~0.5 %


def test_p_uncond_one_means_all_null(batch):
    x1, labels = batch
    params, key = make_params(), jax.random.key(9)
    a = fm.flow_matching_loss(params, linear_apply, key, x1, labels, p_uncond=1.0, null_label=NULL)
    b = fm.flow_matching_loss(params, linear_apply, key, x1, jnp.full((64,), NULL))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_image_shaped_batches():
    x1 = jnp.ones((4, 8, 8, 1))
    loss = fm.flow_matching_loss(None, lambda p, x, t: x, jax.random.key(0), x1)
    k_x0, k_t, _ = jax.random.split(jax.random.key(0), 3)
    x0 = np.asarray(jax.random.normal(k_x0, x1.shape), np.float64)
    t = np.asarray(jax.random.uniform(k_t, (4,)), np.float64)[:, None, None, None]
    xt = (1 - t) * x0 + t * 1.0
    np.testing.assert_allclose(float(loss), np.mean((xt - (1.0 - x0)) ** 2), rtol=1e-5)


def test_train_step_jits_once_and_matches_manual_update(batch):
    x1, labels = batch
    params = make_params()
    opt = optax.adam(1e-2)
    traces = []

    def apply(p, x, t, y=None):
        traces.append(1)
        return linear_apply(p, x, t, y)

    step = fm.make_train_step(apply, opt, p_uncond=0.2, null_label=NULL, ema_decay=0.9)
    state = fm.init_train_state(params, opt, ema_decay=0.9)
    for i in range(3):
        new, loss = step(state, jax.random.key(i), x1, labels)
        # Manual: gradient of the same loss, one adam update, EMA.
        lf = lambda p, i=i: fm.flow_matching_loss(
            p, linear_apply, jax.random.key(i), x1, labels, p_uncond=0.2, null_label=NULL
        )
        want_loss, g = jax.value_and_grad(lf)(state.params)
        upd, _ = opt.update(g, state.opt_state, state.params)
        want = optax.apply_updates(state.params, upd)
        np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for e, e0, p in zip(
            *(jax.tree.leaves(t) for t in (new.ema_params, state.ema_params, new.params)),
            strict=True,
        ):
            np.testing.assert_allclose(e, 0.9 * e0 + 0.1 * p, rtol=1e-5, atol=1e-6)
        assert int(new.step) == i + 1
        state = new
    assert len(traces) == 1  # traced once by the jitted step (the manual check is not counted)


def test_bad_arguments(batch):
    x1, labels = batch
    params, key = make_params(), jax.random.key(0)
    with pytest.raises(ValueError, match="null_label: required when p_uncond > 0"):
        fm.flow_matching_loss(params, linear_apply, key, x1, labels, p_uncond=0.1)
    with pytest.raises(ValueError, match=r"p_uncond: expected a probability in \[0, 1\]"):
        fm.make_train_step(linear_apply, optax.sgd(1.0), p_uncond=1.5, null_label=NULL)
    with pytest.raises(ValueError, match=r"labels: expected shape \(64,\)"):
        fm.flow_matching_loss(params, linear_apply, key, x1, labels[:10])
    with pytest.raises(ValueError, match="x1: expected a batch"):
        fm.flow_matching_loss(params, linear_apply, key, x1[0])
    with pytest.raises(ValueError, match=r"apply_fn: expected a velocity of shape"):
        fm.flow_matching_loss(params, lambda p, x, t: x[:, :2], key, x1)
    with pytest.raises(ValueError, match="ema_decay"):
        fm.make_train_step(linear_apply, optax.sgd(1.0), ema_decay=1.0)
    step = fm.make_train_step(linear_apply, optax.sgd(1.0), ema_decay=0.5)
    with pytest.raises(ValueError, match="ema_params is None"):
        step(fm.init_train_state(params, optax.sgd(1.0)), key, x1)
