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
# # Reward-guided search of a flow model under an NFE budget
#
# Ma et al. (2025) search the initial noise (and paths) of a flow ODE for
# samples a verifier likes; Kim et al. (2025) turn the flow into an SDE (linear
# or variance-preserving interpolant, converted from the same model) so that
# particle methods can branch, and spend a fixed NFE budget with Rollover
# Budget Forcing (RBF). `inferax.search` has all of them behind one interface:
# `(key, model, reward, budget) -> (sample, SearchInfo)`.
#
# The model here is the exact flow of the 2-D eight-Gaussians mixture (no
# training); the reward prefers points near (2, 1), which sits between two
# modes.

# %% [markdown]
# **What it needs:** a CPU is enough (about 1 minute; the model is the exact eight-Gaussians
# flow, nothing is trained); a GPU or TPU is not needed. Nothing is downloaded besides the
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

from inferax.models import gmm
from inferax.search import flow as fsearch

QUICK = os.environ.get("INFERAX_QUICK", "0") == "1"
NUM_SEARCHES = 64 if QUICK else 512  # independent searches per setting
BUDGETS = [20, 60] if QUICK else [20, 50, 100, 200, 500]
STEPS = 10

mixture = gmm.eight_gaussians()
velocity_fn = mixture.velocity
reward_fn = fsearch.verifiers.quadratic(jnp.array([2.0, 1.0]))

# %% [markdown]
# Every method, at every budget, `NUM_SEARCHES` times (one `jit`-ed `vmap` per
# setting). `info.nfe` is what the search spent, never more than the budget.

# %%
dynamics = {k: fsearch.make_dynamics(velocity_fn, k, STEPS) for k in fsearch.DYNAMICS}
METHODS = {
    "random search (ODE)": lambda k, b: fsearch.random_search(
        k, velocity_fn, reward_fn, b, event_shape=(2,), num_steps=STEPS
    ),
    "SVDD (linear SDE)": lambda k, b: fsearch.svdd(k, dynamics["linear"], reward_fn, b,
                                                  event_shape=(2,)),
    "SMC (VP SDE)": lambda k, b: fsearch.smc(k, dynamics["vp"], reward_fn, b, event_shape=(2,)),
    "RBF (ODE)": lambda k, b: fsearch.rbf(k, dynamics["ode"], reward_fn, b, event_shape=(2,),
                                         num_chains=1, num_initial=2),
    "RBF (VP SDE)": lambda k, b: fsearch.rbf(k, dynamics["vp"], reward_fn, b, event_shape=(2,),
                                            num_chains=1, num_initial=2),
}  # fmt: skip

keys = jax.random.split(jax.random.key(0), NUM_SEARCHES)
results = {}
for name, fn in METHODS.items():
    for budget in BUDGETS:
        x, info = jax.jit(jax.vmap(lambda k, fn=fn, b=budget: fn(k, b)))(keys)
        assert int(info.nfe.max()) <= budget
        results[name, budget] = (np.asarray(x), np.asarray(info.reward))
    print(f"{name:22s}", "  ".join(f"{b} NFE: {results[name, b][1].mean():+.3f}"
                                    for b in BUDGETS))  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
for name in METHODS:
    ax.plot(BUDGETS, [results[name, b][1].mean() for b in BUDGETS], "o-", label=name)
ax.set_xscale("log")
ax.set_xlabel("NFE budget per sample")
ax.set_ylabel("mean reward of the returned sample")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Searching harder concentrates the samples where the reward is high: the
# returned samples lose the model's diversity (with a learned verifier this is
# where verifier hacking shows). The base sampler is one ODE solve per sample.

# %%
base, _ = jax.jit(jax.vmap(lambda k: fsearch.random_search(
    k, velocity_fn, reward_fn, STEPS, event_shape=(2,), num_steps=STEPS)))(keys)  # fmt: skip
top = max(BUDGETS)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), sharex=True, sharey=True)
for ax, (title, pts) in zip(
    axes, [("one ODE solve", np.asarray(base)), (f"RBF (VP SDE), {top} NFE",
                                                  results["RBF (VP SDE)", top][0])],
    strict=True,
):  # fmt: skip
    ax.scatter(pts[:, 0], pts[:, 1], s=4)
    ax.scatter([2.0], [1.0], marker="*", s=120, c="red")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
plt.show()
spread = {name: float(np.mean(np.std(results[name, top][0], axis=0))) for name in METHODS}
print("mean per-axis std of the returned samples:", {k: round(v, 3) for k, v in spread.items()},
      "base:", round(float(np.mean(np.std(np.asarray(base), axis=0))), 3))  # fmt: skip
