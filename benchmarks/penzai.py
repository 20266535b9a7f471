"""Decoding a penzai transformer: inferax's sampler against penzai's own, and the bare steps.

On tiny random-weight penzai models (a Gemma-2-style and a Llama-style
``inferax.models.penzai_lm.tiny_config``), the same prompts are decoded greedily,
in one process, by four sides timed in turns (``common.time_interleaved``; the
three compiled sides in one round, penzai's Python-loop sampler in a second
round against inferax):

- **inferax**: ``search.lm.decoding.sample`` (temperature 0) on
  ``models.penzai_lm.lm_functions(model)``, one ``jax.jit`` around the whole
  call (prefill, then a ``lax.while_loop`` of decode steps with its bookkeeping).
- **penzai sampler**: penzai's own sampler as its documentation uses it:
  ``sampling_mode.KVCachingTransformerLM.from_uncached`` with its body wrapped in
  ``toolshed.jit_wrapper.Jitted`` (every model call compiled), driven by
  ``simple_decoding_loop.temperature_sample_pyloop`` (a Python loop, one
  dispatch per token). That loop cannot be traced whole (it branches on the
  cache index in Python), and it has no greedy mode: it runs at temperature
  ``1e-9``, where its categorical draw is the argmax (the Gumbel noise is below
  the float32 spacing of logits / 1e-9).
- **penzai, one jit**: the same penzai sampling-mode model and the same steps
  as ``temperature_sample_pyloop`` (split the key, draw at temperature 1e-9,
  feed the token) written as one ``lax.fori_loop`` under one ``jax.jit``: the
  fastest a user can make penzai's own cache go, written here because penzai
  ships no compiled loop.
- **bare**: the network evaluations the tokens need and nothing else: the
  adapter's prefill, then ``new_tokens - 1`` decode steps with an argmax, in
  one jitted ``fori_loop`` (inferax's ``generate`` makes ``new_tokens`` decode
  steps: it feeds every drawn token, the last one included).

Reported: steady-state milliseconds per whole decode (median and fastest of
the repeats), compile seconds (trace + lower + XLA compile of a fresh jit;
for penzai's sampler, whose programs compile on its first call, the first call
minus a steady one), and the ratios inferax / side. Agreement: every side must
emit the same tokens (greedy). Padding: penzai's sampling mode treats every
token equal to its ``pad_id`` as padding, in the prompt *and* among the tokens
it generates (they get no position and are never attended to), while inferax
takes padding from the prompt mask only. With penzai's default ``pad_id=0`` a
random-weight model that emits token 0 therefore continues differently after
it (seen here: the Llama-style model emits a 0 at step 17 of one row, and the
rows part from the next token on). The prompts here carry no padding and no
token 0, and penzai's sampling mode is built with ``pad_id=-1`` (no token is
padding), so both libraries run the same model on the same tokens.

    python -m benchmarks.penzai [--quick] [--repeats=11] [--budget_s=40]
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from penzai import pz
from penzai.models.transformer import sampling_mode, simple_decoding_loop
from penzai.toolshed import jit_wrapper

from benchmarks import common
from inferax.models import penzai_lm
from inferax.search.lm import decoding as dec

PENZAI_TEMPERATURE = 1e-9
"""penzai's sampler has no greedy mode; at this temperature its draw is the argmax."""
PENZAI_PAD_ID = -1
"""No token is padding for penzai (its default, 0, would drop a generated token 0)."""


class Config(NamedTuple):
    families: tuple = ("gemma2", "llama")
    vocab: int = 256
    layers: int = 2
    d_model: int = 64
    prompt: int = 16
    new_tokens: int = 32
    n: int = 8


QUICK = Config(vocab=32, layers=2, d_model=16, prompt=4, new_tokens=5, n=2)
SIDES = ("inferax", "penzai sampler", "penzai, one jit", "bare")
FAST_REPEATS = 5
"""The compiled sides are timed with this many times the sampler's repeats."""
HEADERS = ("model", "side", "median (ms)", "best (ms)", "repeats", "compile (s)",
           "inferax / side", "check")  # fmt: skip


def setup(cfg: Config, family: str):
    """A tiny random-weight penzai model and ``[n, prompt]`` prompts without token 0."""
    model = penzai_lm.tiny_model(
        jax.random.key(0), family, vocab_size=cfg.vocab, num_layers=cfg.layers,
        embedding_dim=cfg.d_model,
    )  # fmt: skip
    prompts = jax.random.randint(jax.random.key(1), (cfg.n, cfg.prompt), 1, cfg.vocab)
    return model, prompts.astype(jnp.int32)


def make_inferax(model, cfg: Config):
    """``(key, prompts) -> tokens [n, new]``: ``decoding.sample``, greedy."""
    lm = penzai_lm.lm_functions(model)

    def fn(key, prompts):
        s, _ = dec.sample(key, lm, prompts, max_new_tokens=cfg.new_tokens, eos_id=None,
                          temperature=0.0)  # fmt: skip
        return s.tokens

    return fn


