"""Particle filtering over reasoning steps (Puri et al. 2025).

A state-space view of step-wise generation: the transition is the language
model's next reasoning step (the bootstrap proposal), the emission is "the
process reward model accepts this prefix". Each particle carries the PRM score
``r_t`` of its whole current prefix; with ``g(r) = (r / (1 - r))^(1 / tau)``
(resampling probabilities ``softmax(logit(r) / tau)``, REFERENCES section 5):

- ``weights="prm"`` (Puri et al.): a particle's weight is ``g(r_t)`` of its
  current score, not a running product. Resampled every step (the default,
  ``ess_threshold=1``) the final population targets a fixed function of the
  path alone,

      gamma(path) = p(path) * prod_{t=1}^{T(path)} g(r_t(path)),

  ``T(path)`` the path's own number of steps (its EOS step included) and
  ``r_t(path)`` the score of its prefix after step ``t``; ``log_Z`` estimates
  ``log sum_paths gamma(path)``. A particle that finished takes increment 1:
  its ``g`` is never re-applied in later rounds, whatever its group mates do
  (before, a finished particle's ``g(r_T)`` was re-applied in every round its
  group ran on, so the target depended on the other particles). With an ESS
  trigger the weight stays the absolute ``g(r_t)`` between resamplings (Puri
  et al.'s heuristic; ``log_Z`` then has no clean target).
- ``weights="ratio"``: the increment ``g(r_t) / g(r_{t-1})`` (``g(r_0) = 1``),
  a proper SMC whose intermediate targets are ``p(prefix) g(r_t)``: the final
  target is ``p(path) g(r_T(path))`` whatever the inner scores and the
  resampling schedule, and ``exp(log_Z)`` is an unbiased estimate of its
  normaliser (Del Moral 2004).

Both are one rule: a row that moved takes ``log g(r_t) - base``, a row that did
not move takes 0; ``base`` is ``log g`` of the row's last score, except that
``"prm"`` resets it to 0 when its group resamples.

Finished particles (EOS, a full row, or out of budget) stay in the pool with
their last score, and a resampled copy of a finished particle is finished too.
The search stops when every particle is finished or after
``config.max_steps`` rounds; the final round does not resample.

The filter is a policy of ``inferax.search.lm.driver`` (which owns the round
loop, the per-prompt counters, the budget caps and the mesh) over the grouped
SMC core ``inferax.sampling.smc``: the population is a pytree
``Population(state, score, logg, base)`` with ``decoding.state_axes`` for the
KV cache; the ``B`` prompts are ``B`` groups (``[B, N]`` log-weights:
per-prompt ESS, resampling and ``log_Z``) while every round decodes all
``B N`` rows in one batched ``generate``. Resampling gathers the ancestors'
tokens, logits and cache rows (one ``take``), never re-running a prefix.

Particle Gibbs (conditional SMC over the same rounds) is in
``inferax.search.lm.gibbs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.sampling import resampling as resampling_lib
from inferax.sampling import smc as smc_lib
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import driver, steps

__all__ = [
    "Population",
    "filter_policy",
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


# What the SMC core's non-finite pass looks at (``smc.build(check_finite=)``): the
# next-token logits, the model's output. Not the KV cache: it is the population's
# largest leaf by far (a pass over it each round reads the whole cache once more),
# and a NaN/inf key or value that can affect generation reaches the row's logits in
# the decode step that wrote it. Not the PRM scores either: NaN scores are counted
# apart (``trace["num_nan_scores"]``) and are the worst score, not a model failure.
# (Any non-finite logit counts: a model that writes -inf for forbidden tokens is
# counted; constraints belong in ``StepConfig.logits_hook``, applied after.)
FINITE_LEAVES = Population(
    dec.DecodeState(
        tokens=False, num_tokens=False, num_steps=False, finished=False, logits=True, cache=False
    ),
    score=False,
    logg=False,
    base=False,
)


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


def filter_policy(
    lm: Any,
    n: int,
    config: steps.StepConfig,
    *,
    tau: float = 1.0,
    weights: str = "prm",
    resampling: str | Callable = "multinomial",
    ess_threshold: float = 1.0,
    answer: str = "best",
) -> driver.Policy:
    """The particle filter as a ``driver.Policy`` over ``SMCState(Population)`` states.

    A round extends every live row by one step (the round's capped ``extend``,
    with ``config``: particle Gibbs passes its replay hook here), reweights the
    rows that moved (module docstring) and resamples the groups that may.
    Initialise with ``init(driver.Start)``.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights: expected one of {WEIGHTS}, got {weights!r}")
    axes = population_axes(lm)

    def transition(rnd):
        def move(key, pop: Population, i):
            state, scores, out = rnd.extend(key, pop.state, pop.score, config=config)
            logg = steps.resample_prob_logits(scores, tau)
            inc = jnp.where(out.moved, logg - pop.base, 0.0)
            return Population(state, scores, logg, pop.base), inc, out.ledger

        return move

    def init(start: driver.Start):
        r = start.state.num_tokens.shape[0]
        half = jnp.full((r,), 0.5, jnp.float32)
        zeros = jnp.zeros((r,), jnp.float32)
        pop = Population(start.state, half, zeros, zeros)
        return smc_lib.init(pop, jnp.zeros((start.num_prompts, n), jnp.float32), particle_axes=axes)

    def step(key, st, rnd: driver.Round):
        alg = smc_lib.build(
            transition(rnd), resampling=resampling, ess_threshold=ess_threshold,
            particle_axes=axes, check_finite=FINITE_LEAVES, runtime_checks=config.runtime_checks,
        )  # fmt: skip
        new, info = alg.step(key, st, rnd.index, lambda p: rnd.may_select(p.state))
        pop = new.particles
        base = (
            jnp.where(jnp.repeat(info.resampled, n), 0.0, pop.logg)
            if weights == "prm"
            else pop.logg
        )
        return new._replace(particles=pop._replace(base=base)), info.aux, smc_trace(new, info, n)

    def finish(st):
        return result_of(st.particles, st.log_weights, n, answer)

    return driver.Policy(
        init, step, finish, lambda st: st.particles.state, smc_lib.SMCState(axes, None, None)
    )


