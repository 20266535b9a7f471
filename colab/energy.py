# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Prediction as energy minimisation (Energy-Based Transformers)
#
# Gladstone et al. (2025) predict by descending a learned energy `E(x, y)` over the
# candidate `y`: more steps is "thinking longer", and keeping the lowest-energy of
# several candidates is "self-verification". `inferax.sampling.energy` runs this for
# any `energy_fn(context, y) -> scalar`. First on energies we know exactly, then on a
# tiny Energy-Based Transformer that completes the bottom half of 8x8 digits.
#

# %% [markdown]
# **What it needs:** a CPU is enough (about 3 minutes: it trains a tiny Energy-Based Transformer
# on 8x8 digits); a GPU runtime speeds up the training. Nothing is downloaded besides the
# package itself.

# %%
# Colab: install inferax from its repository (skipped where inferax is already importable).
import importlib.util
import subprocess
import sys

INFERAX_REPO = "https://github.com/inferax/inferax"  # the repository to install from
if importlib.util.find_spec("inferax") is None:
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "-q", f"inferax @ git+{INFERAX_REPO}"]
    )

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from inferax.models import data, ebt, ebt_train
from inferax.sampling import energy

QUICK = os.environ.get("INFERAX_QUICK", "0") == "1"
TRAIN_STEPS = 40 if QUICK else 600

# %% [markdown]
# **Gradient descent on a quadratic.** For `E = sum lam (y - m)^2 / 2` each coordinate's
# error shrinks by exactly `|1 - alpha lam|` per step.

# %%
lam = jnp.array([0.5, 2.0, 4.0])


def quadratic(m, y):
    return 0.5 * jnp.sum(lam * (y - m) ** 2)


m = jnp.ones((1, 3))
alpha = 0.2
_, info = energy.minimize(None, quadratic, m, jnp.zeros((1, 3)), num_steps=15,
                          step_size=alpha, trajectory=True)  # fmt: skip
err = np.abs(np.asarray(info.trajectory[:, 0]) - 1.0)
fig, ax = plt.subplots(figsize=(5, 3))
for i in range(3):
    ax.semilogy(err[:, i], "o", ms=3, label=f"lam = {float(lam[i])}")
    ax.semilogy(np.abs(1 - alpha * float(lam[i])) ** np.arange(16), "k-", lw=0.6)
ax.set_xlabel("step")
ax.set_ylabel("|y - m|")
ax.legend()
plt.show()
print("evaluations per candidate:", int(info.evaluations[0]))

# %% [markdown]
# **Langevin noise.** With `noise="langevin"` (noise `sqrt(2 alpha)`) the iterates sample
# `exp(-E)`: variance `1 / lam`. The reference code's unscaled noise does not.

# %%
n = 2000
m1 = jnp.zeros((n, 1))
samples = {}
for kind, scale in (("langevin", 1.0), ("unscaled", 0.1)):
    y, _ = energy.minimize(jax.random.key(0), lambda c, y: 0.5 * 2.0 * jnp.sum((y - c) ** 2),
                           m1, jnp.zeros((n, 1)), num_steps=150, step_size=0.025,
                           noise=kind, noise_scale=scale)  # fmt: skip
    samples[kind] = np.asarray(y[:, 0])
    print(f"{kind}: variance {samples[kind].var():.3f} (exp(-E): {1 / 2.0:.3f})")
fig, ax = plt.subplots(figsize=(5, 3))
for kind, s in samples.items():
    ax.hist(s, bins=40, density=True, alpha=0.5, label=kind)
grid = np.linspace(-2.5, 2.5, 200)
ax.plot(grid, np.exp(-(grid**2)) / np.sqrt(np.pi), "k", lw=1, label="exp(-E)")
ax.legend()
plt.show()

# %% [markdown]
# **Self-verification.** On a tilted double well, candidates that start on the wrong side
# end in the shallower well; the lowest final energy picks the deeper one.


# %%
def double_well(c, y):
    return jnp.sum((y**2 - 1.0) ** 2 + c * y)


y0 = jnp.linspace(-1.5, 1.5, 8)[None, :, None]
chosen, ys, vinfo = energy.self_verify(None, double_well, jnp.array([0.3]), y0,
                                       num_candidates=8, num_steps=100, step_size=0.05)  # fmt: skip
print("final candidates:", np.round(np.asarray(ys[0, :, 0]), 2))
print("chosen:", float(chosen[0, 0]), "energy", float(vinfo.final_energies[0].min()))

# %% [markdown]
# **A tiny Energy-Based Transformer on digits.** Trained as in the paper: the loss on every
# step's prediction, second-order gradients, a learnable step size (quick settings: a few
# dozen updates, so the completions are rough).

# %%
top, bottom = ebt.digits_halves(data.load_digits("train")[0])
te_top, te_bottom = ebt.digits_halves(data.load_digits("test")[0][:64])
model = ebt.DigitsEBT(d_model=16 if QUICK else 32, num_layers=1)
cfg = ebt_train.EBTTraining(lr=3e-3, alpha_init=0.3, init_scale=0.5, warmup_steps=5)
params = ebt_train.ebt_params(model.init(jax.random.key(0), jnp.zeros(32), jnp.zeros(32)), cfg)
params, losses = ebt_train.fit(
    jax.random.key(1), loss_fn=ebt_train.ebt_loss(model.apply, ebt.smooth_l1, cfg),
    params=params, data={"context": top, "target": bottom},
    opt=ebt_train.optimizer(cfg, TRAIN_STEPS), event_shape=(32,), num_steps=TRAIN_STEPS,
    batch_size=16, cfg=cfg,
)  # fmt: skip
_, _, pinfo = ebt_train.predict(jax.random.key(2), model.apply, params, jnp.asarray(te_top),
                                (32,), num_steps=8, init_scale=cfg.init_scale,
                                trajectory=True)  # fmt: skip
traj = np.asarray(pinfo.minimize.trajectory[:, :, 0])
mse = [float(np.mean((traj[k] - te_bottom) ** 2)) for k in range(9)]
print("held-out MSE by step:", np.round(mse, 3), "alpha", round(float(ebt.alpha_of(params)), 3))
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(range(9), mse, "o-")
axes[0].set_xlabel("inference steps")
axes[0].set_ylabel("held-out MSE")
rows = [te_bottom[:6]] + [traj[k][:6] for k in (1, 2, 4, 8)]
img = np.concatenate([np.concatenate([np.concatenate([te_top[i], r[i]]).reshape(8, 8)
                                      for i in range(6)], 1) for r in rows], 0)  # fmt: skip
axes[1].imshow(data.digits_to_unit(img), cmap="gray_r")
axes[1].set_title("rows: truth, 1, 2, 4, 8 steps", fontsize=8)
axes[1].axis("off")
plt.show()