def make_bare(model, cfg: Config):
    """``prompts -> tokens``: prefill + ``new - 1`` decode steps of the adapter, argmax."""
    lm = penzai_lm.lm_functions(model)

    def fn(prompts):
        n = prompts.shape[0]
        cache = lm.init_cache(n, cfg.prompt + cfg.new_tokens)
        logits, cache = lm.prefill(cache, prompts, jnp.ones(prompts.shape, bool))
        valid = jnp.ones((n,), bool)
        out = jnp.zeros((n, cfg.new_tokens), jnp.int32)

        def body(i, carry):
            logits, cache, out = carry
            tok = jnp.argmax(logits, -1).astype(jnp.int32)
            logits, cache = lm.decode_step(cache, tok, valid)
            return logits, cache, out.at[:, i].set(tok)

        logits, _, out = jax.lax.fori_loop(0, cfg.new_tokens - 1, body, (logits, cache, out))
        return out.at[:, -1].set(jnp.argmax(logits, -1).astype(jnp.int32))

    return fn


def _sampler(model, cfg: Config):
    """penzai's sampling mode with no pad token (``pad_id=-1``, see the module docstring)."""
    return sampling_mode.KVCachingTransformerLM.from_uncached(
        model, cache_len=cfg.prompt + cfg.new_tokens, batch_axes={"batch": cfg.n},
        pad_id=PENZAI_PAD_ID,
    )  # fmt: skip


def make_penzai_pyloop(model, cfg: Config):
    """``(key, prompts) -> tokens``: penzai's ``temperature_sample_pyloop``, jitted body.

    A fresh sampling-mode model per call (its caches are state that a decode
    fills); its compiled programs are reused across calls (same structure).
    """
    frozen = pz.freeze_params(model)

    def fn(key, prompts):
        sampler = _sampler(frozen, cfg)
        sampler = pz.select(sampler).at(lambda m: m.body).apply(jit_wrapper.Jitted)
        out = simple_decoding_loop.temperature_sample_pyloop(
            sampler, pz.nx.wrap(prompts).tag("batch", "seq"), key,
            temperature=PENZAI_TEMPERATURE, max_sampling_steps=cfg.new_tokens,
        )  # fmt: skip
        return out.unwrap("batch", "seq")

    return fn


def make_penzai_jit(model, cfg: Config):
    """``(key, prompts) -> tokens``: penzai's sampling mode, the pyloop's steps in one jit."""
    sampler, state = pz.unbind_state_vars(_sampler(pz.freeze_params(model), cfg), freeze=True)

    def fn(key, prompts):
        def call(values, tokens):
            logits, values = sampler.stateless_call(values, tokens)
            return logits.untag("seq")[-1], values  # the last position's logits

        def draw(rng, logits):
            rng, sub = jax.random.split(rng)
            keys = pz.nx.random_split(sub, {"batch": cfg.n})
            tok = pz.nx.nmap(jax.random.categorical)(
                keys, logits.untag("vocabulary") / PENZAI_TEMPERATURE
            )
            return rng, tok

        logits, values = call(state, pz.nx.wrap(prompts).tag("batch", "seq"))
        out = jnp.zeros((cfg.n, cfg.new_tokens), jnp.int32)

        def body(i, carry):
            rng, logits, values, out = carry
            rng, tok = draw(rng, logits)
            logits, values = call(values, tok[{"seq": None}])
            return rng, logits, values, out.at[:, i].set(tok.unwrap("batch"))

        rng, logits, _, out = jax.lax.fori_loop(
            0, cfg.new_tokens - 1, body, (key, logits, values, out)
        )
        _, tok = draw(rng, logits)
        return out.at[:, -1].set(tok.unwrap("batch"))

    return fn


