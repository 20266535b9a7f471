"""REBASE: reward-balanced tree search (Wu et al. 2024, "Inference Scaling Laws", section 3).

A tree search over reasoning steps with a fixed number of rows ``N`` per prompt
(``budget.sequences``). Round 0 samples ``N`` first steps from the prompt. After
every round, the group's finished leaves keep their rows and leave the budget;
the remaining ``m = N - finished`` rows are split among the frontier nodes (the
live rows) in proportion to ``softmax(score / T)``, rounded to integers with
the total fixed (largest remainders), and each frontier node is copied to its
share of the rows (one gather of tokens, logits and cache), whose next round
samples that many children. ``T -> 0`` expands only the best node (beam search
of width ``m``), a large ``T`` splits evenly.

A policy of ``inferax.search.lm.driver`` (the round loop, counters, caps, mesh).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from inferax.search import core
from inferax.search.lm import driver, steps
from inferax.search.lm import particle as lp

__all__ = ["allocate", "rebase"]


def allocate(scores: jax.Array, live: jax.Array, temperature: float) -> jax.Array:
    """Rows per node of one group: ``[n]`` int32 that sums to ``n``.

    Finished nodes (``~live``) keep one row each; the other ``m`` rows go to the
    live nodes in proportion to ``softmax(score / temperature)`` over them
    (floor, then one more to the largest remainders; ties by index). NaN scores
    get no share unless every live score is NaN (then the shares are equal).
    """
    n = scores.shape[0]
    m = jnp.sum(live, dtype=jnp.int32)
    s = jnp.where(jnp.isnan(scores), -jnp.inf, scores) / temperature
    s = jnp.where(live, s, -jnp.inf)
    s = jnp.where(jnp.all(~live | (s == -jnp.inf)), jnp.where(live, 0.0, -jnp.inf), s)
    raw = jax.nn.softmax(s) * m
    raw = jnp.where(live, raw, 0.0)
    base = jnp.floor(raw).astype(jnp.int32)
    frac = jnp.where(live, raw - base, -1.0)
    rank = jnp.argsort(jnp.argsort(-frac, stable=True), stable=True)
    extra = (rank < m - jnp.sum(base)).astype(jnp.int32)
    share = jnp.where(live, base + extra, 1)
    return jnp.where(m > 0, share, jnp.ones((n,), jnp.int32))


def rebase_policy(lm: Any, n: int, temperature: float, answer: str = "best") -> driver.Policy:
    """REBASE as a ``driver.Policy`` over ``particle.Population`` rows (``logg``/``base`` 0)."""
    axes = lp.population_axes(lm)

    def init(start: driver.Start):
        r = start.state.num_tokens.shape[0]
        half = jnp.full((r,), 0.5, jnp.float32)
        zeros = jnp.zeros((r,), jnp.float32)
        return lp.Population(start.state, half, zeros, zeros)

    def step(key, pop, rnd: driver.Round):
        k_gen, _ = steps.round_keys(key, 0)
        state, scores, out = rnd.extend(k_gen, pop.state, pop.score)
        pop = pop._replace(state=state, score=scores)
        live = steps.grouped(~state.finished, n)
        share = jax.vmap(lambda s, lv: allocate(s, lv, temperature))(steps.grouped(scores, n), live)
        parents = jax.vmap(lambda c: jnp.repeat(jnp.arange(n), c, total_repeat_length=n))(share)
        may = rnd.may_select(state)
        parents = jnp.where(may[:, None], parents, jnp.arange(n)[None])
        pop = steps.group_take(pop, parents.astype(jnp.int32), axes, n)
        trace = {
            "frontier": jnp.sum(live, axis=1, dtype=jnp.int32),
            "max_share": jnp.max(jnp.where(live, share, 0), axis=1),
            "max_score": jnp.max(steps.grouped(scores, n), axis=1),
        }
        return pop, out.ledger, trace

    def finish(pop):
        b = pop.score.shape[0] // n
        return lp.result_of(pop, jnp.zeros((b, n), jnp.float32), n, answer)

    return driver.Policy(init, step, finish, lambda pop: pop.state, axes)


def rebase(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    temperature: float = 0.2,
    answer: str = "best",
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """REBASE (Wu et al. 2024): reward-balanced expansion of a step tree.

    Args:
        key: PRNG key.
        lm: the decoding protocol.
        prm_fn: ``(state, prompt_index) -> [R]`` scores in [0, 1] of each prefix.
        budget: per prompt: ``budget.sequences`` rows ``N`` (the expansion budget
            of every depth; a plain int means sequences); optional caps
            ``tokens`` / ``prm_calls``, enforced at run time.
        prompts: ``[B, P]`` left-padded prompt tokens.
        prompt_mask: ``[B, P]`` bool, False on pads (default all True).
        config: ``StepConfig`` (static).
        temperature: ``T`` of the balancing ``softmax(score / T)`` (> 0).
        answer: ``"best"`` or ``"weighted"`` (uniform weights), as ``particle_filter``.
        mesh: optional ``"particles"`` mesh.

    Returns:
        ``(LMSearchResult, LMSearchInfo)``; ``trace`` (``[max_steps, B]``):
            ``frontier`` (live nodes after the round), ``max_share`` (the most rows
            a node got), ``max_score``, ``num_finished``, ``out_of_budget``,
            ``num_non_finite_logits`` (rows whose next-token logits held a NaN/inf
            after the round's step; a ``checkify`` error with
            ``config.runtime_checks``).

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import rebase
        >>> result, info = rebase.rebase(
        ...     jax.random.key(1), lm, prm_fn, 4, prompts=prompts, config=config)
        >>> result.tokens.shape, info.trace["frontier"].shape
        ((2, 4, 4), (2, 2))
    """
    budget, n = steps.check_budget(budget, "rebase", config=config)
    config, n, _ = lp.check_arguments(config, n, 1.0, "prm", answer)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature: expected a float > 0, got {temperature!r}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a float > 0, got {temperature!r}")
    return driver.search_prompts(
        key, lambda: rebase_policy(lm, n, float(temperature), answer), lm=lm, prm_fn=prm_fn,
        prompts=prompts, prompt_mask=prompt_mask, rows_per_prompt=n, config=config,
        budget=budget, mesh=mesh,
    )  # fmt: skip


def _plan(budget, **options) -> dict:
    return steps.plan(budget, "rebase", **options)


core.register(
    core.SearchEntry(
        name="rebase",
        family="lm",
        fn=rebase,
        units=("sequences", "tokens", "prm_calls"),
        target="heuristic",
        plan=_plan,
        options={"temperature": (0.2, 5.0)},
        reference="Wu et al. 2024",
        summary="reward-balanced tree search: each depth's rows split by softmax(PRM / T)",
    )
)
