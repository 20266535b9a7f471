"""Energy-Based Transformers: modules, the paper-style training gradient, resuming, and a
tiny trained digits EBT whose held-out error falls from 1 to several inference steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic, data, ebt, ebt_train


def test_token_ebt_is_per_example_and_causal():
    t = ebt.TokenEBT(arithmetic.VOCAB_SIZE, 12, d_model=16, num_layers=1)
    toks = jax.random.randint(jax.random.key(2), (3, 12), 0, arithmetic.VOCAB_SIZE)
    pos, logits = jnp.array([2, 5, 9]), jax.random.normal(jax.random.key(3), (3, 20))
    tp = t.init(jax.random.key(0), toks[0], 2, logits[0])
    apply = jax.jit(t.apply)
    e = apply(tp, toks, pos, logits)
    np.testing.assert_allclose(e[1], apply(tp, toks[1], 5, logits[1]), rtol=1e-5, atol=1e-6)
    # Causal: tokens after position t do not change the energy; tokens before do.
    later = toks.at[1, 7].set((toks[1, 7] + 1) % 20)
    np.testing.assert_allclose(apply(tp, later, pos, logits)[1], e[1], rtol=1e-6)
    earlier = toks.at[1, 3].set((toks[1, 3] + 1) % 20)
    assert abs(float(apply(tp, earlier, pos, logits)[1] - e[1])) > 1e-6


def test_token_examples_pair_each_position_with_its_next_token():
    probs = arithmetic.split("train", 2, 3)
    toks, mask = arithmetic.training_sequences(probs, np.random.default_rng(0), 0.0, 24)
    ex = ebt.token_examples(toks, mask)
    assert len(ex["target"]) == int(mask[:, :-1].sum())
    row = np.nonzero(mask[0, :-1])[0][0]
    assert ex["context"]["t"][0] == row and ex["target"][0] == toks[0, row + 1]


def _fd_direction(truncate: bool, num_steps: int):
    """Directional derivative of the EBT loss: autodiff vs central differences, float64."""
    with jax.enable_x64(True):
        m = ebt.DigitsEBT(d_model=8, num_layers=1, num_heads=2)
        net = m.init(jax.random.key(0), jnp.zeros(32), jnp.zeros(32))
        cfg = ebt_train.EBTTraining(steps_min=num_steps, steps_max=num_steps, truncate=truncate,
                                    alpha_init=0.3)  # fmt: skip
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        ebt_train.ebt_params(net, cfg))  # fmt: skip
        k = jax.random.split(jax.random.key(1), 4)
        batch = {"context": jax.random.normal(k[0], (3, 32), jnp.float64),
                 "target": 0.3 * jax.random.normal(k[1], (3, 32), jnp.float64)}  # fmt: skip
        start = jax.random.normal(k[2], (3, 32), jnp.float64)
        loss = ebt_train.ebt_loss(m.apply, ebt.smooth_l1, cfg)

        def f(p):
            return loss(p, batch, k[3], start)[0]

        g = jax.jit(jax.grad(f))(params)
        f = jax.jit(f)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        gf = jax.flatten_util.ravel_pytree(g)[0]
        errs = []
        for i in range(2):
            v = jax.random.normal(jax.random.fold_in(k[3], i), flat.shape, jnp.float64)
            eps = 1e-5
            fd = (f(unravel(flat + eps * v)) - f(unravel(flat - eps * v))) / (2 * eps)
            errs.append(abs(float(gf @ v) - float(fd)) / abs(float(fd)))
        return max(errs)


def test_ebt_training_gradient_matches_finite_differences():
    """Full unroll through 2 steps: the second-order terms through grad_y E included (float64).
    One-step truncation detaches y between steps, so it is not the gradient of the loss."""
    assert _fd_direction(truncate=False, num_steps=2) < 1e-6
    assert _fd_direction(truncate=True, num_steps=2) > 1e-4


@pytest.fixture(scope="module")
def tiny_digits():
    top, bottom = ebt.digits_halves(data.load_digits("train")[0])
    m = ebt.DigitsEBT(d_model=16, num_layers=1)
    cfg = ebt_train.EBTTraining(lr=3e-3, alpha_init=0.3, steps_min=2, steps_max=3,
                                random_alpha=True, init_scale=0.5, warmup_steps=10,
                                replay_fraction=0.25, replay_size=256, noise=0.01)  # fmt: skip
    params = ebt_train.ebt_params(m.init(jax.random.key(0), jnp.zeros(32), jnp.zeros(32)), cfg)
    out, losses = ebt_train.fit(
        jax.random.key(1), loss_fn=ebt_train.ebt_loss(m.apply, ebt.smooth_l1, cfg),
        params=params, data={"context": top, "target": bottom},
        opt=ebt_train.optimizer(cfg, 120), event_shape=(32,), num_steps=120, batch_size=32,
        cfg=cfg,
    )  # fmt: skip
    return m, cfg, out, losses


def test_tiny_digits_ebt_improves_with_inference_steps(tiny_digits):
    m, cfg, params, losses = tiny_digits
    assert np.all(np.isfinite(losses)) and losses[-20:].mean() < losses[:20].mean()
    assert float(params["alpha"]) >= ebt.ALPHA_MIN
    te_top, te_bottom = ebt.digits_halves(data.load_digits("test")[0][:200])
    _, _, info = ebt_train.predict(jax.random.key(2), m.apply, params, jnp.asarray(te_top),
                                   (32,), num_steps=4, init_scale=cfg.init_scale,
                                   trajectory=True)  # fmt: skip
    traj = info.minimize.trajectory[:, :, 0]
    mse = [float(jnp.mean((traj[k] - te_bottom) ** 2)) for k in range(5)]
    assert mse[4] < 0.8 * mse[1], mse  # held-out error falls from 1 to 4 steps
    e = info.minimize.energies[:, :, 0].mean(1)
    assert float(e[4]) < float(e[1])  # and the energy is descended


def test_fit_resumes_to_the_uninterrupted_parameters(tmp_path):
    """Parameters, optimizer and replay buffer are checkpointed: stop at 3, resume to 6."""
    m = ebt.DigitsEBT(d_model=8, num_layers=1, num_heads=2)
    cfg = ebt_train.EBTTraining(replay_fraction=0.5, replay_size=16, steps_max=2, warmup_steps=1)
    top, bottom = ebt.digits_halves(data.load_digits("train")[0][:64])
    kw = {"loss_fn": ebt_train.ebt_loss(m.apply, ebt.smooth_l1, cfg),
          "params": ebt_train.ebt_params(m.init(jax.random.key(0), jnp.zeros(32),
                                                jnp.zeros(32)), cfg),
          "data": {"context": top, "target": bottom}, "opt": ebt_train.optimizer(cfg, 6),
          "event_shape": (32,), "batch_size": 8, "cfg": cfg, "checkpoint_every": 3}  # fmt: skip
    ref, ref_losses = ebt_train.fit(jax.random.key(1), num_steps=6, **kw)
    ebt_train.fit(jax.random.key(1), num_steps=3, workdir=tmp_path, **kw)
    out, losses = ebt_train.fit(jax.random.key(1), num_steps=6, workdir=tmp_path, **kw)
    np.testing.assert_array_equal(losses, ref_losses)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_training_options_name_the_field():
    for kw, match in [({"steps_min": 3, "steps_max": 2}, "steps_max"),
                      ({"alpha_init": 0.0}, "alpha_init"),
                      ({"replay_fraction": 1.0}, "replay_fraction"),
                      ({"noise": -1.0}, "noise")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            ebt_train.EBTTraining(**kw).validate()
