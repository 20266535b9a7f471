"""The resumable training loop: resume, non-finite stops, the config-keyed cache."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inferax.models import data, gmm, mlp
from inferax.models import train as tr
from inferax.models.checkpoint import (
    Checkpointer,
    DirectoryLock,
    DirectoryLockedError,
    NonFiniteError,
)
from inferax.models.flow_matching import flow_matching_loss

TINY = mlp.VelocityMLP(hidden=16, depth=1, time_embed_dim=8, num_classes=3)


@functools.cache
def tiny_params():
    return jax.jit(TINY.init)(jax.random.key(0), jnp.zeros((1, 2)), 0.0, jnp.zeros(1, jnp.int32))


@functools.cache
def tiny_data():
    x, y = gmm.eight_gaussians().sample_with_labels(jax.random.key(1), 256)
    return np.asarray(x, np.float32), np.asarray(y % 3, np.int32)


@functools.cache
def tiny_optimizer():
    return tr.make_optimizer(3e-3, 12, warmup_steps=2)


def run(workdir, num_steps, key=0, **kw):
    x, y = tiny_data()
    args = dict(
        apply_fn=TINY.apply,
        params_init=tiny_params(),
        data=x,
        labels=y,
        optimizer=tiny_optimizer(),
        num_steps=num_steps,
        batch_size=32,
        workdir=workdir,
        checkpoint_every=4,
        p_uncond=0.3,
        null_label=mlp.null_label(3),
        ema_decay=0.9,
        log_every=3,
    )
    args.update(kw)
    return tr.train(jax.random.key(key), **args)


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_identical(tmp_path):
    full_params, full_losses = run(tmp_path / "full", 12)
    # Interrupted at step 5 (not a checkpoint multiple: the end of a run is always saved) ...
    p5, l5 = run(tmp_path / "cut", 5)
    assert l5.shape == (5,)
    # ... and started again with the full length: resumes at 5, saves at 8 and 12.
    resumed_params, resumed_losses = run(tmp_path / "cut", 12)
    assert_trees_equal(resumed_params, full_params)
    np.testing.assert_array_equal(resumed_losses, full_losses)
    np.testing.assert_array_equal(resumed_losses[:5], l5)
    assert full_losses.shape == (12,) and np.all(np.isfinite(full_losses))
    # Negative control: the comparison can fail (the step-5 parameters differ).
    assert not np.array_equal(
        np.asarray(jax.tree.leaves(p5)[0]), np.asarray(jax.tree.leaves(full_params)[0])
    )


def cached(workdir, key=0, model=TINY, params=None, **kw):
    x, y = tiny_data()
    args = dict(
        workdir=workdir,
        apply_fn=model.apply,
        params_init=tiny_params() if params is None else params,
        data=x,
        labels=y,
        optimizer=tiny_optimizer(),
        num_steps=6,
        batch_size=32,
        checkpoint_every=4,
        p_uncond=0.3,
        null_label=3,
        spec={"lr": 3e-3, "warmup_steps": 2},
    )
    args.update(kw)
    return tr.train_or_restore(jax.random.key(key), **args)


def entries(workdir):
    return sorted(d for d in os.listdir(workdir) if os.path.isfile(workdir / d / "spec.json"))


def test_train_or_restore_keys_the_cache_by_seed(tmp_path, monkeypatch):
    params_a, losses_a = cached(tmp_path, key=0)
    params_b, _ = cached(tmp_path, key=1)
    assert len(entries(tmp_path)) == 2  # seed B trained its own model ...
    assert not np.array_equal(jax.tree.leaves(params_a)[0], jax.tree.leaves(params_b)[0])
    # ... and seed A again restores A's model without running a step.
    monkeypatch.setattr(tr, "_run", lambda *a: pytest.fail("trained although cached"))
    again, again_losses = cached(tmp_path, key=0)
    assert_trees_equal(again, params_a)
    np.testing.assert_array_equal(again_losses, losses_a)
    assert len(entries(tmp_path)) == 2
    # Arguments that do not change the model, or that repeat train()'s defaults, hit it too.
    same, _ = cached(tmp_path, key=0, log_every=2, checkpoint_every=2, ema_decay=None)
    assert_trees_equal(same, params_a)
    assert len(entries(tmp_path)) == 2
    # The record beside the entry says what determined it.
    with open(tmp_path / entries(tmp_path)[0] / "spec.json") as f:
        record = json.load(f)
    assert record["spec"] == {"lr": 3e-3, "warmup_steps": 2} and record["num_steps"] == 6
    assert "VelocityMLP" in record["apply_fn"]


def test_train_or_restore_mismatch(tmp_path):
    cached(tmp_path)
    wide = mlp.VelocityMLP(hidden=24, depth=1, time_embed_dim=8, num_classes=3)
    wide_params = wide.init(jax.random.key(0), jnp.zeros((1, 2)), 0.0, jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError) as err:
        cached(tmp_path, model=wide, params=wide_params, refuse_mismatch=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("workdir: the model cached in")
    assert "params_init" in msg and "apply_fn" in msg and "key" not in msg.split("in:")[1]
    assert len(entries(tmp_path)) == 1  # refused before creating anything
    with pytest.raises(ValueError, match=r"differs in: spec.lr \(0.003 -> 0.001\)$"):
        cached(tmp_path, spec={"lr": 1e-3, "warmup_steps": 2}, refuse_mismatch=True)
    # Without refuse_mismatch an architecture change trains a new entry (no orbax error).
    params, losses = cached(tmp_path, model=wide, params=wide_params)
    assert 24 in {x.shape[-1] for x in jax.tree.leaves(params)} and losses.shape == (6,)
    assert len(entries(tmp_path)) == 2
    with pytest.raises(TypeError, match="spec.fn: expected JSON-like values"):
        cached(tmp_path, spec={"fn": print})


def test_train_or_restore_refuses_a_concurrent_run(tmp_path):
    cached(tmp_path)
    (entry,) = entries(tmp_path)
    with DirectoryLock(tmp_path / entry):  # another run is training this entry
        with pytest.raises(DirectoryLockedError, match=rf"{entry}/.lock is held by PID"):
            cached(tmp_path)


def nan_at(step):
    """An optax stage that turns the update of step ``step`` (1-based) into NaN."""

    def update(updates, count, params=None):
        scale = jnp.where(count + 1 == step, jnp.nan, 1.0)
        return jax.tree.map(lambda u: u * scale, updates), count + 1

    return optax.GradientTransformation(lambda p: jnp.zeros((), jnp.int32), update)


def test_nan_loss_stops_training_and_keeps_the_last_finite_checkpoint(tmp_path):
    opt = optax.chain(tiny_optimizer(), nan_at(6))
    # NaN parameters after update 6 give a NaN loss at step 7; the flush at step 8 sees it.
    with pytest.raises(NonFiniteError, match=r"loss nan at step 7 \(of 12\).*checkpoint is step 4"):
        run(tmp_path, 12, optimizer=opt, max_to_keep=1, ema_decay=None)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4]  # rotation (max_to_keep=1) kept the finite one
    # Resuming with a healthy optimizer (same state structure) restores step 4 and finishes.
    params, losses = run(tmp_path, 12, optimizer=optax.chain(tiny_optimizer(), nan_at(99)),
                         max_to_keep=1, ema_decay=None)  # fmt: skip
    assert losses.shape == (12,) and np.all(np.isfinite(losses))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
    # Negative control: the NaN-free run is the one that resumed (same first 4 losses).
    _, clean = run(None, 12, optimizer=optax.chain(tiny_optimizer(), nan_at(99)), ema_decay=None)
    np.testing.assert_array_equal(losses, clean)


def test_non_finite_parameters_stop_training(tmp_path):
    opt = optax.chain(tiny_optimizer(), nan_at(12))  # the last update: its loss is still finite
    with pytest.raises(NonFiniteError, match=r"step 12: checkpoint .*/12 not saved"):
        run(tmp_path, 12, optimizer=opt, ema_decay=None)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4, 8]
    with pytest.raises(NonFiniteError, match=r"parameter .* is not finite after step 12"):
        run(None, 12, optimizer=opt, ema_decay=None)


def test_flow_matching_on_eight_gaussians_learns_the_exact_velocity():
    """A 2-D VelocityMLP approaches the analytic eight-Gaussians velocity."""
    model = mlp.VelocityMLP(hidden=64, depth=2, time_embed_dim=16)
    params0 = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 2)), 0.0)
    steps = 400
    params, losses = tr.train(
        jax.random.key(1),
        apply_fn=model.apply,
        params_init=params0,
        data=data.eight_gaussians,  # a sampler: fresh data every step
        optimizer=tr.make_optimizer(3e-3, steps, warmup_steps=20),
        num_steps=steps,
        batch_size=256,
        workdir=None,
        log_every=100,
    )
    assert losses.shape == (steps,)
    mix = gmm.eight_gaussians()
    exact = jax.jit(jax.vmap(lambda x, t: mix.velocity(x[None], t)[0]))
    x1 = data.eight_gaussians(jax.random.key(9), 4096)
    key = jax.random.key(10)
    loss_fn = jax.jit(lambda p: flow_matching_loss(p, model.apply, key, x1))
    loss = lambda p: float(loss_fn(p))
    floor = float(jax.jit(lambda: flow_matching_loss(None, lambda p, x, t: exact(x, t), key, x1))())
    init, final = loss(params0), loss(params)
    # The loss cannot go below the exact velocity's (up to MC noise on the same draws);
    # training closes most of the gap from the initial network to that floor.
    assert final > floor - 0.05
    assert final - floor < 0.25 * (init - floor), (init, final, floor)
    assert losses[-50:].mean() < 0.6 * losses[:20].mean()
    # Pointwise: the learned velocity is close to the exact one at mid times.
    xt = 0.5 * jax.random.normal(jax.random.key(3), x1.shape) + 0.5 * x1
    t = jnp.full((4096,), 0.5)
    err_fn = jax.jit(lambda p: jnp.mean(jnp.sum((model.apply(p, xt, t) - exact(xt, t)) ** 2, -1)))
    err, err0 = err_fn(params), err_fn(params0)
    assert float(err) < 0.15 * float(err0), (float(err), float(err0))


def test_make_optimizer():
    opt = tr.make_optimizer(1e-2, 100, warmup_steps=10, clip_norm=None)
    state = opt.init({"w": jnp.zeros(2)})
    upd, _ = opt.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
    np.testing.assert_allclose(upd["w"], 0.0, atol=1e-9)  # warm-up starts at lr 0
    with pytest.raises(ValueError, match="learning_rate"):
        tr.make_optimizer(-1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        tr.make_optimizer(1e-3, 10, warmup_steps=10)
    # The default warm-up, min(100, num_steps // 10), works for short runs too.
    for n, warm in [(5, False), (50, True), (5000, True)]:
        opt = tr.make_optimizer(1e-2, n, clip_norm=None)
        upd, _ = opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.zeros(2)}), {"w": jnp.zeros(2)})
        assert (float(jnp.abs(upd["w"]).max()) == 0.0) == warm, n
    with pytest.raises(ValueError, match="num_steps: expected a positive int, got 0"):
        tr.make_optimizer(1e-3, 0)


def test_bad_arguments(tmp_path):
    x, y = tiny_data()
    with pytest.raises(ValueError, match="num_steps: expected a non-negative int"):
        run(None, -1)
    with pytest.raises(ValueError, match="batch_size"):
        run(None, 2, batch_size=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        run(None, 2, checkpoint_every=0)
    with pytest.raises(ValueError, match=r"labels: expected integer labels of shape \(256,\)"):
        run(None, 2, labels=y[:10])
    with pytest.raises(ValueError, match="data: expected an array"):
        run(None, 2, data=x[0])
    with pytest.raises(ValueError, match="labels: must be None when data is a sampler"):
        run(None, 2, data=data.moons)
    with pytest.raises(ValueError, match="null_label: required"):
        run(None, 2, null_label=None)
    with pytest.raises(ValueError, match="workdir"):
        tr.train_or_restore(jax.random.key(0), workdir=None, num_steps=1)
    params, losses = run(None, 0)
    assert losses.shape == (0,)
    assert_trees_equal(params, tiny_params())
    _ = optax  # the optimizer factory is exercised above


def _quadratic_fit(lr, num_steps=60, workdir=None, **kw):
    from inferax.models import lm_train

    return lm_train.fit(
        jax.random.key(0),
        loss_fn=lambda p, batch: jnp.sum(p["w"] ** 2) + 0.0 * jnp.sum(batch["x"]),
        params={"w": jnp.ones(3)},
        data={"x": np.zeros((8, 1), np.float32)},
        optimizer=optax.sgd(lr),
        num_steps=num_steps,
        batch_size=2,
        workdir=workdir,
        log_every=10,
        checkpoint_every=10,
        **kw,
    )


def test_gradient_ascent_stops_at_the_loss_ceiling(tmp_path):
    from inferax.models.checkpoint import DivergedError

    with pytest.raises(DivergedError, match=r"above the ceiling 3000 \(max_loss\)"):
        _quadratic_fit(-0.2, workdir=tmp_path)  # loss 3 * 1.4^step: 1000x after ~21 steps
    with pytest.raises(DivergedError, match="above the ceiling 10"):
        _quadratic_fit(-0.2, max_loss=10.0)


def test_a_run_that_does_not_improve_is_refused_and_a_good_one_passes():
    from inferax.models.checkpoint import DivergedError, NonFiniteError

    with pytest.raises(DivergedError, match="did not improve over 60 steps"):
        _quadratic_fit(0.0)
    assert issubclass(DivergedError, NonFiniteError)  # handlers of non-finite stops see it
    _, losses = _quadratic_fit(0.1)
    assert losses[-1] < 1e-3 * losses[0]
    _, short = _quadratic_fit(0.0, num_steps=10)  # too short to judge: no check
    assert len(short) == 10
