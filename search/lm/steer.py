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

Steering is a policy of the round driver (``inferax.search.lm.driver``) over
``inferax.sampling.smc`` with the prompts as groups and one batched decode of
all rows per round; finished particles stand still with their weight. The
budget is per prompt: ``budget.sequences`` particles; ``budget.tokens`` and
``budget.prm_calls`` (potential evaluations) are caps enforced at run time: a
group whose live rows cannot all be evaluated stops (its rows finish out of
budget), and each live row may decode at most its equal share of the group's
tokens left in a round (a row that reaches it finishes out of budget). Rows
stopped by a cap leave the target's support (their step is incomplete), so the
law is exact only for runs whose trace ``out_of_budget`` is all zero.

With ``tau`` set, the verifier is a process reward model (scores in [0, 1]) and
the step potential is ``logit(r_t) / tau``: the target ``p(path) prod_t
g(r_t)`` of Puri et al.'s particle filter, with steering's proposal correction
and expansion (the LM searches' shared verifier protocol).

Example constraints for the project's arithmetic task (a format hook and a
"no repeated result" potential) live with the task, in ``inferax.models.arithmetic``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inferax.sampling import _checks, particles
from inferax.sampling import resampling as resampling_lib
from inferax.sampling import smc as smc_lib
from inferax.search import core
from inferax.search.lm import beam, driver, steps
from inferax.search.lm import decoding as dec
from inferax.search.lm import particle as lp

__all__ = [
    "generate_weighted",
    "plan",
    "smc_steer",
    "steer_policy",
]

PotentialFn = Callable[[dec.DecodeState, jax.Array], jax.Array]


