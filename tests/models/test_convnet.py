"""ConvVelocity for 8x8 images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import convnet, mlp


@pytest.fixture(scope="module")
def model_params():
    model = convnet.ConvVelocity(channels=16, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
    params = jax.jit(model.init)(jax.random.key(1), x, 0.5, jnp.arange(5))
    # Eager op-by-op evaluation of a conv net is slow; the tests run it jitted.
    return jax.jit(model.apply), params, x


def test_shape_jit_and_trace_once(model_params):
    apply, params, x = model_params
    traces = []

    @jax.jit
    def f(params, x, t, y):
        traces.append(1)
        return apply(params, x, t, y)

    for i in range(2):
        v = f(params, x * (i + 1), jnp.float32(0.3 + 0.2 * i), jnp.arange(5) + i)
        assert v.shape == (5, 8, 8, 1) and v.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(v)))
    assert len(traces) == 1


def test_small_enough():
    model = convnet.ConvVelocity(num_classes=10)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)), 0.0, jnp.zeros(1, jnp.int32)
    )
    n = sum(p.size for p in jax.tree.leaves(shapes))
    assert 5e4 < n < 1e6, n


def test_time_label_and_null_label_matter(model_params):
    model, params, x = model_params  # model is the jitted apply
    y = jnp.full((5,), 3)
    base = model(params, x, 0.5, y)
    assert float(jnp.abs(base - model(params, x, 0.9, y)).max()) > 1e-3
    assert float(jnp.abs(base - model(params, x, 0.5, jnp.full((5,), 4))).max()) > 1e-3
    null = model(params, x, 0.5, jnp.full((5,), mlp.null_label(10)))
    assert float(jnp.abs(base - null).max()) > 1e-3
    np.testing.assert_array_equal(null, model(params, x, 0.5))


def test_rows_are_independent(model_params):
    model, params, x = model_params  # model is the jitted apply
    t = jnp.linspace(0, 1, 5)
    full = model(params, x, t, jnp.arange(5))
    part = model(params, x[1:3], t[1:3], jnp.arange(1, 3))
    np.testing.assert_allclose(full[1:3], part, atol=1e-5)


def test_bad_inputs_raise(model_params):
    model, params, x = model_params  # model is the jitted apply
    with pytest.raises(ValueError, match=r"x: expected shape \[N, H, W, 1\]"):
        model(params, jnp.zeros((5, 8, 8, 3)), 0.5)
    with pytest.raises(ValueError, match=r"x: expected shape"):
        model(params, jnp.zeros((5, 64)), 0.5)
    with pytest.raises(ValueError, match="labels"):
        model(params, x, 0.5, jnp.arange(4))
