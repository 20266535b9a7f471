"""Language-model decoding speed: the KV cache, the sampler's overhead, and a PyTorch loop.

Three comparisons, each a ratio measured in one process, both sides timed in
turns (``common.time_interleaved``):

- **KV cache vs recomputing the prefix**: ``decoding.sample`` (greedy, 64 new
  tokens) against a jitted loop that re-runs the full forward pass over the
  whole (fixed-size, masked) buffer for every new token. Target >= 5x.
- **Sampler vs bare decode steps**: ``decoding.sample`` at temperature 1 with
  top-p (sampling, done mask, bookkeeping) against a ``fori_loop`` of the same
  number of bare ``decode_step`` calls with an argmax. Target <= 1.10.
- **PyTorch**: the same architecture and weights in a plain PyTorch loop with a
  preallocated KV cache, greedy, at N = 1, 16, 256 sequences (only when torch
  is installed: the ``bench`` extra). Both sides produce the same tokens
  (checked before timing).

    python -m benchmarks.lm [--quick]
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from benchmarks import common
from inferax.models import arithmetic as ar
from inferax.models import transformer as tr
from inferax.search.lm import decoding as dec

TARGET_CACHE, TARGET_OVERHEAD = 5.0, 1.10


class Config(NamedTuple):
    layers: int = 2
    d_model: int = 64
    heads: int = 4
    prompt: int = 16
    new_tokens: int = 64
    n: int = 16
    torch_ns: tuple = (1, 16, 256)


QUICK = Config(layers=1, d_model=32, heads=2, prompt=8, new_tokens=16, n=4, torch_ns=(4,))


def setup(cfg: Config, key=None):
    model = tr.Transformer(
        ar.VOCAB_SIZE, num_layers=cfg.layers, d_model=cfg.d_model, num_heads=cfg.heads,
        max_len=cfg.prompt + cfg.new_tokens,
    )  # fmt: skip
    params = jax.jit(lambda k: tr.init_params(model, k))(key or jax.random.key(0))
    prompts = jax.random.randint(jax.random.key(1), (cfg.n, cfg.prompt), 3, ar.VOCAB_SIZE)
    return model, params, prompts.astype(jnp.int32)


def make_ours(model, params, cfg: Config, temperature=0.0, top_p=None):
    lm = tr.lm_functions(model, params)

    def fn(key, prompts):
        s, _ = dec.sample(key, lm, prompts, num_samples=1, max_new_tokens=cfg.new_tokens,
                          eos_id=None, temperature=temperature, top_p=top_p)  # fmt: skip
        return s.tokens

    return fn


def make_recompute(model, params, cfg: Config):
    """Greedy decoding without a cache: the full forward pass over the buffer per token."""

    def fn(prompts):
        n, p = prompts.shape
        buf = jnp.zeros((n, p + cfg.new_tokens), jnp.int32).at[:, :p].set(prompts)

        def body(t, buf):
            real = jnp.broadcast_to(jnp.arange(buf.shape[1]) < p + t, buf.shape)
            logits = model.apply(params, buf, real)[:, p + t - 1]
            return buf.at[:, p + t].set(jnp.argmax(logits, -1).astype(jnp.int32))

        return jax.lax.fori_loop(0, cfg.new_tokens, body, buf)[:, p:]

    return fn


def make_bare(model, params, cfg: Config):
    """Prefill, then ``new_tokens`` bare decode steps (argmax, no bookkeeping)."""
    lm = tr.lm_functions(model, params)

    def fn(prompts):
        cache = lm.init_cache(prompts.shape[0], cfg.prompt + cfg.new_tokens)
        logits, cache = lm.prefill(cache, prompts, jnp.ones(prompts.shape, bool))
        valid = jnp.ones((prompts.shape[0],), bool)

        def body(_, carry):
            logits, cache = carry
            return lm.decode_step(cache, jnp.argmax(logits, -1).astype(jnp.int32), valid)

        return jax.lax.fori_loop(0, cfg.new_tokens, body, (logits, cache))[0]

    return fn


def run(quick: bool = False, repeats: int = 5, budget_s: float = 10.0, out=None) -> tuple:
    cfg = QUICK if quick else Config()
    model, params, prompts = setup(cfg)
    key = jax.random.key(2)
    ours = jax.jit(make_ours(model, params, cfg))
    ours_t1 = jax.jit(make_ours(model, params, cfg, temperature=1.0, top_p=0.95))
    recompute = jax.jit(make_recompute(model, params, cfg))
    bare = jax.jit(make_bare(model, params, cfg))
    same = bool(jnp.all(ours(key, prompts) == recompute(prompts)))
    t = common.time_interleaved(
        {"ours": lambda: ours(key, prompts), "recompute": lambda: recompute(prompts),
         "ours_t1": lambda: ours_t1(key, prompts), "bare": lambda: bare(prompts)},
        repeats=repeats, budget_s=budget_s,
    )  # fmt: skip
    speedup = t["recompute"].median / t["ours"].median
    overhead = t["ours_t1"].median / t["bare"].median
    rows = [
        ["KV cache vs recomputing the prefix", f"{t['ours'].median * 1e3:.2f}",
         f"{t['recompute'].median * 1e3:.2f}",
         common.verdict(speedup, TARGET_CACHE, higher_is_better=True) + " (>= 5)",
         "same tokens" if same else "DIFFERENT tokens"],
        ["sampler (T=1, top-p) vs bare decode steps", f"{t['ours_t1'].median * 1e3:.2f}",
         f"{t['bare'].median * 1e3:.2f}", common.verdict(overhead, TARGET_OVERHEAD) + " (<= 1.10)",
         "-"],
    ]  # fmt: skip
    torch_rows = (
        torch_case(model, params, cfg, repeats, budget_s, ours) if common.installed("torch") else []
    )
    report = "\n\n".join(
        [
            "## Language-model decoding",
            common.machine_lines(common.machine_info(peers=("flax", "torch"))),
            f"Transformer: {cfg.layers} layers, d = {cfg.d_model}, {cfg.heads} heads; prompts "
            f"of {cfg.prompt} tokens, {cfg.new_tokens} new tokens, N = {cfg.n}. Milliseconds "
            "per whole decode (median of repeats timed in turns).",
            common.markdown_table(
                ("comparison", "ours (ms)", "other (ms)", "ratio", "check"), rows
            ),
            *(
                [
                    "Against a plain PyTorch loop with a preallocated KV cache (same weights, "
                    "greedy, 1 thread; tokens compared before timing):",
                    common.markdown_table(
                        ("N", "ours (ms)", "PyTorch (ms)", "PyTorch/ours", "check"), torch_rows
                    ),  # fmt: skip
                ]
                if torch_rows
                else ["PyTorch not installed: no PyTorch comparison (`pip install -e .[bench]`)."]
            ),
        ]
    )
    common.emit(report, out)
    return report, {"speedup": speedup, "overhead": overhead, "same_tokens": same}


def torch_case(model, params, cfg: Config, repeats, budget_s, ours_n) -> list:
    """PyTorch against ours at every N of ``cfg.torch_ns`` (``ours_n`` is ours compiled for N)."""
    import torch

    from benchmarks import lm_torch

    torch.set_num_threads(1)  # its faster setting on this 2-core machine (see RESULTS.md)
    rows = []
    for n in cfg.torch_ns:
        prompts = jax.random.randint(jax.random.key(3), (n, cfg.prompt), 3, ar.VOCAB_SIZE)
        prompts = prompts.astype(jnp.int32)
        ours = ours_n if n == cfg.n else jax.jit(make_ours(model, params, cfg))
        key = jax.random.key(0)
        tmodel = lm_torch.from_flax(model, params)
        pt = lm_torch.to_torch(np.asarray(prompts))
        same = np.array_equal(
            np.asarray(ours(key, prompts)), lm_torch.greedy(tmodel, pt, cfg.new_tokens)
        )
        t = common.time_interleaved(
            {"ours": lambda f=ours, x=prompts, k=key: f(k, x),
             "torch": lambda m=tmodel, x=pt: lm_torch.greedy(m, x, cfg.new_tokens)},
            repeats=repeats, budget_s=budget_s,
        )  # fmt: skip
        r = t["torch"].median / t["ours"].median
        rows.append([n, f"{t['ours'].median * 1e3:.2f}", f"{t['torch'].median * 1e3:.2f}",
                     f"{r:.2f}", "same tokens" if same else "DIFFERENT tokens"])  # fmt: skip
        print(f"done torch N={n}", file=sys.stderr, flush=True)
    return rows


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