def generate_weighted(
    key: jax.Array,
    lm: Any,
    state: dec.DecodeState,
    config: steps.StepConfig,
    first_index: int = 0,
    allowance: jax.Array | None = None,
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

    ``allowance`` (``[R]`` int32, optional): the most tokens each row may decode
    in this call; a row that reaches it before its step ends is finished and
    flagged in ``info.out_of_budget``.

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

    start = state.num_tokens
    allow = jnp.full((n,), cap, jnp.int32) if allowance is None else allowance

    def unfinished(s, stopped):
        return ~s.finished & ~stopped & (s.num_tokens < cap)

    def active_of(s, stopped):
        return unfinished(s, stopped) & (s.num_tokens - start < allow)

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
    state, stopped, spent, calls, log_ratio = jax.lax.while_loop(
        lambda c: jnp.any(active_of(c[0], c[1])), body, init
    )
    oob = unfinished(state, stopped)  # stopped by the allowance
    state = state._replace(finished=state.finished | oob)
    return state, log_ratio, dec.DecodeInfo(n, spent, calls, zero, None, oob)


def _capped(
    state: dec.DecodeState,
    prompt_index: jax.Array,
    b: int,
    tokens_left: jax.Array,
    calls_left: jax.Array,
) -> tuple[dec.DecodeState, jax.Array, jax.Array]:
    """Stops the groups whose live rows cannot all be evaluated (``calls_left``) and
    gives every live row its equal share of its group's ``tokens_left``.

    Returns:
        ``(state, allowance, cut)``: ``allowance [R]`` tokens each row may decode,
            ``cut [R]`` rows stopped.
    """
    live = ~state.finished
    per_group = jax.ops.segment_sum(live.astype(jnp.int32), prompt_index, b)
    cut = live & (per_group > calls_left)[prompt_index]
    allowance = tokens_left[prompt_index] // jnp.maximum(per_group[prompt_index], 1)
    return state._replace(finished=state.finished | cut), allowance, cut


def plan(budget, *, config: steps.StepConfig, expand: int = 1) -> dict:
    """What ``budget`` buys SMC steering (static): ``budget.sequences`` particles, each
    decoding ``expand`` children per round; the most a prompt can spend in tokens and
    potential calls (``beam.rounds_plan``).

    Raises:
        ValueError: naming ``budget`` (no sequences), ``expand`` or ``config``.
    """
    k = _checks.positive_int(expand, "expand")
    return beam.rounds_plan(budget, "smc_steer", config=config, rows_per_sequence=k)


def steer_policy(
    lm: Any,
    potential_fn: PotentialFn,
    n: int,
    config: steps.StepConfig,
    *,
    expand: int = 1,
    resampling: str | Callable | None = None,
    ess_threshold: float = 0.5,
    tau: float | None = None,
) -> driver.Policy:
    """SMC steering as a ``driver.Policy`` over ``SMCState(Population)`` states.

    ``score`` holds each row's summed log-potential. Trace (``[max_steps, B]``):
    ``ess``, ``resampled``, ``mean_score`` / ``max_score`` (of the summed
    log-potentials), ``log_Z`` (running evidence estimate), ``all_invalid``,
    ``num_non_finite_logits`` (rows, of the ``K N`` children when expanding, whose
    next-token logits hold a NaN/inf; ``particle.FINITE_LEAVES``).
    """
    k = _checks.positive_int(expand, "expand")
    if resampling is None:
        resampling = "multinomial" if k == 1 else "systematic"
    axes = lp.population_axes(lm)

    def transition(rnd: driver.Round):
        def move(key, pop: lp.Population, i):
            b = rnd.ledger.tokens.shape[0]
            pidx = jnp.repeat(rnd.prompt_index, k)
            if k > 1:  # K children per particle, rows i K .. i K + K - 1
                rows = jnp.repeat(jnp.arange(pop.score.shape[0]), k)
                pop = particles.take(pop, rows, particles.leaf_axes(axes, pop, "population"))
            tok_left, calls_left = rnd.ledger.left(rnd.budget)
            state, allowance, cut = _capped(pop.state, pidx, b, tok_left, calls_left)
            state, log_ratio, info = generate_weighted(key, lm, state, config, allowance=allowance)
            moved = state.num_tokens > pop.state.num_tokens
            phi = _potential(potential_fn, state, pidx, tau)
            inc = jnp.where(moved, phi + log_ratio, 0.0)
            per = functools.partial(jax.ops.segment_sum, segment_ids=pidx, num_segments=b)
            led = rnd.ledger
            ledger = steps.Ledger(
                led.tokens + per(state.num_tokens - pop.state.num_tokens),
                led.prm_calls + per(moved.astype(jnp.int32)),
                led.decode_steps + info.decode_steps,
                led.num_nan + jnp.sum(moved & jnp.isnan(phi), dtype=jnp.int32),
                led.out_of_budget + per((cut | info.out_of_budget).astype(jnp.int32)),
                led.num_bad,
                None
                if led.non_finite_logits is None
                else led.non_finite_logits
                + per(steps.non_finite_logits(state.logits).astype(jnp.int32)),
            )
            score = pop.score + jnp.where(moved, phi, 0.0)
            return pop._replace(state=state, score=score), inc, ledger

        return move

    def init(start: driver.Start):
        r = start.state.num_tokens.shape[0]
        zeros = jnp.zeros((r,), jnp.float32)
        pop = lp.Population(start.state, zeros, zeros, zeros)
        return smc_lib.init(pop, jnp.zeros((start.num_prompts, n), jnp.float32), particle_axes=axes)

    def step(key, st, rnd: driver.Round):
        alg = smc_lib.build(
            transition(rnd), resampling=resampling, ess_threshold=ess_threshold,
            particle_axes=axes, check_finite=lp.FINITE_LEAVES,
            runtime_checks=config.runtime_checks,
        )  # fmt: skip
        new, info = alg.step(key, st, rnd.index, lambda p: rnd.may_select(p.state))
        return new, info.aux, lp.smc_trace(new, info, n)

    def finish(st):
        res = lp.result_of(st.particles, st.log_weights, n, "best")
        return res._replace(choice=jnp.argmax(res.weights, axis=1).astype(jnp.int32))

    return driver.Policy(
        init, step, finish, lambda st: st.particles.state, smc_lib.SMCState(axes, None, None)
    )


def _potential(potential_fn, state, pidx, tau):
    phi = jnp.asarray(potential_fn(state, pidx))
    if phi.shape != pidx.shape:
        raise ValueError(f"potential_fn: expected shape {pidx.shape}, got {phi.shape}")
    phi = phi.astype(jnp.float32)
    return phi if tau is None else steps.resample_prob_logits(phi, tau)


def smc_steer(
    key: jax.Array,
    lm: Any,
    potential_fn: PotentialFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    expand: int = 1,
    resampling: str | Callable | None = None,
    ess_threshold: float = 0.5,
    tau: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """SMC steering over reasoning steps (Lew et al. 2023; module docstring).

    Args:
        key: PRNG key.
        lm: the decoding protocol; ``config.logits_hook`` is the token-level
            constraint / proposal (``config.temperature`` must be > 0).
        potential_fn: ``(state, prompt_index [R]) -> [R]`` log-potential of the
            step each row just took (``-inf``: condition violated); with ``tau``,
            a PRM (scores in [0, 1]) whose ``logit(r) / tau`` is the potential.
        budget: per prompt (``core.Budget`` or an int = sequences):
            ``budget.sequences`` particles ``N``; caps ``budget.tokens`` and
            ``budget.prm_calls`` (potential evaluations) enforced at run time.
        prompts: ``[B, P]`` left-padded prompt tokens.
        prompt_mask: ``[B, P]`` bool, the real prompt tokens (default: all).
        config: ``StepConfig``.
        expand: ``K`` children per particle and round (1: standard SMC).
        resampling: scheme name or callable (default multinomial; systematic when
            ``expand > 1``).
        ess_threshold: resample when ``ESS < ess_threshold * N`` (``expand = 1``).
        tau: None (``potential_fn`` is a log-potential) or a float > 0 (a PRM).
        mesh: optional ``"particles"`` mesh to shard the rows over (under ``jit``).

    Returns:
        ``(LMSearchResult, LMSearchInfo)``: ``scores`` are the candidates' summed
            log-potentials, ``weights`` the final normalised weights, ``choice`` the
            heaviest candidate. ``trace``: ``steer_policy``'s, the driver's
            ``num_finished`` / ``out_of_budget``, and ``num_nan_scores`` (NaN
            potentials). Spent per prompt (``info.spent()``): ``N`` sequences (``N K``
            rows decode each round when expanding), generated tokens, and
            ``prm_calls`` = potential evaluations of rows that moved.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import steer
        >>> potential_fn = lambda state, prompt_index: jnp.zeros(prompt_index.shape)
        >>> result, info = steer.smc_steer(
        ...     jax.random.key(1), lm, potential_fn, 4, prompts=prompts, config=config)
        >>> result.tokens.shape, info.trace["log_Z"].shape
        ((2, 4, 4), (2, 2))
    """
    n = plan(budget, config=config, expand=expand)["population"]
    budget = core.as_budget(budget, "sequences")
    if not callable(potential_fn):
        raise TypeError(
            f"potential_fn: expected a callable (state, prompt_index) -> [R], got {potential_fn!r}"
        )
    if config.temperature == 0:
        raise ValueError("config.temperature: expected > 0 for SMC steering (a proposal), got 0")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int | float) or tau <= 0):
        raise ValueError(f"tau: expected None or a float > 0, got {tau!r}")
    if not callable(resampling) and resampling is not None:
        resampling_lib.get(resampling)  # ValueError naming "resampling"

    def make_policy():
        return steer_policy(
            lm, potential_fn, n, config, expand=expand, resampling=resampling,
            ess_threshold=ess_threshold, tau=tau,
        )  # fmt: skip

    # potential_fn is callable (checked above): search_prompts' PRM check passes it as is
    return driver.search_prompts(
        key, make_policy, lm=lm, prm_fn=potential_fn, prompts=prompts, prompt_mask=prompt_mask,
        rows_per_prompt=n, config=config, budget=budget, mesh=mesh,
    )  # fmt: skip


core.register(
    core.SearchEntry(
        "smc_steer",
        "lm",
        smc_steer,
        ("sequences", "tokens", "prm_calls"),
        "exact",
        plan,
        options={"expand": (1, 2)},
        reference="Lew et al. 2023 (LLaMPPL, SMC steering)",
        summary="SMC with constraints (a logits mask, exactly corrected) and step potentials; "
        "expand-then-resample",
    )  # fmt: skip
)
