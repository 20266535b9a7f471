"""Particle filtering over reasoning steps (Puri et al. 2025).

A state-space view of step-wise generation: the transition is the language
model's next reasoning step (the bootstrap proposal), the emission is "the
process reward model accepts this prefix". Each particle carries the PRM score
``r_t`` of its whole current prefix; with ``g(r) = (r / (1 - r))^(1 / tau)``
(resampling probabilities ``softmax(logit(r) / tau)``, REFERENCES section 5):

- ``weights="prm"`` (Puri et al.): a particle's weight is ``g(r_t)`` of its
  current score, not a running product. Resampled every step (the default,
  ``ess_threshold=1``) the final population targets
  ``p(path) prod_t g(r_t)`` and ``log_Z`` estimates its normaliser. With an
  ESS trigger the weight stays the absolute ``g(r_t)`` between resamplings
  (Puri et al.'s heuristic; ``log_Z`` then has no clean target).
- ``weights="ratio"``: the increment ``g(r_t) / g(r_{t-1})`` (``g(r_0) = 1``),
  a proper SMC whose intermediate targets are ``p(prefix) g(r_t)``: the final
  target is ``p(path) g(r_T)`` whatever the inner scores and the resampling
  schedule, and ``exp(log_Z)`` is an unbiased estimate of
  ``sum_paths p(path) g(r_T)`` (Del Moral 2004).

Finished particles (EOS, or a full row) stay in the pool with their last score:
in ``"prm"`` mode they keep competing with weight ``g(r_last)``, and a
resampled copy of a finished particle is finished too. The search stops when
every particle is finished or after ``config.max_steps`` rounds; the final
round does not resample, so the final weights are those of the last
reweighting (``softmax(logit(r_T) / tau)`` in ``"prm"`` mode).

Everything runs on ``inferax.sampling.smc``: the population is a pytree
``Population(state, score, logg, base)`` with ``decoding.state_axes`` for the
KV cache; the ``B`` prompts are ``B`` groups of the core (``[B, N]`` log-weights:
per-prompt ESS, resampling and ``log_Z``) while every round decodes all
``B N`` rows in one batched ``generate``. Resampling gathers the ancestors'
tokens, logits and cache rows (one ``take``), never re-running a prefix.

Particle Gibbs (conditional SMC over the same rounds) is in
``inferax.search.lm.gibbs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.sampling import _checks, particles
from inferax.sampling import resampling as resampling_lib
from inferax.sampling import smc as smc_lib
from inferax.search.lm import decoding as dec
from inferax.search.lm import steps

__all__ = [
    "Population",
    "filter_smc",
    "init_population",
    "particle_filter",
]

WEIGHTS = ("prm", "ratio")
ANSWERS = ("best", "weighted")


class Population(NamedTuple):
    """The particles of an LM particle filter (all leaves per row).

    Attributes:
        state: the ``DecodeState`` (tokens, logits, KV cache).
        score: ``[R]`` PRM score of each row's current prefix (0.5 before the first step).
        logg: ``[R]`` ``log g(score)`` = ``logit(score) / tau``.
        base: ``[R]`` the log-weight level the next increment is measured from.
    """

    state: dec.DecodeState
    score: jax.Array
    logg: jax.Array
    base: jax.Array


def population_axes(lm: Any) -> Population:
    """Particle axes of a ``Population`` (for ``particles.take`` / the SMC core)."""
    return Population(dec.state_axes(lm), 0, 0, 0)


def init_population(
    lm: Any, prompts: jax.Array, prompt_mask: jax.Array | None, num_particles: int, config
) -> tuple[Population, jax.Array, dec.DecodeInfo]:
    """Prefills every prompt once; ``num_particles`` rows per prompt.

    Returns:
        ``(population, prompt_index [B N], info)``.
    """
    state, prompt_index, info = steps.start(lm, prompts, prompt_mask, num_particles, config)
    r = state.num_tokens.shape[0]
    half = jnp.full((r,), 0.5, jnp.float32)
    zeros = jnp.zeros((r,), jnp.float32)
    return Population(state, half, zeros, zeros), prompt_index, info


def check_arguments(config, num_particles, tau, weights, answer, resampling="multinomial"):
    """Checks the filter's arguments; returns ``(config.checked(), N, float(tau))``."""
    if not isinstance(config, steps.StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    config = config.checked()
    n = _checks.positive_int(num_particles, "num_particles")
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau > 0:
        raise ValueError(f"tau: expected a float > 0, got {tau!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights: expected one of {WEIGHTS}, got {weights!r}")
    if answer not in ANSWERS:
        raise ValueError(f"answer: expected one of {ANSWERS}, got {answer!r}")
    if not callable(resampling):
        resampling_lib.get(resampling)  # ValueError naming "resampling"
    return config, n, float(tau)


def filter_smc(
    lm: Any,
    prm_fn: steps.PRMFn,
    prompt_index: jax.Array,
    config: steps.StepConfig,
    *,
    tau: float = 1.0,
    weights: str = "prm",
    resampling: str | Callable = "multinomial",
    ess_threshold: float = 1.0,
) -> smc_lib.SMC:
    """The particle filter as an SMC algorithm over ``Population`` particles.

    ``step(key, state, i, may_resample)`` extends every live row by one step,
    re-scores the rows that moved and reweights them (module docstring); the
    transition's ``aux`` is ``(generated_tokens, decode_steps, prm_calls,
    num_nan_scores)``. Initialise with ``init(population, zeros([B, N]))``.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights: expected one of {WEIGHTS}, got {weights!r}")
    steps.check_prm(prm_fn)

    def transition(key, pop: Population, i):
        state, scores, out = steps.extend(
            key, lm, pop.state, prompt_index, prm_fn, pop.score, config
        )
        logg = steps.resample_prob_logits(scores, tau)
        if weights == "ratio":
            inc = jnp.where(out.moved, logg - pop.logg, 0.0)
        else:
            inc = logg - pop.base
        nan = jnp.sum(out.moved & jnp.isnan(scores), dtype=jnp.int32)
        aux = (out.generated_tokens, out.decode_steps, out.prm_calls, nan)
        return Population(state, scores, logg, pop.base), inc, aux

    return smc_lib.build(
        transition,
        resampling=resampling,
        ess_threshold=ess_threshold,
        particle_axes=population_axes(lm),
    )


def constrain(tree, axes, mesh):
    """Pins every per-row leaf of ``tree`` to the ``"particles"`` axis of ``mesh`` (no-op
    without a mesh); shared leaves are replicated."""
    if mesh is None:
        return tree
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for leaf, ax in zip(leaves, particles.leaf_axes(axes, tree), strict=True):
        spec = P() if ax is None else P(*([None] * ax), smc_lib.PARTICLE_AXIS)
        out.append(jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, spec)))
    return jax.tree_util.tree_unflatten(treedef, out)


def check_mesh(mesh, rows: int):
    """``mesh`` (None or a ``"particles"`` mesh whose size divides ``rows``)."""
    if mesh is None:
        return None
    if not isinstance(mesh, jax.sharding.Mesh) or smc_lib.PARTICLE_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh: expected None or a Mesh with a 'particles' axis, got {mesh!r}")
    d = mesh.shape[smc_lib.PARTICLE_AXIS]
    if rows % d:
        raise ValueError(
            f"mesh: expected the {rows} rows (prompts x particles) to be divisible by the "
            f"{d} devices, got a remainder of {rows % d}"
        )
    return mesh


def run_rounds(key, alg, smc_state, n, config, axes, *, absolute_base, mesh, extra_trace=None):
    """The round loop shared by the LM particle searches (one ``lax.while_loop``).

    Round ``i`` calls ``alg.step(fold_in(key, i), state, i)``; a prompt group does
    not resample in the last round (all its rows finished, or ``max_steps``).
    ``absolute_base``: the ``"prm"`` weighting's bookkeeping (``base`` is 0 after
    a resampling and ``logg`` otherwise). ``extra_trace(pop) -> {name: [B]}``.

    Returns:
        ``(final smc state, counters (tokens, decode steps, prm calls, nan), trace, rounds)``.
    """
    t = config.max_steps

    b = smc_state.log_weights.shape[0]

    def finished_of(pop):  # [B, rows per group] (K n rows when a step expanded)
        return pop.state.finished.reshape(b, -1)

    def record(pop, info, st):
        score = steps.grouped(pop.score, n)
        out = {
            "ess": info.ess.astype(jnp.float32),
            "resampled": info.resampled,
            "num_finished": jnp.sum(finished_of(pop), axis=1, dtype=jnp.int32),
            "mean_score": jnp.mean(score, axis=1),
            "max_score": jnp.max(score, axis=1),
            "log_Z": st.log_Z.astype(jnp.float32),
            "all_invalid": info.all_invalid,
        }
        if extra_trace is not None:
            out.update(extra_trace(pop))
        return out

    st_shape, info_shape = jax.eval_shape(lambda s: alg.step(key, s, 0), smc_state)
    trace_shape = jax.eval_shape(record, st_shape.particles, info_shape, st_shape)
    trace0 = jax.tree_util.tree_map(lambda a: jnp.zeros((t, *a.shape), a.dtype), trace_shape)
    zero = jnp.zeros((), jnp.int32)

    def cond(carry):
        i, st, *_ = carry
        return (i < t) & ~jnp.all(st.particles.state.finished)

    def body(carry):
        i, st, counts, trace = carry

        def may(new_pop):
            return ~jnp.all(finished_of(new_pop), axis=1) & (i < t - 1)

        new, info = alg.step(jax.random.fold_in(key, i), st, i, may)
        pop = new.particles
        if absolute_base:
            base = jnp.where(jnp.repeat(info.resampled, n), 0.0, pop.logg)
        else:
            base = pop.base
        pop = constrain(pop._replace(base=base), axes, mesh)
        counts = tuple(c + a for c, a in zip(counts, info.aux, strict=True))
        trace = jax.tree_util.tree_map(
            lambda buf, v: buf.at[i].set(v), trace, record(pop, info, new)
        )
        return i + 1, new._replace(particles=pop), counts, trace

    smc_state = smc_state._replace(particles=constrain(smc_state.particles, axes, mesh))
    init = (zero, smc_state, (zero, zero, zero, zero), trace0)
    rounds, final, counts, trace = jax.lax.while_loop(cond, body, init)
    last = jnp.maximum(rounds - 1, 0)
    keep = jnp.arange(t) < rounds
    trace = jax.tree_util.tree_map(
        lambda a: jnp.where(keep.reshape((t,) + (1,) * (a.ndim - 1)), a, a[last]), trace
    )
    return final, counts, trace, rounds


def _choose(tokens, num_tokens, finished, scores, w, answer):
    if answer == "best":  # the highest final score, finished candidates first
        key = jnp.where(jnp.isnan(scores), -jnp.inf, scores) + jnp.where(finished, 2.0, 0.0)
        return jnp.argmax(key, axis=1).astype(jnp.int32)
    same = jnp.all(tokens[:, :, None] == tokens[:, None], axis=-1) & (
        num_tokens[:, :, None] == num_tokens[:, None]
    )
    votes = jnp.einsum("bij,bj->bi", same.astype(w.dtype), w)
    return jnp.argmax(votes, axis=1).astype(jnp.int32)


def result_of(pop: Population, log_weights, n, answer) -> steps.LMSearchResult:
    """``LMSearchResult`` of the final population (weights: normalised SMC weights)."""
    st = pop.state
    tokens = steps.grouped(st.tokens, n)
    num = steps.grouped(st.num_tokens, n)
    fin = steps.grouped(st.finished, n)
    scores = steps.grouped(pop.score, n)
    lw = resampling_lib.sanitize(log_weights.reshape(-1)).reshape(log_weights.shape)
    w = jax.nn.softmax(lw.astype(jnp.float32), axis=-1)
    w = jnp.where(jnp.isnan(w), 0.0, w)
    return steps.LMSearchResult(
        tokens, num, fin, scores, w, _choose(tokens, num, fin, scores, w, answer)
    )


def search_info(
    sequences, counts, prompt_tokens, rounds, trace, nan_name="num_nan_scores"
) -> steps.LMSearchInfo:
    """``LMSearchInfo`` from ``run_rounds``' counters and trace."""
    gen, calls_dec, prm, nan = counts
    trace = dict(trace, **{nan_name: nan})
    return steps.LMSearchInfo(sequences, gen, prm, calls_dec, prompt_tokens, rounds, trace)


