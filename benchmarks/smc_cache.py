"""SMC over a language-model-shaped population: tokens plus a KV cache.

The case of ``benchmarks.smc`` for issue 6: an SMC step whose particles are what
a decoder carries -- tokens ``int32 [N, L]`` (particle axis 0), a layer-major
KV cache ``{"k", "v"}: float32 [layers, N, heads, L, d]`` (particle axis 1)
and a scalar decode index shared by all particles (``None``: never resampled)
-- with ESS-triggered resampling (``smc.build(..., ess_threshold=0.5,
particle_axes=AXES)``, systematic; Doucet & Johansen 2009, section 3.5), timed
against the bare transition alone.

The transition is a toy decoder step: it embeds each particle's last token,
writes that token's keys and values into the cache at the decode index, runs
one attention read per layer over the filled slots, samples the next token and
returns the log-weight increment ``scale * reward[token]``. Keys and values
are linear in the token embedding, so the cache a particle carries can be
recomputed from its tokens (``cache_error``): a gather that moved cache rows
apart from their tokens is caught before anything is timed.

``scale`` is a run-time argument, so one executable per side serves three
weightings: ``0`` (the ESS never drops: no step resamples), ``TRIGGERED``
(the ESS falls below N/2 every few steps) and ``EVERY`` (almost every step
resamples). A step that does not resample must not gather: ours is compared
with the bare transition and with the bare transition plus a gather of every
leaf at every step (what a ``lax.cond`` costs under ``vmap``, where it becomes
a select that runs both branches). The same is measured under ``jax.vmap``
over ``runs`` independent SMC runs (one key each), where the library puts the
gather in a ``lax.while_loop`` of at most one iteration: it runs only when
some member of the batch resamples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from inferax.sampling import particles as particles_lib
from inferax.sampling import resampling, smc

AXES = {"tokens": 0, "cache": 1, "index": None}  # particle axis of each part
TRIGGERED, EVERY = 0.5, 4.0  # weight scales: ESS-triggered, (almost) every step
TARGET = 1.10  # ours / bare when no step resamples (no gather, little bookkeeping)


class KVConfig(NamedTuple):
    """Sizes of the toy decoder and of the run."""

    n: int = 64  # particles
    layers: int = 4
    heads: int = 4
    head_dim: int = 16
    length: int = 64  # cache slots L (>= steps + 1)
    vocab: int = 64
    steps: int = 32  # SMC steps per timed run


class KVParams(NamedTuple):
    """Weights of the toy decoder: embedding, per-layer projections, reward table."""

    embed: jax.Array  # [vocab, heads * head_dim]
    wk: jax.Array  # [layers, D, D] with D = heads * head_dim
    wv: jax.Array
    wq: jax.Array
    wo: jax.Array
    reward: jax.Array  # [vocab], standard normal


def init_params(key: jax.Array, cfg: KVConfig) -> KVParams:
    d = cfg.heads * cfg.head_dim
    ks = jax.random.split(key, 6)
    mat = lambda k: jax.random.normal(k, (cfg.layers, d, d)) / math.sqrt(d)  # noqa: E731
    return KVParams(
        embed=jax.random.normal(ks[0], (cfg.vocab, d)),
        wk=mat(ks[1]),
        wv=mat(ks[2]),
        wq=mat(ks[3]),
        wo=mat(ks[4]),
        reward=jax.random.normal(ks[5], (cfg.vocab,)),
    )


def init_particles(cfg: KVConfig) -> dict[str, Any]:
    """N copies of the prompt (token 0 at slot 0), an empty cache, decode index 1."""
    shape = (cfg.layers, cfg.n, cfg.heads, cfg.length, cfg.head_dim)
    return {
        "tokens": jnp.zeros((cfg.n, cfg.length), jnp.int32),
        "cache": {"k": jnp.zeros(shape, jnp.float32), "v": jnp.zeros(shape, jnp.float32)},
        "index": jnp.int32(1),
    }


def _kv(params: KVParams, emb: jax.Array, layer: int, cfg: KVConfig):
    """Keys and values of token embeddings ``[..., D]``: ``[..., heads, head_dim]`` each."""
    shape = (*emb.shape[:-1], cfg.heads, cfg.head_dim)
    return (emb @ params.wk[layer]).reshape(shape), (emb @ params.wv[layer]).reshape(shape)


def make_transition(params: KVParams, cfg: KVConfig):
    """The decoder step ``(key, particles, scale) -> (particles, scale * reward[token])``."""

    def transition(key, particles, scale):
        tokens, cache, index = particles["tokens"], particles["cache"], particles["index"]
        last = jax.lax.dynamic_index_in_dim(tokens, index - 1, axis=1, keepdims=False)
        emb = params.embed[last]  # [N, D]
        filled = jnp.arange(cfg.length) < index  # slots 0 .. index - 1 after the write
        # One in-place write per cache leaf: every layer's keys/values of the last token.
        kvs = [_kv(params, emb, layer, cfg) for layer in range(cfg.layers)]
        k_new = jnp.stack([k for k, _ in kvs])[:, :, :, None]  # [layers, N, H, 1, hd]
        v_new = jnp.stack([v for _, v in kvs])[:, :, :, None]
        at = (0, 0, 0, index - 1, 0)
        k_all = jax.lax.dynamic_update_slice(cache["k"], k_new, at)
        v_all = jax.lax.dynamic_update_slice(cache["v"], v_new, at)
        h = emb
        for layer in range(cfg.layers):
            q = (h @ params.wq[layer]).reshape(cfg.n, cfg.heads, cfg.head_dim)
            s = jnp.einsum("nhd,nhld->nhl", q, k_all[layer]) / math.sqrt(cfg.head_dim)
            att = jax.nn.softmax(jnp.where(filled, s, -jnp.inf), axis=-1)
            read = jnp.einsum("nhl,nhld->nhd", att, v_all[layer]).reshape(cfg.n, -1)
            h = h + read @ params.wo[layer]
        logits = (h @ params.embed.T) / h.shape[-1]  # O(1): many tokens stay likely
        token = jax.random.categorical(key, logits).astype(jnp.int32)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, index))
        new = {"tokens": tokens, "cache": {"k": k_all, "v": v_all}, "index": index + 1}
        return new, (scale * params.reward[token]).astype(jnp.float32)

    return transition


def cache_error(params: KVParams, particles, cfg: KVConfig) -> float:
    """max |cache - keys/values recomputed from each particle's own tokens| (filled slots)."""
    p = jax.tree.map(np.asarray, particles)
    filled = int(p["index"]) - 1
    emb = np.asarray(params.embed)[p["tokens"][:, :filled]]  # [N, filled, D]
    err = 0.0
    for layer in range(cfg.layers):
        k, v = (np.asarray(a) for a in _kv(params, jnp.asarray(emb), layer, cfg))
        for name, want in (("k", k), ("v", v)):
            got = p["cache"][name][layer][:, :, :filled].transpose(0, 2, 1, 3)
            err = max(err, float(np.max(np.abs(got - want))))
    return err


