"""Step-level LM search speed: the cache gather, a particle-filter round, the whole filter.

Three ratios, each measured in one process with both sides timed in turns
(``common.time_interleaved``), on the project's transformer (random weights:
speed does not depend on them) with a learned-PRM-shaped reward transformer:

- **Resampling vs decoding**: gathering a population's rows (tokens, logits,
  the layer-major KV cache; one ``particles.take``) against one batched
  ``decode_step`` of the same population. Target <= 0.10.
- **A particle-filter round vs its bare evaluations**: one SMC step of
  ``lm_particle.filter_policy`` (one ``driver`` round: one reasoning step for every particle, PRM,
  reweighting, resampling with the cache gather) against a ``fori_loop`` of
  the same number of bare ``decode_step`` calls plus one PRM forward pass.
  Target <= 1.15.
- **The whole filter, compiled vs a Python loop**: ``particle_filter`` (one
  ``lax.while_loop`` over rounds) against a Python ``for`` over rounds that
  calls the jitted SMC step, as a user would write it; both give the same
  particles (checked before timing).

The random LM seldom emits the step delimiter, so a logits hook adds a fixed
bias to it (about 6 tokens per step), in every side alike. The SMC step is
compiled once and shared by the first two cases.

``--quick`` (the tests' smoke run) uses tiny sizes and compiles without LLVM
optimisation or the CPU loop fusion emitters (``QUICK_COMPILE``): its checks
hold, its times mean nothing.

    python -m benchmarks.lm_search [--quick]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from benchmarks import common
from inferax.models import arithmetic as ar
from inferax.models import prm
from inferax.models import transformer as tr
from inferax.sampling import particles
from inferax.search.lm import driver as lm_driver
from inferax.search.lm import particle as lm_particle
from inferax.search.lm import steps

TARGET_GATHER, TARGET_ROUND = 0.10, 1.15
STEP_BIAS = 2.5
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


class Config(NamedTuple):
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    prompt: int = 16
    new_tokens: int = 48
    n: int = 64
    max_steps: int = 6


QUICK = Config(layers=1, d_model=32, heads=2, prompt=8, new_tokens=16, n=8, max_steps=3)


def step_hook(logits, state):
    return logits.at[:, ar.STEP_ID].add(STEP_BIAS)


def setup(cfg: Config, jit: Callable = jax.jit):
    length = cfg.prompt + cfg.new_tokens
    model = tr.Transformer(ar.VOCAB_SIZE, num_layers=cfg.layers, d_model=cfg.d_model,
                           num_heads=cfg.heads, max_len=length)  # fmt: skip
    params = jit(lambda k: tr.init_params(model, k))(jax.random.key(0))
    rm = prm.reward_model(cfg.layers, cfg.d_model, cfg.heads, length)
    rparams = jit(lambda k: tr.init_params(rm, k))(jax.random.key(1))
    prompts = jax.random.randint(jax.random.key(2), (1, cfg.prompt), 3, ar.VOCAB_SIZE)
    prompts = prompts.astype(jnp.int32)
    lm = tr.lm_functions(model, params)
    prm_fn = prm.learned_prm_fn(rm, rparams, prompts)
    config = steps.StepConfig(eos_id=ar.EOS, step_id=ar.STEP_ID, max_new_tokens=cfg.new_tokens,
                              max_steps=cfg.max_steps, logits_hook=step_hook)  # fmt: skip
    return lm, prm_fn, prompts, config


def same_rows(gathered: Any, population: Any, indices, axes) -> bool:
    """Whether every leaf of ``gathered`` is ``population``'s leaf at ``indices`` along
    its particle axis (``axes``, as ``particles.leaf_axes``; None: shared), in NumPy."""
    idx = np.asarray(indices)
    leaves = zip(jax.tree.leaves(gathered), jax.tree.leaves(population), axes, strict=True)
    for got, leaf, ax in leaves:
        want = np.asarray(leaf) if ax is None else np.take(np.asarray(leaf), idx, axis=ax)
        got = np.asarray(got)
        if got.shape != want.shape or not np.array_equal(
            got, want, equal_nan=np.issubdtype(got.dtype, np.inexact)
        ):
            return False
    return True


class Shared(NamedTuple):
    """What the cases share: the LM side, the jit, and one compiled SMC step."""

    lm: Any
    prm_fn: Any
    prompts: jax.Array
    config: steps.StepConfig
    cfg: Config
    jit: Callable
    policy: Any
    state0: Any
    prompt_index: jax.Array
    step: Callable


def shared(cfg: Config, jit: Callable = jax.jit) -> Shared:
    """The LM side, the filter's SMC state after the prefill (compiled), its step."""
    lm, prm_fn, prompts, config = setup(cfg, jit)

    policy = lm_particle.filter_policy(lm, cfg.n, config)

    def start(p):
        s = lm_driver.start(lm, p, None, cfg.n, config)
        return policy.init(s), s.prompt_index

    st0, prompt_index = jit(start)(prompts)

    def step(key, st, i, last=False):
        """One driver round of the filter's policy (uncapped): ``(state, ledger)``."""
        rnd = lm_driver.Round(
            jnp.asarray(i), jnp.asarray(last), steps.Ledger.zeros(1), None, lm, prm_fn, config,
            prompt_index,
        )  # fmt: skip
        new, ledger, _ = policy.step(key, st, rnd)
        return new, ledger

    return Shared(lm, prm_fn, prompts, config, cfg, jit, policy, st0, prompt_index, jit(step))


