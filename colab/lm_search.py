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
# # Language-model search on multi-step arithmetic
#
# Train a tiny character-level transformer on chains of single-digit
# operations modulo 10 (with some corrupted steps in its training traces),
# sample many solutions per problem with the compiled, KV-cached sampler, and
# compare majority voting with coverage (pass@k). On Colab, first run
# `!pip install "inferax @ git+<this repository>"`.
#
# Set `QUICK = False` for a longer training run and more problems.

# %% [markdown]
# **What it needs:** a CPU is enough (about 3 minutes with `QUICK = True`: it trains a tiny
# transformer); a GPU runtime speeds up `QUICK = False`. Nothing is downloaded besides the
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

from inferax.models import arithmetic as ar
from inferax.models import lm_train
from inferax.models import transformer as tr
from inferax.models.train import make_optimizer
from inferax.search.lm import decoding as dec
from inferax.search.lm import voting as ls

QUICK = os.environ.get("INFERAX_QUICK", "0") == "1"
TRAIN_STEPS = 150 if QUICK else 1500
NUM_OPS = 2 if QUICK else 4
NUM_PROBLEMS, NUM_SAMPLES = (8, 16) if QUICK else (64, 64)

# %% [markdown]
# ## The task
# A prompt is a start digit and operations; the solution writes one step per
# line (`a op b = c;`) and ends with `#answer`. The checker is exact.

# %%
problem = ar.split("test", NUM_OPS, 1)[0]
print(problem.prompt_text(), "->", problem.solution_text())
print(ar.check(problem, ar.encode(problem.solution_text(), eos=True)))

# %% [markdown]
# ## Train the LM (10 % of training steps corrupted)

# %%
model = tr.Transformer(
    ar.VOCAB_SIZE,
    num_layers=1 if QUICK else 2,
    d_model=32 if QUICK else 64,
    num_heads=4,
    max_len=ar.prompt_length(NUM_OPS) + ar.solution_length(NUM_OPS) + 2,
)
train = ar.split("train", NUM_OPS, 2000)
tokens, mask = ar.training_sequences(train, np.random.default_rng(0), 0.1, model.max_len)
params, losses = lm_train.fit(
    jax.random.key(0),
    loss_fn=lm_train.lm_loss(model.apply),
    params=tr.init_params(model, jax.random.key(1)),
    data={"tokens": tokens, "loss_mask": mask},
    optimizer=make_optimizer(3e-3, TRAIN_STEPS),
    num_steps=TRAIN_STEPS,
    batch_size=64,
)
plt.figure(figsize=(4, 2.5))
plt.plot(losses)
plt.xlabel("step")
plt.ylabel("next-token loss")
plt.show()

# %% [markdown]
# ## Sample N solutions per held-out problem
# One `lax.while_loop` over all rows, stopping each at EOS; the prompt is
# prefilled once and its KV cache copied to the N rows.

# %%
problems = ar.split("test", NUM_OPS, NUM_PROBLEMS)
prompts = jnp.asarray(ar.prompts(problems))
lm = tr.lm_functions(model, params)
sample = jax.jit(
    lambda k: dec.sample(
        k, lm, prompts, prompts != ar.PAD, num_samples=NUM_SAMPLES,
        max_new_tokens=ar.solution_length(NUM_OPS) + 2, eos_id=ar.EOS, step_id=ar.STEP_ID,
    )
)  # fmt: skip
state, info = sample(jax.random.key(2))
print("generated tokens:", int(info.generated_tokens), "decode steps:", int(info.decode_steps))
for row in np.asarray(state.tokens[:3]):
    print(ar.decode(row))

# %% [markdown]
# ## Majority vote against coverage (pass@k)