def smc_trace(new: smc_lib.SMCState, info: Any, n: int) -> dict:
    """The per-round trace (``[B]`` each) of an SMC policy over a ``Population``.

    ``new``: the SMC core's state after the step, ``info``: its step info. Entries:
    ``ess`` (before resampling), ``resampled``, ``mean_score`` / ``max_score`` of
    the particles' scores, ``log_Z``, ``all_invalid``, ``num_non_finite_logits``.
    """
    score = steps.grouped(new.particles.score, n)
    return {
        "ess": info.ess.astype(jnp.float32),
        "resampled": info.resampled,
        "mean_score": jnp.mean(score, axis=1),
        "max_score": jnp.max(score, axis=1),
        "log_Z": new.log_Z.astype(jnp.float32),
        "all_invalid": info.all_invalid,
        "num_non_finite_logits": info.num_non_finite_particles,
    }


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


def particle_filter(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
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
        prm_fn: ``(state, prompt_index [R]) -> [R]`` scores in [0, 1] of each prefix
            (never clipped: out of range counts in ``trace["num_bad_scores"]``).
        budget: per prompt: ``budget.sequences`` particles (a plain int means
            sequences); optional caps ``budget.tokens`` and ``budget.prm_calls``,
            enforced at run time (rows that cannot continue finish out of budget).
        prompts: ``[B, P]`` left-padded prompt tokens; ``prompt_mask`` ``[B, P]``.
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
            ``mean_score``, ``max_score``, ``log_Z``, ``all_invalid``,
            ``num_non_finite_logits`` (rows whose next-token logits hold a NaN/inf
            after the round's step; ``FINITE_LEAVES``), ``out_of_budget`` (rows
            stopped by a cap that round); and
            ``num_nan_scores`` (NaN PRM scores: weight 0, never the best) and
            ``num_bad_scores`` (scores outside [0, 1], treated as NaN; a concrete one
            is a ValueError, see ``steps.raw_scores``). ``info.spent()`` gives the
            per-prompt spending; ``info.bad_prompt_tokens`` counts out-of-range ids of
            prompts traced under ``jit``. With ``config.runtime_checks`` (under
            ``checkify``) such prompt ids, non-finite logits and a group whose
            log-weights are all invalid are errors.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import particle
        >>> result, info = particle.particle_filter(
        ...     jax.random.key(1), lm, prm_fn, 4, prompts=prompts, config=config)
        >>> result.tokens.shape, result.weights.shape, info.sequences
        ((2, 4, 4), (2, 4), 8)
        >>> info.trace["num_non_finite_logits"].tolist()
        [[0, 0], [0, 0]]
    """
    budget, n = steps.check_budget(budget, "particle_filter", config=config)
    config, n, tau = check_arguments(config, n, tau, weights, answer, resampling)

    def make_policy():
        return filter_policy(
            lm, n, config, tau=tau, weights=weights, resampling=resampling,
            ess_threshold=ess_threshold, answer=answer,
        )  # fmt: skip

    return driver.search_prompts(
        key, make_policy, lm=lm, prm_fn=prm_fn, prompts=prompts, prompt_mask=prompt_mask,
        rows_per_prompt=n, config=config, budget=budget, mesh=mesh,
    )  # fmt: skip


def _plan(budget, **options) -> dict:
    return steps.plan(budget, "particle_filter", **options)


core.register(
    core.SearchEntry(
        name="particle_filter",
        family="lm",
        fn=particle_filter,
        units=("sequences", "tokens", "prm_calls"),
        target="exact",
        plan=_plan,
        options={"weights": ("prm", "ratio"), "resampling": ("multinomial", "systematic")},
        reference="Puri et al. 2025",
        summary="particle filter over reasoning steps, resampled by softmax(logit(PRM) / tau)",
    )
)