def gather_case(sh: Shared, repeats, budget_s) -> dict:
    lm, cfg = sh.lm, sh.cfg
    # One round first, so the cache holds a prompt and a step (as when resampling).
    st, _ = sh.step(jax.random.key(3), sh.state0, 0)
    pop = st.particles
    axes = particles.leaf_axes(lm_particle.population_axes(lm), pop, "population")
    idx = jnp.asarray(np.random.default_rng(4).integers(0, cfg.n, cfg.n), jnp.int32)
    gather = sh.jit(lambda p, i: particles.take(p, i, axes))
    valid = jnp.ones((cfg.n,), bool)
    tok = jnp.full((cfg.n,), ar.STEP_ID, jnp.int32)
    decode = sh.jit(lambda c, t: lm.decode_step(c, t, valid))
    # every leaf (tokens, logits, scores, the layer-major KV cache) at the drawn rows
    same = same_rows(gather(pop, idx), pop, idx, axes)
    t = common.time_interleaved(
        {"gather": lambda: gather(pop, idx), "decode": lambda: decode(pop.state.cache, tok)},
        repeats=repeats, budget_s=budget_s,
    )  # fmt: skip
    return {"gather": t["gather"].median, "decode": t["decode"].median, "same": same}


def round_case(sh: Shared, repeats, budget_s) -> dict:
    lm, prm_fn, cfg, st = sh.lm, sh.prm_fn, sh.cfg, sh.state0
    key = jax.random.key(5)
    _, led = sh.step(key, st, 0)
    gen_tokens, decode_steps = int(led.tokens.sum()), int(led.decode_steps)
    prm_calls = int(led.prm_calls.sum())
    valid = jnp.ones((cfg.n,), bool)

    def bare(st):
        s = st.particles.state

        def body(_, carry):
            logits, cache = carry
            return lm.decode_step(cache, jnp.argmax(logits, -1).astype(jnp.int32), valid)

        _, cache = jax.lax.fori_loop(0, decode_steps, body, (s.logits, s.cache))
        return cache, prm_fn(s, sh.prompt_index)

    bare = sh.jit(bare)
    t = common.time_interleaved(
        {"round": lambda: sh.step(key, st, 0), "bare": lambda: bare(st)},
        repeats=repeats, budget_s=budget_s,
    )  # fmt: skip
    return {"round": t["round"].median, "bare": t["bare"].median,
            "decode_steps": decode_steps, "tokens": gen_tokens, "prm_calls": prm_calls}  # fmt: skip