def particle_filter(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_particles: int,
    config: steps.StepConfig,
    tau: float = 1.0,
    weights: str = "prm",
    resampling: str | Callable = "multinomial",
    ess_threshold: float = 1.0,
    answer: str = "best",
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Particle filtering over reasoning steps (Puri et al. 2025, Algorithm 1).

    Args:
        key: PRNG key.
        lm: the decoding protocol (``inferax.search.lm.decoding``).
        prm_fn: ``(state, prompt_index [R]) -> [R]`` scores in [0, 1] of each prefix.
        prompts: ``[B, P]`` left-padded prompt tokens; ``prompt_mask`` ``[B, P]``.
        num_particles: ``N`` particles (sequences) per prompt.
        config: ``StepConfig`` (static).
        tau: temperature of the resampling probabilities ``softmax(logit(r) / tau)``.
        weights: ``"prm"`` (absolute current score) or ``"ratio"`` (incremental).
        resampling: a scheme name of ``inferax.sampling.resampling`` or a callable.
        ess_threshold: resample when ``ESS < ess_threshold * N`` (1: every step).
        answer: ``"best"`` (highest final score, finished first) or ``"weighted"``
            (the candidate whose identical copies carry the largest total weight).
        mesh: optional ``"particles"`` mesh: the rows are sharded over it (call
            under ``jit``); the result does not depend on it.

    Returns:
        ``(LMSearchResult, LMSearchInfo)``: ``N`` candidates per prompt with their
        final scores and normalised weights. ``trace`` (``[max_steps, B]``):
        ``ess`` (before resampling), ``resampled``, ``num_finished``,
        ``mean_score``, ``max_score``, ``log_Z``; and ``num_nan_scores``.
        Spent: ``B N`` sequences, at most ``B N`` PRM calls per round.
    """
    config, n, tau = check_arguments(config, num_particles, tau, weights, answer, resampling)
    b = jnp.shape(prompts)[0]
    mesh = check_mesh(mesh, b * n)
    pop, prompt_index, info0 = init_population(lm, prompts, prompt_mask, n, config)
    alg = filter_smc(
        lm, prm_fn, prompt_index, config, tau=tau, weights=weights, resampling=resampling,
        ess_threshold=ess_threshold,
    )  # fmt: skip
    axes = population_axes(lm)
    with mesh_context(mesh):
        st = alg.init(pop, jnp.zeros((b, n), jnp.float32))
        final, counts, trace, rounds = run_rounds(
            key, alg, st, n, config, axes, absolute_base=weights == "prm", mesh=mesh
        )
    res = result_of(final.particles, final.log_weights, n, answer)
    return res, search_info(b * n, counts, info0.prompt_tokens, rounds, trace)


def mesh_context(mesh):
    """The ambient abstract mesh of ``mesh`` (the SMC core then replicates weights)."""
    return (
        contextlib.nullcontext()
        if mesh is None
        else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
    )
