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
# # Feynman-Kac correctors: annealing, products and CFG
#
# Skreta et al. (2025) combine pretrained diffusion/flow models into new targets
# (a tempered model p^beta, a product of experts p1 p2, the CFG geometric
# mixture q_u^(1-w) q_c^w) and sample them by simulating an SDE with the combined
# drift **and** carrying importance weights, resampled as in SMC. Without the
# weights the same SDE samples something else.
#
# Here every model is an exact 1-D Gaussian mixture (its flow velocity is known
# in closed form), so no training is needed and each target density can be
# computed on a grid.

# %% [markdown]
# **What it needs:** a CPU is enough (about 1 minute; every model is an exact Gaussian mixture,
# nothing is trained); a GPU or TPU is not needed. Nothing is downloaded besides the package
# itself.

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
from inferax.sampling import feynman_kac as fk
from inferax.sampling import resampling

QUICK = os.environ.get("INFERAX_QUICK", "0") == "1"
NUM_PARTICLES = 2000 if QUICK else 20_000
TS = jnp.linspace(0.0, 1.0, (100 if QUICK else 400) + 1)
XS = np.linspace(-6.0, 6.0, 2001)


def density_on_grid(log_density):
    """exp(log_density) normalised on XS (the exact target, up to the grid)."""
    lp = np.asarray(log_density(jnp.asarray(XS[:, None], jnp.float32)), np.float64)
    p = np.exp(lp - lp.max())
    return p / (p.sum() * (XS[1] - XS[0]))


def run_both(key, transition):
    """FKC particles (resampled by their final weights) and the unweighted SDE's."""
    out = {}
    for name, weighted in [("FKC", True), ("unweighted SDE", False)]:
        x, log_w, info = fk.sample(
            key, transition, NUM_PARTICLES, TS, event_shape=(1,), weighted=weighted
        )
        if weighted:
            x = x[resampling.systematic(jax.random.fold_in(key, 1), log_w)]
        out[name] = np.asarray(x[:, 0])
    return out


def compare(ax, title, target_density, samples):
    ax.plot(XS, target_density, "k", lw=2, label="target")
    for name, x in samples.items():
        ax.hist(x, bins=80, range=(XS[0], XS[-1]), density=True, alpha=0.45, label=name)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


# %% [markdown]
# ## Annealing: p^beta
# p has two modes with weights 0.3 / 0.7; p^2 sharpens both and reweights them
# to about 0.16 / 0.84. Drift beta (u + (g^2/2) s), increment beta (beta - 1) <u, s> dt.

# %%
p = gmm.gaussian_mixture([0.3, 0.7], [[-2.0], [1.5]], scale=0.6)
beta = 2.0
anneal = run_both(jax.random.key(0), fk.anneal(p.velocity, beta, g=2.0))

# %% [markdown]
# ## Product of experts: p1 p2
# Each expert has a mode where the other has almost none; the product keeps
# what they agree on. Increment <u1, s2> + <u2, s1>.

# %%
p1 = gmm.gaussian_mixture([0.5, 0.5], [[-2.0], [1.0]], scale=0.8)
p2 = gmm.gaussian_mixture([0.5, 0.5], [[0.5], [3.0]], scale=0.8)
product = run_both(jax.random.key(1), fk.product(p1.velocity, p2.velocity, g=2.0))

# %% [markdown]
# ## Classifier-free guidance: q_u^(1 - w) q_c^w
# q_u is a two-class mixture, q_c its class-1 component. Plain CFG (the
# unweighted SDE) overshoots away from the other class; the weights
# (w (w - 1) / 2) g^2 |s_c - s_u|^2 dt in VE form pull it back to the geometric mixture.
# `fk.cfg` takes the guidance scale s of `guidance.cfg` (v_c + s (v_c - v_u)),
# which is s = w - 1 for the geometric weight w.

# %%
q_u = gmm.gaussian_mixture([0.5, 0.5], [[-1.0], [1.5]], scale=0.8)
q_c = gmm.gaussian_mixture([1.0], [[1.5]], scale=0.8)
w = 3.0


def cond_velocity(x, t, c):  # c = 1: class 1, c = 0: the null label (unconditional)
    return jnp.where(c[:, None] == 1, q_c.velocity(x, t), q_u.velocity(x, t))


guided = run_both(
    jax.random.key(2),
    fk.cfg(cond_velocity, jnp.int32(1), jnp.int32(0), guidance_scale=w - 1.0, g="linear"),
)

# %% [markdown]
# ## Target density vs FKC vs the unweighted SDE

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
compare(axes[0], f"anneal p^{beta:g}", density_on_grid(lambda x: beta * p.log_prob(x)), anneal)
compare(
    axes[1],
    "product p1 p2",
    density_on_grid(lambda x: p1.log_prob(x) + p2.log_prob(x)),
    product,
)
compare(
    axes[2],
    f"CFG geometric mixture, w = {w:g}",
    density_on_grid(lambda x: (1 - w) * q_u.log_prob(x) + w * q_c.log_prob(x)),
    guided,
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Means and variances against the exact target

# %%
for title, log_density, samples in [
    ("anneal", lambda x: beta * p.log_prob(x), anneal),
    ("product", lambda x: p1.log_prob(x) + p2.log_prob(x), product),
    ("cfg", lambda x: (1 - w) * q_u.log_prob(x) + w * q_c.log_prob(x), guided),
]:
    dens = density_on_grid(log_density) * (XS[1] - XS[0])
    mean = (dens * XS).sum()
    var = (dens * (XS - mean) ** 2).sum()
    row = [f"{title:8s} target mean {mean:+.3f} var {var:.3f}"]
    row += [f"{k}: {x.mean():+.3f} / {x.var():.3f}" for k, x in samples.items()]
    print(" | ".join(row))