def whole_case(sh: Shared, repeats, budget_s) -> dict:
    lm, prm_fn, prompts, config, cfg = sh.lm, sh.prm_fn, sh.prompts, sh.config, sh.cfg
    key = jax.random.key(6)
    ours = sh.jit(lambda k, p: lm_particle.particle_filter(
        k, lm, prm_fn, cfg.n, prompts=p, config=config))  # fmt: skip

    def step(k, st, i, last):  # `last` is traced: one program for every round
        return sh.step(k, st, i, last)[0]

    def python_loop():
        # particle_filter's rounds (key fold_in(key, i), no resampling in the last
        # round, stop when every particle is finished) as a user's Python loop.
        st = sh.state0
        for i in range(cfg.max_steps):
            st = step(jax.random.fold_in(key, i), st, i, jnp.bool_(i == cfg.max_steps - 1))
            if bool(jnp.all(st.particles.state.finished)):
                break
        return st

    res, _ = ours(key, prompts)
    st = python_loop()
    pop = st.particles
    same = bool(
        np.array_equal(np.asarray(res.tokens[0]), np.asarray(pop.state.tokens))
        and np.array_equal(np.asarray(res.num_tokens[0]), np.asarray(pop.state.num_tokens))
        and np.allclose(np.asarray(res.scores[0]), np.asarray(pop.score), atol=1e-6)
        and np.allclose(
            np.asarray(res.weights[0]),
            np.asarray(jax.nn.softmax(st.log_weights[0])),
            atol=1e-5,
        )
    )  # the same particles, scores and final weights
    t = common.time_interleaved(
        {"ours": lambda: ours(key, prompts), "loop": python_loop},
        repeats=repeats, budget_s=budget_s,
    )  # fmt: skip
    return {"ours": t["ours"].median, "loop": t["loop"].median, "same": same}


def run(quick: bool = False, repeats: int = 5, budget_s: float = 10.0, out=None) -> tuple:
    cfg = QUICK if quick else Config()
    jit = functools.partial(jax.jit, compiler_options=QUICK_COMPILE) if quick else jax.jit
    sh = shared(cfg, jit)
    g = gather_case(sh, repeats, budget_s)
    r = round_case(sh, repeats, budget_s)
    w = whole_case(sh, repeats, budget_s)
    gather_ratio = g["gather"] / g["decode"]
    round_ratio = r["round"] / r["bare"]
    loop_ratio = w["loop"] / w["ours"]
    rows = [
        ["resampling (cache gather) vs one decode step", f"{g['gather'] * 1e3:.3f}",
         f"{g['decode'] * 1e3:.3f}", common.verdict(gather_ratio, TARGET_GATHER) + " (<= 0.10)",
         "gathered rows" if g["same"] else "WRONG rows"],
        ["particle-filter round vs bare LM + PRM evaluations", f"{r['round'] * 1e3:.2f}",
         f"{r['bare'] * 1e3:.2f}", common.verdict(round_ratio, TARGET_ROUND) + " (<= 1.15)",
         f"{r['decode_steps']} decode steps, {r['prm_calls']} PRM rows"],
        ["whole particle filter: compiled vs Python loop over jitted steps",
         f"{w['ours'] * 1e3:.2f}", f"{w['loop'] * 1e3:.2f}", f"loop/ours = {loop_ratio:.2f}",
         "same particles" if w["same"] else "DIFFERENT particles"],
    ]  # fmt: skip
    report = "\n\n".join(
        [
            "## Language-model step search",
            common.machine_lines(common.machine_info(peers=("flax",))),
            f"Transformer LM and reward model: {cfg.layers} layers, d = {cfg.d_model}, "
            f"{cfg.heads} heads; prompt of {cfg.prompt} tokens, room for {cfg.new_tokens} new "
            f"tokens, N = {cfg.n} particles, up to {cfg.max_steps} steps. Milliseconds per call "
            "(median of repeats timed in turns).",
            common.markdown_table(
                ("comparison", "ours (ms)", "other (ms)", "ratio", "check"), rows
            ),  # fmt: skip
        ]
    )
    common.emit(report, out)
    numbers = {"gather_ratio": gather_ratio, "round_ratio": round_ratio,
               "loop_ratio": loop_ratio, "same_particles": w["same"],
               "gathered_rows": g["same"], "decode_steps": r["decode_steps"]}  # fmt: skip
    return report, numbers


def main(argv):
    del argv
    run(
        quick=common.QUICK.value,
        repeats=common.flag_or(common.REPEATS, 5),
        budget_s=common.flag_or(common.BUDGET, 10.0),
        out=common.OUT.value,
    )


if __name__ == "__main__":
    app.run(main)
