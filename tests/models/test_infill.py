"""The mask-conditioned infilling flow (models.infill): masks, the exact observed pixels,
the training target on observed pixels, CFG cost, training and its cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import data, infill
from inferax.sampling import flow, schedules

NET = infill.InfillVelocity(hidden=32, depth=1)


@pytest.fixture(scope="module")
def setup():
    key = jax.random.key(0)
    obs = jax.random.uniform(key, (6, 8, 8, 1), minval=-1.0, maxval=1.0)
    mask = infill.make_masks("random", 6, jax.random.key(1))
    params = NET.init(jax.random.key(2), obs, jnp.zeros(6), obs, mask)
    return obs, mask, params


def test_masks():
    m = np.asarray(infill.make_masks("bottom", 3))
    assert m.shape == (3, 8, 8, 1) and np.all(m[:, :4] == 1) and np.all(m[:, 4:] == 0)
    r1 = np.asarray(infill.make_masks("random", 200, jax.random.key(0)))
    r2 = np.asarray(infill.make_masks("random", 200, jax.random.key(0)))
    assert np.array_equal(r1, r2) and set(np.unique(r1)) == {0.0, 1.0}
    assert abs(r1.mean() - 0.5) < 0.02  # 12800 pixels: sd 0.0044
    assert not np.array_equal(r1[0], r1[1])
    with pytest.raises(ValueError, match="kind"):
        infill.make_masks("left", 2)
    with pytest.raises(ValueError, match="key"):
        infill.make_masks("random", 2)


@pytest.mark.parametrize("solver,w", [("euler", 0.0), ("midpoint", 2.0)])
def test_observed_pixels_are_exact_at_every_step(setup, solver, w):
    obs, mask, params = setup
    x0 = infill.initial_state(flow.noise(jax.random.key(3), 6, (8, 8, 1)), obs, mask)
    v = infill.infill_velocity(NET, params, obs, mask, w)
    x1, info = flow.sample(v, x0, schedules.sway(5, -1.0), solver=solver, return_trajectory=True)
    assert int(info.nfe) == 5 * (2 if solver == "midpoint" else 1) * (2 if w else 1)
    traj = np.asarray(info.trajectory)
    m, o = np.asarray(mask), np.asarray(obs)
    assert np.array_equal(traj * m, np.broadcast_to(o * m, traj.shape))  # bit-exact
    assert np.abs((traj[-1] - traj[0]) * (1 - m)).max() > 1e-3  # unknown pixels do move
    # Negative control: the raw network velocity (not zeroed) moves the observed pixels.
    raw, _ = flow.sample(lambda x, t: NET.apply(params, x, t, obs, mask), x0, schedules.uniform(5))
    assert np.abs((np.asarray(raw) - o) * m).max() > 1e-3


def test_training_apply_gives_the_exact_target_on_observed_pixels(setup):
    obs, mask, params = setup
    apply = infill.training_apply(NET, obs * mask, mask)
    x0 = jax.random.normal(jax.random.key(4), obs.shape)
    t = jnp.linspace(0.05, 0.95, 6)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * obs
    out = apply(params, xt, t, jnp.arange(6))
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(out) * m, np.asarray(obs - x0) * m, atol=1e-4)
    # Unknown pixels: the network; the NULL label (6) drops the condition (mask 0 everywhere).
    net = NET.apply(params, xt, t, obs * mask, mask)
    np.testing.assert_allclose(np.asarray(out) * (1 - m), np.asarray(net) * (1 - m), atol=1e-6)
    dropped = apply(params, xt, t, jnp.full(6, 6))
    zeros = jnp.zeros_like(obs)
    np.testing.assert_allclose(dropped, NET.apply(params, xt, t, zeros, zeros), atol=1e-6)


def test_train_infill_learns_and_is_cached(tmp_path):
    images = jnp.asarray(data.load_digits("train")[0][:100])
    kw = dict(model=NET, workdir=str(tmp_path), spec={"test": 1}, num_steps=80, batch_size=32,
              lr=3e-3, warmup_steps=5)  # fmt: skip
    params, losses = infill.train_infill(jax.random.key(6), images, **kw)
    assert losses.shape == (80,) and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    again, losses2 = infill.train_infill(jax.random.key(6), images, **kw)  # restored
    assert np.array_equal(losses, losses2)
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="images"):
        infill.train_infill(jax.random.key(6), images[..., 0], **kw)
    with pytest.raises(ValueError, match="mask"):
        NET.apply(params, images[:2], 0.5, images[:2], jnp.ones((2, 8, 8)))