def _smc_key_schedule(key, i):
    """The key ``smc.run`` gives step ``i``'s move: ``split(fold_in(key, i))[0]``."""
    return jax.random.split(jax.random.fold_in(key, i))


def make_bare(transition, cfg: KVConfig):
    """The transitions alone in one ``lax.scan``; ``(key, particles, scale) -> (particles, 0s)``.

    It draws the moves with the keys ``smc.run`` uses, so when no step resamples
    ours must end on exactly its particles.
    """

    def run(key, particles, scale):
        def body(p, i):
            p, inc = transition(_smc_key_schedule(key, i)[0], p, scale)
            return p, jnp.sum(inc)  # keeps the increments (XLA could drop them)

        p, _ = jax.lax.scan(body, particles, jnp.arange(cfg.steps))
        return p, jnp.zeros((cfg.steps,), bool)

    return run


def gather(particles, ancestors):
    """Every per-particle leaf's rows ``ancestors`` on its own axis (``AXES``), with
    the library's gather (``inferax.sampling.particles.take``); the index passes."""
    return particles_lib.take(particles, ancestors, particles_lib.leaf_axes(AXES, particles))


def make_gather_every(transition, cfg: KVConfig):
    """Bare transitions plus a systematic resample and gather at every step."""

    def run(key, particles, scale):
        def body(p, i):
            k_move, k_res = _smc_key_schedule(key, i)
            p, inc = transition(k_move, p, scale)
            return gather(p, resampling.systematic(k_res, inc)), None

        p, _ = jax.lax.scan(body, particles, jnp.arange(cfg.steps))
        return p, jnp.ones((cfg.steps,), bool)

    return run


def make_ours(transition, cfg: KVConfig):
    """``smc.build`` with ESS-triggered systematic resampling over ``AXES``."""
    algo = smc.build(transition, resampling="systematic", ess_threshold=0.5, particle_axes=AXES)

    def run(key, particles, scale):
        state, infos = algo.run(key, algo.init(particles), jnp.full((cfg.steps,), scale))
        return state.particles, infos.resampled

    return run


@dataclasses.dataclass
class KVRow:
    """One weighting of one layout: seconds per SMC step of each side."""

    setting: str  # "1 run" or "vmap R runs"
    weights: str  # "none resample", "ESS-triggered", "every step"
    scale: float
    resampled: float  # fraction of steps that resampled (over runs and steps)
    any_resampled: float  # fraction of steps at which some run resampled (gathers run)
    ours: float
    bare: float
    gather_every: float
    repeats: int = 0
    best_ratio: float = float("nan")  # ours/bare of the fastest repeats

    @property
    def ratio(self) -> float:
        return self.ours / self.bare


