"""Particle Gibbs over reasoning steps (Puri et al. 2025; conditional SMC).

Particle Gibbs repeats the particle filter of ``inferax.search.lm.particle`` as
conditional SMC (Andrieu, Doucet & Holenstein 2010): one reference
trajectory, drawn from the previous iteration's final weights, sits at row 0 of
its prompt group, is replayed token by token through the LM (the logits hook
forces its tokens), and always keeps itself as one ancestor when the group
resamples (conditional resampling); it competes with ``N - 1`` fresh particles
at the same step index. Conditional SMC leaves the filter's final target
invariant for any ``N``; its weighting (``"prm"`` / ``"ratio"``) is the filter's.

The iterations are one ``lax.scan``; each runs the filter's round loop
(``driver.run``, the filter's policy) on the same grouped SMC core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.sampling import resampling as resampling_lib
from inferax.search import core
from inferax.search.lm import driver, steps
from inferax.search.lm import particle as lp

__all__ = ["conditional", "particle_gibbs"]


def conditional(resampler: Callable, has_reference: jax.Array) -> Callable:
    """Conditional resampling: row 0 (the reference) always keeps itself as ancestor.

    ``resampler(key, log_weights, n)`` draws all ``n`` ancestors and row 0's is
    replaced by 0: for multinomial resampling this is conditional multinomial
    resampling (the other ``n - 1`` are i.i.d. from the weights).
    """

    def draw(key, log_weights, num):
        a = resampler(key, log_weights, num)
        return jnp.where(has_reference & (jnp.arange(num) == 0), 0, a)

    return draw


def _replay_hook(user_hook, ref_tokens, n, has_reference):
    """Forces row 0 of every group to emit its reference's next token."""

    def hook(logits, state):
        if user_hook is not None:
            logits = user_hook(logits, state)
        r, v = logits.shape
        ref = jnp.repeat(ref_tokens, n, axis=0)  # [R, T]
        j = jnp.clip(state.num_tokens, 0, ref.shape[1] - 1)
        want = jnp.take_along_axis(ref, j[:, None], axis=1)
        is_ref = has_reference & (jnp.arange(r) % n == 0)
        forced = jnp.where(jnp.arange(v)[None] == want, 0.0, -jnp.inf).astype(logits.dtype)
        return jnp.where(is_ref[:, None], forced, logits)

    return hook