def family_case(family: str, cfg: Config, repeats: int, budget_s: float) -> tuple[list, dict]:
    """Table rows and measured values for one model family."""
    model, prompts = setup(cfg, family)
    key = jax.random.key(2)
    key_spec = jax.ShapeDtypeStruct(key.shape, key.dtype)
    ours, c_ours = common.compile_timed(lambda: make_inferax(model, cfg), key_spec, prompts)
    bare, c_bare = common.compile_timed(lambda: make_bare(model, cfg), prompts)
    pz_jit, c_pz_jit = common.compile_timed(lambda: make_penzai_jit(model, cfg), key_spec, prompts)
    pz_loop = make_penzai_pyloop(model, cfg)
    start = time.perf_counter()
    tok_loop = np.asarray(jax.block_until_ready(pz_loop(key, prompts)))
    first_loop = time.perf_counter() - start
    tokens = {
        "inferax": np.asarray(ours(key, prompts)),
        "penzai sampler": tok_loop,
        "penzai, one jit": np.asarray(pz_jit(key, prompts)),
        "bare": np.asarray(bare(prompts)),
    }
    same = {side: bool(np.array_equal(tokens["inferax"], t)) for side, t in tokens.items()}
    # Two rounds of turns: the compiled sides (milliseconds each) with FAST_REPEATS x
    # as many repeats, then penzai's sampler (~a second each) against inferax again,
    # so that every ratio compares calls made side by side under the same load.
    t = common.time_interleaved(
        {"inferax": lambda: ours(key, prompts),
         "penzai, one jit": lambda: pz_jit(key, prompts),
         "bare": lambda: bare(prompts)},
        repeats=FAST_REPEATS * repeats, min_repeats=min(FAST_REPEATS * repeats, 3),
        budget_s=budget_s / 4,
    )  # fmt: skip
    t_loop = common.time_interleaved(
        {"inferax": lambda: ours(key, prompts), "penzai sampler": lambda: pz_loop(key, prompts)},
        repeats=repeats, budget_s=budget_s,
    )  # fmt: skip
    t["penzai sampler"] = t_loop["penzai sampler"]
    ours_beside = {side: t_loop["inferax"] if side == "penzai sampler" else t["inferax"]
                   for side in SIDES}  # fmt: skip
    compile_s = {
        "inferax": f"{c_ours:.2f}",
        "penzai sampler": f"~{max(first_loop - t['penzai sampler'].median, 0.0):.2f}",
        "penzai, one jit": f"{c_pz_jit:.2f}",
        "bare": f"{c_bare:.2f}",
    }
    ratios = {side: ours_beside[side].median / t[side].median for side in SIDES}
    best_ratios = {side: ours_beside[side].best / t[side].best for side in SIDES}
    rows = [
        [family if side == "inferax" else "", side, f"{t[side].median * 1e3:.2f}",
         f"{t[side].best * 1e3:.2f}", t[side].repeats, compile_s[side],
         "-" if side == "inferax" else f"{ratios[side]:.3f} ({best_ratios[side]:.3f})",
         "-" if side == "inferax" else ("same tokens" if same[side] else "DIFFERENT tokens")]
        for side in SIDES
    ]  # fmt: skip
    print(f"done {family}", file=sys.stderr, flush=True)
    return rows, {
        "same_tokens": same,
        "ratios": ratios,
        "best_ratios": best_ratios,
        "median_s": {side: t[side].median for side in SIDES},
        "compile_s": compile_s,
        "sampler_round_inferax_s": t_loop["inferax"].median,
    }


def run(quick: bool = False, repeats: int = 11, budget_s: float = 40.0, out=None) -> tuple:
    """Runs every family of the config; returns ``(report, {family: values})``."""
    cfg = QUICK if quick else Config()
    rows, results = [], {}
    for family in cfg.families:
        fam_rows, results[family] = family_case(family, cfg, repeats, budget_s)
        rows += fam_rows
    sampler_round = ", ".join(
        f"{fam}: {r['sampler_round_inferax_s'] * 1e3:.2f} ms" for fam, r in results.items()
    )
    summary = "; ".join(
        f"{fam}: inferax / penzai sampler = {r['ratios']['penzai sampler']:.3f} "
        f"(penzai's sampler takes {1 / r['ratios']['penzai sampler']:.0f}x as long), "
        f"inferax / penzai one jit = {r['ratios']['penzai, one jit']:.2f}, "
        f"inferax / bare = {r['ratios']['bare']:.2f}"
        for fam, r in results.items()
    )
    report = "\n\n".join(
        [
            "## Decoding a penzai transformer: inferax vs penzai's own sampler",
            common.machine_lines(common.machine_info(peers=("penzai",))),
            f"Tiny random-weight penzai models (`penzai_lm.tiny_config`): {cfg.layers} layers, "
            f"d = {cfg.d_model}, vocabulary {cfg.vocab}, float32; prompts of {cfg.prompt} tokens "
            f"(no padding, no token 0; penzai built with pad_id = -1), {cfg.new_tokens} new "
            f"tokens, greedy, N = {cfg.n}. "
            "Milliseconds per whole decode, median (fastest) of repeats timed in turns; "
            "compile: seconds of trace + lower + compile (~: penzai's first call minus a "
            "steady one); ratio: inferax / side, medians (fastest repeats). The compiled "
            f"sides are timed in turns with up to {FAST_REPEATS}x the repeats; penzai's "
            "sampler in a second round of turns against inferax, whose median there "
            f"({sampler_round}) gives the sampler's ratio.",
            common.markdown_table(HEADERS, rows),
            f"Ratios: {summary}.",
        ]
    )
    common.emit(report, out)
    return report, results


def main(argv):
    del argv
    run(
        quick=common.QUICK.value,
        repeats=common.flag_or(common.REPEATS, 11),
        budget_s=common.flag_or(common.BUDGET, 40.0),
        out=common.OUT.value,
    )


if __name__ == "__main__":
    app.run(main)