def _vmapped(make, transition, cfg, runs):
    """``runs`` independent runs (keys ``fold_in(key, r)``) of a side, under ``jax.vmap``."""
    one = make(transition, cfg)

    def run(key, particles, scale):
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(runs))
        return jax.vmap(one, in_axes=(0, None, None))(keys, particles, scale)

    return run


def _check(name: str, ok: bool, detail: str) -> None:
    if not ok:
        raise RuntimeError(f"KV-cache SMC ({name}): {detail}")


def kv_case(
    cfg: KVConfig | None = None, *, runs: int = 8, repeats: int = 7, budget_s: float = 10.0
) -> list[KVRow]:
    """Checks, then times ours / bare / gather-every for 1 run and ``runs`` vmapped runs."""
    cfg = KVConfig() if cfg is None else cfg
    params = init_params(jax.random.key(7), cfg)
    transition = make_transition(params, cfg)
    p0 = init_particles(cfg)
    key = jax.random.key(8)
    scales = {"none resample": 0.0, "ESS-triggered": TRIGGERED, "every step": EVERY}
    rows = []
    for setting, wrap in (("1 run", None), (f"vmap {runs} runs", runs)):
        sides = {}
        for name, make in (("ours", make_ours), ("bare", make_bare), ("gather", make_gather_every)):
            fn = make(transition, cfg) if wrap is None else _vmapped(make, transition, cfg, wrap)
            sides[name] = jax.jit(fn)
        bare_p, _ = sides["bare"](key, p0, 0.0)
        for weights, scale in scales.items():
            parts, resampled = sides["ours"](key, p0, scale)
            resampled = np.asarray(resampled).reshape(-1, cfg.steps)  # [runs, steps]
            frac, frac_any = float(resampled.mean()), float(resampled.any(0).mean())
            per_run = [parts]
            if wrap is not None:
                per_run = [jax.tree.map(lambda a, r=r: a[r], parts) for r in range(wrap)]
            for p in per_run:
                err = cache_error(params, p, cfg)
                _check(setting, err < 1e-4, f"cache rows left their tokens: {err:.3g}")
                _check(setting, int(p["index"]) == cfg.steps + 1, f"index {p['index']}")
            if scale == 0.0:
                _check(setting, frac == 0.0, f"resampled {frac:.2f} of steps at zero weights")
                same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), parts, bare_p)
                _check(setting, all(jax.tree.leaves(same)), "ours differs from the bare run")
            else:
                _check(setting, frac > 0.0, f"never resampled at scale {scale}")
            t = common.time_interleaved(
                {name: (lambda f=f, s=scale: f(key, p0, s)) for name, f in sides.items()},
                repeats=repeats,
                min_repeats=min(3, repeats),
                budget_s=budget_s,
            )
            rows.append(
                KVRow(
                    setting=setting,
                    weights=weights,
                    scale=scale,
                    resampled=frac,
                    any_resampled=frac_any,
                    ours=t["ours"].median / cfg.steps,
                    bare=t["bare"].median / cfg.steps,
                    gather_every=t["gather"].median / cfg.steps,
                    repeats=t["ours"].repeats,
                    best_ratio=t["ours"].best / t["bare"].best,
                )
            )
    return rows


QUICK = KVConfig(n=16, layers=2, heads=2, head_dim=8, length=16, vocab=32, steps=8)
KV_HEADERS = (
    "setting",
    "weights (scale)",
    "steps resampled",
    "steps that gather",
    "ours (ms/step)",
    "bare (ms/step)",
    "ours/bare",
    "ours/bare (fastest repeats)",
    "bare + gather every step (ms/step)",
    "(gather every step)/bare",
    "timed repeats",
)


def expected_ratio(row: KVRow) -> float:
    """ours/bare when only the steps that gather pay for it: ``1 + f (g / b - 1)``.

    ``f`` is the fraction of steps at which a gather runs (under ``vmap``: some
    run resampled), ``g / b`` the cost of a step that gathers relative to the
    bare transition.
    """
    return 1.0 + row.any_resampled * (row.gather_every / row.bare - 1.0)


def kv_table(rows: list[KVRow]) -> str:
    """The KV-cache SMC measurements, one line per (setting, weights)."""
    cells = [
        [
            r.setting,
            f"{r.weights} ({r.scale:g})",
            f"{r.resampled:.0%}",
            f"{r.any_resampled:.0%}",
            f"{r.ours * 1e3:.3f}",
            f"{r.bare * 1e3:.3f}",
            f"{r.ratio:.2f}",
            f"{r.best_ratio:.2f}",
            f"{r.gather_every * 1e3:.3f}",
            f"{r.gather_every / r.bare:.2f}",
            r.repeats,
        ]
        for r in rows
    ]
    return common.markdown_table(KV_HEADERS, cells)