def particle_gibbs(
    key: jax.Array,
    lm: Any,
    prm_fn: steps.PRMFn,
    budget: core.Budget | int,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    config: steps.StepConfig,
    num_iterations: int,
    tau: float = 1.0,
    weights: str = "prm",
    resampling: str | Callable = "multinomial",
    ess_threshold: float = 1.0,
    answer: str = "best",
    reference: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """Particle Gibbs over reasoning steps (Puri et al. 2025; conditional SMC).

    Iteration ``j`` (key ``fold_in(key, j)``) runs the particle filter with
    ``N - 1`` fresh particles and the reference at row 0 of every prompt group
    (replayed through the LM, never resampled away); its new reference is
    drawn from the final weights (``softmax(logit(r_T) / tau)`` in ``"prm"``
    mode). Iteration 0 is a plain filter unless ``reference`` is given.

    Args:
        budget: per prompt: ``budget.sequences`` rows over all iterations
            (``N = budget.sequences // num_iterations`` particles per sweep; a
            plain int means sequences); optional caps ``tokens`` / ``prm_calls``
            over all iterations, enforced at run time.
        num_iterations: filter sweeps.
        reference: optional ``[B, max_new_tokens]`` generated tokens of the
            initial reference trajectory of every prompt.
        key: PRNG key (as ``particle_filter``).
        lm: the decoding protocol.
        prm_fn: ``(state, prompt_index [R]) -> [R]`` scores in [0, 1].
        prompts: ``[B, P]`` left-padded prompt tokens.
        prompt_mask: ``[B, P]`` bool, False on pads (default all True).
        config: ``StepConfig`` (static).
        tau: temperature of the resampling probabilities (``particle_filter``).
        weights: ``"prm"`` or ``"ratio"`` (``particle_filter``).
        resampling: a scheme name of ``inferax.sampling.resampling`` or a callable.
        ess_threshold: resample when ``ESS < ess_threshold * N`` (1: every step).
        answer: ``"best"`` or ``"weighted"`` (``particle_filter``).
        mesh: optional ``"particles"`` mesh (``particle_filter``).

    Returns:
        The final iteration's ``(LMSearchResult, LMSearchInfo)``; the info counts
            all iterations (``sequences = B N num_iterations``; the reference's replayed
            tokens are decoded, so they are in ``generated_tokens``, and reported
            apart in ``trace["replayed_tokens"]`` ``[num_iterations, B]``);
            ``trace["iteration_log_Z"]`` ``[num_iterations, B]``,
            ``trace["reference_tokens"]`` ``[num_iterations, B, max_new_tokens]`` (the
            reference each iteration kept at row 0; zeros when there was none); the
            per-round arrays are the final iteration's.

    Example:
        With ``lm``, ``prompts``, ``prm_fn`` and ``config`` from the package example
        (``inferax.search.lm``):

        >>> from inferax.search.lm import gibbs
        >>> result, info = gibbs.particle_gibbs(
        ...     jax.random.key(1), lm, prm_fn, 4, prompts=prompts, config=config, num_iterations=2)
        >>> result.tokens.shape, info.sequences, info.trace["iteration_log_Z"].shape
        ((2, 2, 4), 8, (2, 2))
    """
    iters = _checks.positive_int(num_iterations, "num_iterations")
    budget, n = steps.check_budget(budget, "particle_gibbs", config=config, sequences_per_row=iters)
    config, n, tau = lp.check_arguments(config, n, tau, weights, answer, resampling)
    b = jnp.shape(prompts)[0]
    mesh = driver.check_mesh(mesh, b * n)
    ref0, has0 = _reference(reference, b, config.max_new_tokens)
    start = driver.start(lm, prompts, prompt_mask, n, config)
    base_resampler = resampling if callable(resampling) else resampling_lib.get(resampling)
    prm_fn = steps.check_prm(prm_fn)

    def sweep(ref, has_ref, k, ledger):
        cfg = config._replace(logits_hook=_replay_hook(config.logits_hook, ref, n, has_ref))
        policy = lp.filter_policy(
            lm, n, cfg, tau=tau, weights=weights, ess_threshold=ess_threshold, answer=answer,
            resampling=conditional(base_resampler, has_ref),
        )  # fmt: skip
        k_rounds, k_ref = jax.random.split(k)
        final, ledger, trace, rounds = driver.run(
            k_rounds, policy, policy.init(start), lm=lm, prm_fn=prm_fn,
            prompt_index=start.prompt_index, config=config, ledger=ledger, budget=budget,
            mesh=mesh,
        )  # fmt: skip
        lw = resampling_lib.sanitize(final.log_weights.reshape(-1)).reshape(b, n)
        rows = jnp.arange(b) * n + jax.random.categorical(k_ref, lw, axis=-1)
        new_ref = final.particles.state.tokens[rows]
        replayed = jnp.where(has_ref, final.particles.state.num_tokens[jnp.arange(b) * n], 0)
        last = (final, trace, rounds)
        return new_ref, last, ledger, (replayed, jnp.where(has_ref, ref, 0))

    def body(carry, j):
        ref, has_ref, ledger, _ = carry
        new_ref, last, ledger, replayed = sweep(ref, has_ref, jax.random.fold_in(key, j), ledger)
        return (new_ref, jnp.array(True), ledger, last), (*replayed, last[0].log_Z)

    ledger0 = steps.Ledger.zeros(b)
    with driver.mesh_context(mesh):
        # The final iteration's population rides in the carry (not stacked per iteration).
        last0 = jax.tree_util.tree_map(
            lambda a: jnp.zeros(a.shape, a.dtype),
            jax.eval_shape(lambda: sweep(ref0, has0, key, ledger0)[1]),
        )
        (_, _, ledger, last), (replayed, refs, log_zs) = jax.lax.scan(
            body, (ref0, has0, ledger0, last0), jnp.arange(iters)
        )
    final, trace, num_rounds = last
    res = lp.result_of(final.particles, final.log_weights, n, answer)
    trace = dict(trace, replayed_tokens=replayed, iteration_log_Z=log_zs, reference_tokens=refs)
    return res, driver.info_of(b * n * iters, ledger, start, num_rounds, trace, budget)


def _reference(reference, b, cap):
    if reference is None:
        return jnp.zeros((b, cap), jnp.int32), jnp.array(False)
    ref = jnp.asarray(reference)
    if ref.shape != (b, cap) or not jnp.issubdtype(ref.dtype, jnp.integer):
        raise ValueError(
            f"reference: expected int tokens of shape {(b, cap)}, got {ref.dtype} {ref.shape}"
        )
    return ref.astype(jnp.int32), jnp.array(True)


def _plan(budget, *, num_iterations: int = 1, **options) -> dict:
    iters = _checks.positive_int(num_iterations, "num_iterations")
    return steps.plan(budget, "particle_gibbs", sequences_per_row=iters, **options)


core.register(
    core.SearchEntry(
        name="particle_gibbs",
        family="lm",
        fn=particle_gibbs,
        units=("sequences", "tokens", "prm_calls"),
        target="exact",
        plan=_plan,
        options={"num_iterations": (1, 2)},
        reference="Puri et al. 2025; Andrieu, Doucet & Holenstein 2010",
        summary="particle Gibbs (conditional SMC) sweeps of the step-level particle filter",
    )
)
