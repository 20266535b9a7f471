"""SMC steering of a language model with constraints and potentials (Lew et al. 2023, LLaMPPL).

A user states a probabilistic program over partial generations through two
callables:

- a token-level constraint, ``config.logits_hook(logits [R, V], state) ->
  logits``, applied to the log-probabilities of ``p``, the LM's sampling law
  (its logits through temperature / top-k / top-p), gives the proposal ``q``
  the tokens are drawn from (e.g. ``-inf`` on tokens a format forbids). Each
  drawn token ``x`` contributes the importance weight ``log p(x) - log q(x)``:
  for a pure mask this is ``log`` of the mass ``p`` puts on the allowed tokens,
  and the target keeps exactly the paths the constraint allows. (The hook sees
  the processed logits, not the raw ones as in ``decoding.generate``: hooking
  before the nucleus would renormalise first and never propose allowed tokens
  that are in ``p``'s nucleus but not in the masked one's.);
- a step potential, ``potential_fn(state, prompt_index [R]) -> [R]``: the log
  factor of the step each row just took, computed on its whole prefix
  (``-inf``: a condition is violated; LLaMPPL's ``score`` / ``condition``).

The target is ``p(path) 1[allowed] prod_t exp(potential_t) / Z``. Standard SMC
(``expand=1``) resamples a prompt's particles when ``ESS < ess_threshold N``
(0.5) and resets their weights to ``logsumexp(w) - log N``, keeping the evidence
estimate: ``exp(log_Z)`` is unbiased for ``Z = sum_paths p(path) 1[allowed]
prod_t exp(potential_t)`` (``trace["log_Z"]``). The steering variant
(``expand=K``) gives every particle ``K`` children (each with its own step),
each starting from ``1 / K`` of its parent's weight, and resamples the ``K N``
children back to ``N`` every round (the SMC core's expand-then-resample); the
default scheme, systematic, selects each child at most once when no child
holds more than ``1 / N`` of the mass (resampling without replacement).

Both run on ``inferax.sampling.smc`` with the prompts as groups and one
batched decode of all rows per round (``lm_particle.run_rounds``); finished
particles stand still with their weight.

Example constraints for the project's arithmetic task (a format hook and a
"no repeated result" potential) live with the task, in ``inferax.models.arithmetic``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inferax.sampling import _checks, particles
from inferax.sampling import smc as smc_lib
from inferax.search.lm import decoding as dec
from inferax.search.lm import particle as lp
from inferax.search.lm import steps

__all__ = [
    "generate_weighted",
    "smc_steer",
    "steer_smc",
]

PotentialFn = Callable[[dec.DecodeState, jax.Array], jax.Array]


def generate_weighted(
    key: jax.Array, lm: Any, state: dec.DecodeState, config: steps.StepConfig, first_index: int = 0
) -> tuple[dec.DecodeState, jax.Array, dec.DecodeInfo]:
    """One reasoning step for every live row, drawn from the hooked proposal ``q``.

    ``p`` is the LM's sampling law (``decoding.process_logits``: temperature,
    top-k, top-p) and ``q`` the hook applied to it: ``q = softmax(hook(log p))``.
    For a mask, ``q`` is ``p`` restricted to the allowed tokens and renormalised,
    so every token the target ``p 1[allowed]`` can emit is proposed. (Hooking the
    raw logits before the nucleus, as ``decoding.generate`` does, would
    renormalise first and let the nucleus drop allowed tokens of ``p``'s support:
    a biased evidence.) The tokens are therefore those of ``generate`` with the
    same key when there is no hook, or when the hook is a mask and ``top_k`` /
    ``top_p`` are off; in general they differ. Each row accumulates
    ``sum_x log p(x) - log q(x)`` over the tokens it drew; a row whose hooked
    law has no mass left draws from ``p`` with log-ratio ``-inf``.

    Returns:
        ``(state, log_ratio [R], info)``.
    """
    temperature, top_k, top_p = dec.check_sampling(
        config.temperature, config.top_k, config.top_p, lm.vocab_size
    )
    if temperature == 0:
        raise ValueError("config.temperature: expected > 0 for SMC steering (a proposal), got 0")
    hook = config.logits_hook
    n, cap = state.tokens.shape
    rows = jnp.arange(n)

    def active_of(s, stopped):
        return ~s.finished & ~stopped & (s.num_tokens < cap)

    def body(carry):
        s, stopped, spent, calls, log_ratio = carry
        active = active_of(s, stopped)
        x_p = dec.process_logits(s.logits, temperature, top_k, top_p)
        x_q = x_p if hook is None else hook(x_p, s).astype(x_p.dtype)
        dead = ~jnp.any(x_q > -jnp.inf, axis=-1)  # the hook left no token of p
        x_q = jnp.where(dead[:, None], x_p, x_q)
        keys = dec.row_keys(key, first_index, n, s.num_tokens)
        tok = jax.vmap(jax.random.categorical)(keys, x_q).astype(jnp.int32)
        lp_p, lp_q = jax.nn.log_softmax(x_p), jax.nn.log_softmax(x_q)
        corr = jnp.where(dead, -jnp.inf, lp_p[rows, tok] - lp_q[rows, tok])
        log_ratio = log_ratio + jnp.where(active, corr, 0.0)
        out, is_step = dec.advance(lm, s, tok, active, eos_id=config.eos_id,
                                   step_id=config.step_id, pad_id=config.pad_id)  # fmt: skip
        spent = spent + jnp.sum(active, dtype=jnp.int32)
        return out, stopped | is_step, spent, calls + 1, log_ratio

    zero = jnp.zeros((), jnp.int32)
    init = (state, jnp.zeros((n,), bool), zero, zero, jnp.zeros((n,), jnp.float32))
    state, _, spent, calls, log_ratio = jax.lax.while_loop(
        lambda c: jnp.any(active_of(c[0], c[1])), body, init
    )
    return state, log_ratio, dec.DecodeInfo(n, spent, calls, zero)


def steer_smc(
    lm: Any,
    potential_fn: PotentialFn,
    prompt_index: jax.Array,
    config: steps.StepConfig,
    *,
    expand: int = 1,
    resampling: str | Callable | None = None,
    ess_threshold: float = 0.5,
) -> smc_lib.SMC:
    """SMC steering as an SMC algorithm over ``lm_particle.Population`` particles.

    ``score`` holds each row's summed log-potential. The transition's ``aux`` is
    ``(generated_tokens, decode_steps, potential_calls, num_nan_potentials)``.
    """
    if not callable(potential_fn):
        raise TypeError(
            f"potential_fn: expected a callable (state, prompt_index) -> [R], got {potential_fn!r}"
        )
    k = _checks.positive_int(expand, "expand")
    if resampling is None:
        resampling = "multinomial" if k == 1 else "systematic"
    axes = lp.population_axes(lm)
    pidx = jnp.repeat(prompt_index, k)

    def transition(key, pop: lp.Population, i):
        if k > 1:  # K children per particle, rows i K .. i K + K - 1
            r = pop.score.shape[0]
            pop = particles.take(
                pop, jnp.repeat(jnp.arange(r), k), particles.leaf_axes(axes, pop, "population")
            )
        state, log_ratio, info = generate_weighted(key, lm, pop.state, config)
        moved = state.num_tokens > pop.state.num_tokens
        phi = jnp.asarray(potential_fn(state, pidx))
        if phi.shape != pidx.shape:
            raise ValueError(f"potential_fn: expected shape {pidx.shape}, got {phi.shape}")
        phi = phi.astype(jnp.float32)
        inc = jnp.where(moved, phi + log_ratio, 0.0)
        score = pop.score + jnp.where(moved, phi, 0.0)
        calls = jnp.sum(moved, dtype=jnp.int32)
        nan = jnp.sum(moved & jnp.isnan(phi), dtype=jnp.int32)
        aux = (info.generated_tokens, info.decode_steps, calls, nan)
        return pop._replace(state=state, score=score), inc, aux

    return smc_lib.build(
        transition, resampling=resampling, ess_threshold=ess_threshold, particle_axes=axes
    )


def smc_steer(
    key: jax.Array,
    lm: Any,
    potential_fn: PotentialFn,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_particles: int,
    config: steps.StepConfig,
    expand: int = 1,
    resampling: str | Callable | None = None,
    ess_threshold: float = 0.5,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """SMC steering over reasoning steps (Lew et al. 2023; module docstring).

    Args:
        key: PRNG key.
        lm: the decoding protocol; ``config.logits_hook`` is the token-level
            constraint / proposal (``config.temperature`` must be > 0).
        potential_fn: ``(state, prompt_index [R]) -> [R]`` log-potential of the
            step each row just took (``-inf``: condition violated).
        prompts, prompt_mask: ``[B, P]`` left-padded prompts.
        num_particles: ``N`` particles per prompt.
        expand: ``K`` children per particle and round (1: standard SMC).
        resampling: scheme name or callable (default multinomial; systematic when
            ``expand > 1``).
        ess_threshold: resample when ``ESS < ess_threshold * N`` (``expand = 1``).
        mesh: optional ``"particles"`` mesh to shard the rows over (under ``jit``).

    Returns:
        ``(LMSearchResult, LMSearchInfo)``: ``scores`` are the candidates' summed
        log-potentials, ``weights`` the final normalised weights, ``choice`` the
        heaviest candidate. ``trace`` (``[max_steps, B]``): ``ess``,
        ``resampled``, ``num_finished``, ``mean_score`` / ``max_score`` (of the
        log-potentials), ``log_Z`` (running evidence estimate; the last row is
        the final one), ``all_invalid``. Spent: ``B N`` sequences (``B N K``
        rows decode each round when expanding), generated tokens, and
        ``prm_calls`` = potential evaluations of rows that moved.
    """
    if not isinstance(config, steps.StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    config = config.checked()
    n = _checks.positive_int(num_particles, "num_particles")
    b = jnp.shape(prompts)[0]
    k = _checks.positive_int(expand, "expand")
    mesh = lp.check_mesh(mesh, b * n)
    if not callable(potential_fn):
        raise TypeError(
            f"potential_fn: expected a callable (state, prompt_index) -> [R], got {potential_fn!r}"
        )
    if config.temperature == 0:
        raise ValueError("config.temperature: expected > 0 for SMC steering (a proposal), got 0")
    pop, prompt_index, info0 = lp.init_population(lm, prompts, prompt_mask, n, config)
    pop = pop._replace(score=jnp.zeros_like(pop.score))
    alg = steer_smc(
        lm, potential_fn, prompt_index, config, expand=k, resampling=resampling,
        ess_threshold=ess_threshold,
    )  # fmt: skip
    with lp.mesh_context(mesh):
        st = alg.init(pop, jnp.zeros((b, n), jnp.float32))
        final, counts, trace, rounds = lp.run_rounds(
            key, alg, st, n, config, lp.population_axes(lm), absolute_base=False, mesh=mesh
        )
    res = lp.result_of(final.particles, final.log_weights, n, "best")
    choice = jnp.argmax(res.weights, axis=1).astype(jnp.int32)
    res = res._replace(choice=choice)
    info = lp.search_info(
        b * n, counts, info0.prompt_tokens, rounds, trace, nan_name="num_nan_potentials"
    )
    return res, info