# %%
answers = ar.extract_answer(state.tokens).reshape(NUM_PROBLEMS, NUM_SAMPLES)
truth = np.array([p.answer for p in problems])
correct = answers == truth[:, None]
ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= NUM_SAMPLES]
cov = ls.coverage(correct.sum(1), NUM_SAMPLES, ks)
vote = [float(np.mean(np.asarray(ls.majority_vote(answers[:, :k], 10)) == truth)) for k in ks]
print("single-sample accuracy:", round(float(correct.mean()), 3))
plt.figure(figsize=(4, 3))
plt.plot(ks, cov, marker="o", label="coverage (pass@k)")
plt.plot(ks, vote, marker="o", label="majority vote")
plt.xscale("log", base=2)
plt.xlabel("samples k")
plt.ylabel("accuracy")
plt.legend()
plt.show()
if np.sum((cov > 0) & (cov < 1)) >= 3:
    fit = ls.fit_coverage(ks, cov)
    print(f"coverage ~ exp({fit['a']:.2f} k^{fit['b']:.2f})")

# %% [markdown]
# ## Particle filtering over reasoning steps
# Search step by step instead of sampling whole solutions: every particle
# writes one step (up to its `;`), a process reward model scores the prefix,
# and the population is resampled with probabilities `softmax(logit(r) / tau)`
# (Puri et al. 2025). Resampling gathers the particles' KV-cache rows; no
# prefix is recomputed. Here the PRM is the exact checker (the oracle PRM:
# 1 while the prefix is right, 0 after the first wrong token), so the filter
# can only be as good as its proposals; `lm_scaling` compares it with a learned
# PRM. Beam search (width 4) runs on the same budget for comparison.

# %%
from inferax.models import prm  # noqa: E402
from inferax.search.lm import beam as lm_beam  # noqa: E402
from inferax.search.lm import particle as lm_particle  # noqa: E402
from inferax.search.lm import steps  # noqa: E402

config = steps.StepConfig(
    eos_id=ar.EOS, step_id=ar.STEP_ID, max_new_tokens=ar.solution_length(NUM_OPS) + 2,
    max_steps=NUM_OPS + 2,
)  # fmt: skip
solutions = jnp.asarray(ar.solutions(problems, config.max_new_tokens))
oracle = prm.oracle_prm_fn(solutions)
BUDGETS = [4, 16] if QUICK else [4, 16, 64]
pf_acc, beam_acc = [], []
for n in BUDGETS:
    res, pinfo = jax.jit(lambda k, n=n: lm_particle.particle_filter(
        k, lm, oracle, n, prompts=prompts, prompt_mask=prompts != ar.PAD, config=config))(
        jax.random.key(3))  # fmt: skip
    pf_acc.append(float(np.mean(ar.extract_answer(res.chosen_tokens()) == truth)))
    bres, binfo = jax.jit(lambda k, n=n: lm_beam.beam_search(
        k, lm, oracle, n, prompts=prompts, prompt_mask=prompts != ar.PAD, beam_width=4,
        config=config))(
        jax.random.key(3))  # fmt: skip
    beam_acc.append(float(np.mean(ar.extract_answer(bres.chosen_tokens()) == truth)))
    print(f"N = {n}: particle filter {pf_acc[-1]:.2f} ({int(pinfo.generated_tokens)} tokens, "
          f"{int(pinfo.prm_calls)} PRM calls), beam search {beam_acc[-1]:.2f} "
          f"({int(binfo.generated_tokens)} tokens)")  # fmt: skip
print("ESS before each resampling (first problem):",
      np.round(np.asarray(pinfo.trace["ess"])[:, 0], 1).tolist())  # fmt: skip
plt.figure(figsize=(4, 3))
plt.plot(ks, vote, marker="o", label="majority vote")
plt.plot(BUDGETS, pf_acc, marker="o", label="particle filter (oracle PRM)")
plt.plot(BUDGETS, beam_acc, marker="o", label="beam search (oracle PRM)")
plt.xscale("log", base=2)
plt.xlabel("budget N (sequences)")
plt.ylabel("accuracy")
plt.legend()
plt.show()
