"""VelocityMLP and the shared time / label embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import mlp


@pytest.fixture(scope="module")
def cond_model():
    model = mlp.VelocityMLP(features=3, hidden=32, depth=2, time_embed_dim=16, num_classes=4)
    x = jax.random.normal(jax.random.key(0), (6, 3))
    params = jax.jit(model.init)(jax.random.key(1), x, 0.5, jnp.zeros(6, jnp.int32))
    return model, params, x


def test_shapes_dtype_and_param_tree(cond_model):
    model, params, x = cond_model
    v = model.apply(params, x, 0.3, jnp.arange(6) % 4)
    assert v.shape == (6, 3) and v.dtype == jnp.float32
    # NULL row: the label table has num_classes + 1 rows.
    assert params["params"]["label_embed"]["embedding"].shape == (5, 32)
    assert mlp.null_label(4) == 4


def test_jit_traces_once(cond_model):
    model, params, x = cond_model
    traces = []

    @jax.jit
    def f(params, x, t, y):
        traces.append(1)
        return model.apply(params, x, t, y)

    for i in range(3):
        out = f(params, x + i, jnp.float32(0.1 * i), jnp.full((6,), i, jnp.int32))
        np.testing.assert_allclose(
            out, model.apply(params, x + i, 0.1 * i, jnp.full((6,), i)), atol=1e-4
        )
    assert len(traces) == 1


def test_scalar_and_vector_time_agree(cond_model):
    model, params, x = cond_model
    y = jnp.arange(6) % 4
    a = model.apply(params, x, 0.7, y)
    b = model.apply(params, x, jnp.full((6,), 0.7), y)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_rows_are_independent(cond_model):
    # A velocity must treat particles independently (samplers rely on it).
    model, params, x = cond_model
    t = jnp.linspace(0.0, 1.0, 6)
    y = jnp.arange(6) % 4
    full = model.apply(params, x, t, y)
    part = model.apply(params, x[2:4], t[2:4], y[2:4])
    np.testing.assert_allclose(full[2:4], part, atol=1e-5)


def test_time_embedding_distinguishes_times():
    emb = mlp.sinusoidal_embedding(jnp.array([0.0, 0.001, 0.5, 1.0]), 32)
    assert emb.shape == (4, 32)
    d = np.linalg.norm(np.asarray(emb)[:, None] - np.asarray(emb)[None], axis=-1)
    off_diag = d[~np.eye(4, dtype=bool)]
    assert off_diag.min() > 0.1  # even t = 0 vs t = 0.001 is resolved
    # sin / cos halves: each frequency pair lies on the unit circle.
    np.testing.assert_allclose(emb[:, :16] ** 2 + emb[:, 16:] ** 2, 1.0, atol=1e-6)


def test_time_changes_output(cond_model):
    model, params, x = cond_model
    y = jnp.zeros(6, jnp.int32)
    assert (
        float(jnp.abs(model.apply(params, x, 0.2, y) - model.apply(params, x, 0.8, y)).max()) > 1e-3
    )


def test_null_label_is_the_default_and_changes_output(cond_model):
    model, params, x = cond_model
    null = jnp.full((6,), mlp.null_label(4))
    v_none = model.apply(params, x, 0.4)
    v_null = model.apply(params, x, 0.4, null)
    v_zero = model.apply(params, x, 0.4, jnp.zeros(6, jnp.int32))
    np.testing.assert_array_equal(v_none, v_null)
    assert float(jnp.abs(v_null - v_zero).max()) > 1e-3


def test_unconditional_model():
    model = mlp.VelocityMLP(hidden=16, depth=1, time_embed_dim=8)
    x = jnp.ones((4, 2))
    params = model.init(jax.random.key(0), x, 0.0)
    assert "label_embed" not in params["params"]
    assert model.apply(params, x, 1.0).shape == (4, 2)
    with pytest.raises(ValueError, match="labels"):
        model.apply(params, x, 1.0, jnp.zeros(4, jnp.int32))


def test_bad_inputs_raise(cond_model):
    model, params, x = cond_model
    with pytest.raises(ValueError, match=r"x: expected shape \[N, 3\]"):
        model.apply(params, jnp.ones((6, 2)), 0.1)
    with pytest.raises(ValueError, match="t: expected a scalar or shape"):
        model.apply(params, x, jnp.ones(5))
    with pytest.raises(ValueError, match="labels: expected integer labels"):
        model.apply(params, x, 0.1, jnp.zeros(6, jnp.float32))
    with pytest.raises(ValueError, match="dim: expected an even int"):
        mlp.sinusoidal_embedding(0.5, 7)
    with pytest.raises(ValueError, match="num_classes"):
        mlp.null_label(0)
