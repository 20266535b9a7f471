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
# # Flow-matching sampling with time schedules
#
# Train a tiny flow model on a 2-D toy distribution, then sample it with the
# uniform grid, F5-TTS sway grids and an EPSS grid, and compare sample quality
# at equal NFE.
#
# Set `QUICK = False` for a longer training run and larger samples.

# %% [markdown]
# **What it needs:** a CPU is enough (about 2 minutes with `QUICK = True`: it trains a tiny flow
# model); a GPU or TPU runtime only speeds up `QUICK = False`. Nothing is downloaded besides the
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

from inferax.experiments import metrics
from inferax.models import data, gmm, mlp, train
from inferax.sampling import flow, schedules

QUICK = os.environ.get("INFERAX_QUICK", "0") == "1"
TRAIN_STEPS = 600 if QUICK else 6000
NUM_SAMPLES = 1000 if QUICK else 5000

# %% [markdown]
# ## Train a velocity MLP by flow matching
# x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I), target velocity x1 - x0.

# %%
key = jax.random.key(0)
k_data, k_train, k_eval, k_noise = jax.random.split(key, 4)
x_train = data.toy_samples("eight_gaussians", k_data, 20_000)
model = mlp.VelocityMLP(features=2, hidden=128, depth=3)
params0 = model.init(jax.random.key(1), x_train[:2], jnp.zeros(2))
params, losses = train.train(
    k_train,
    apply_fn=model.apply,
    params_init=params0,
    data=x_train,
    optimizer=train.make_optimizer(2e-3, TRAIN_STEPS, warmup_steps=50),
    num_steps=TRAIN_STEPS,
    batch_size=256,
    workdir=None,
)
plt.figure(figsize=(4, 2.5))
plt.plot(losses)
plt.xlabel("step")
plt.ylabel("flow-matching loss")
plt.show()

# %% [markdown]
# ## Schedules
# Sway: t = u + s (cos(pi u / 2) - 1 + u); s < 0 puts more steps near the noise.

# %%
for name, ts in {
    "uniform": schedules.uniform(8),
    "sway s=-1": schedules.sway(8, -1.0),
    "sway s=+0.5": schedules.sway(8, 0.5),
    "epss 7": schedules.epss(7),
}.items():
    plt.plot(ts, marker="o", label=name)
plt.xlabel("step i")
plt.ylabel("t_i")
plt.legend()
plt.show()

# %% [markdown]
# ## Quality against NFE
# Same noise for every grid; energy distance to held-out data, and the exact NLL
# of the samples under the true mixture (the oracle).

# %%
oracle = gmm.eight_gaussians()
held_out = data.toy_samples("eight_gaussians", k_eval, NUM_SAMPLES)
x0 = flow.noise(k_noise, NUM_SAMPLES, (2,))


@jax.jit
def sample(params, x0, ts):
    return flow.sample(lambda x, t: model.apply(params, x, t), x0, ts)[0]


table = {}
for coef in [0.0, -1.0, 0.5]:
    name = "uniform" if coef == 0 else f"sway {coef:+g}"
    table[name] = {}
    for nfe in [4, 8, 16, 32]:
        x1 = sample(params, x0, schedules.sway(nfe, coef))
        table[name][nfe] = (
            metrics.energy_distance(x1, held_out),
            float(-oracle.log_prob(x1).mean()),
        )
print(f"{'grid':<12}" + "".join(f"{n:>16}" for n in [4, 8, 16, 32]))
for name, row in table.items():
    print(f"{name:<12}" + "".join(f"{ed:>9.4f}/{nll:5.2f}" for ed, nll in row.values()))

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, coef in zip(axes, [0.0, -1.0, 0.5], strict=True):
    x1 = sample(params, x0, schedules.sway(8, coef))
    ax.scatter(x1[:, 0], x1[:, 1], s=1, alpha=0.5)
    ax.set_title(f"8 Euler steps, s = {coef:+g}")
    ax.set_aspect("equal")
plt.show()
