"""One round driver for the language-model searches.

Every step-level LM search repeats rounds: extend every live row by one
reasoning step (``steps.extend``: one batched ``decoding.generate`` and one
PRM call per row that moved), then weigh and select rows (resample, keep the
best, expand). A search is a ``Policy``; ``run`` owns what they share:

- the ``lax.while_loop`` over rounds and its stopping rule (every row
  finished, or ``config.max_steps`` rounds);
- the counters, per prompt (``steps.Ledger``: tokens, PRM calls, decode steps,
  NaN scores, scores outside ``[0, 1]`` (treated as NaN), rows stopped out of
  budget);
- the budget caps (per prompt): a ``Round`` hands the policy an ``extend``
  that decodes a group only while its token cap allows and scores it only
  while its PRM calls fit (``steps.extend``), so no search can overspend;
- the per-round trace ``[max_steps, B]`` (policy entries plus ``num_finished``,
  ``out_of_budget`` and ``num_non_finite_logits``, the rows whose next-token
  logits hold a NaN/inf after the round's step: a ``checkify`` error with
  ``config.runtime_checks``);
- the mesh: every per-row leaf of the policy state is pinned to the
  ``"particles"`` axis (``constrain``) each round.

A ``Policy(init, step, finish, rows, axes)``:

- ``init(start) -> pstate`` from the prefilled population (``Start``);
- ``step(key, pstate, rnd: Round) -> (pstate, ledger, trace)``: one round;
  it calls ``rnd.extend`` (the only way to generate and score) and selects.
  ``rnd.may_select(state)`` is False for groups whose rows all finished and in
  the last round (a search does not select after its final round). Weighting
  and selection are plain functions of the policy, and they see
  ``state.finished`` (finished rows stay in the pool, never re-extended);
- ``finish(pstate) -> LMSearchResult``;
- ``rows(pstate) -> DecodeState`` (the done mask), ``axes``: the particle axes
  of ``pstate`` (a ``particles.take`` prefix).

How the searches fit (helper ports): the particle filter and particle Gibbs
(``particle``, ``gibbs``) are SMC policies (weigh by the PRM, resample); SMC
steering is the same policy with its own weighting (``steer``). Beam search is
a policy whose selection keeps the top ``N / width`` rows of a group by score
and expands each ``width`` times (``group_take``); DVTS is beam search with the
group split into independent subtrees (selection within each subtree). REBASE
(``rebase``) allocates the group's remaining rows to frontier nodes by
``softmax(score / T)``. MCTS is a policy whose round is one simulation
(select a leaf by UCT, ``rnd.extend`` it, back up), its ``simulations`` count
kept in its state and reported through ``LMSearchInfo.simulations_per_prompt``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.sampling import particles
from inferax.sampling import smc as smc_lib
from inferax.search import core
from inferax.search.lm import decoding as dec
from inferax.search.lm import steps

__all__ = [
    "Policy",
    "Round",
    "Start",
    "check_mesh",
    "constrain",
    "info_of",
    "mesh_context",
    "run",
    "search",
    "search_prompts",
    "start",
]


class Start(NamedTuple):
    """The prefilled population a policy starts from.

    Attributes:
        state: ``DecodeState`` with ``rows_per_prompt`` rows per prompt (group-major).
        prompt_index: ``[R]`` int32 prompt of every row.
        prompt_tokens: int32 prompt tokens prefilled.
        num_prompts: ``B``.
        bad_prompt_tokens: int32 out-of-range prompt ids (traced prompts;
            ``LMSearchInfo.bad_prompt_tokens``).
    """

    state: dec.DecodeState
    prompt_index: jax.Array
    prompt_tokens: jax.Array
    num_prompts: int
    bad_prompt_tokens: jax.Array | None = None


class Policy(NamedTuple):
    """A step-level LM search as a policy of ``run`` (module docstring)."""

    init: Callable[[Start], Any]
    step: Callable[..., tuple[Any, steps.Ledger, dict]]
    finish: Callable[[Any], steps.LMSearchResult]
    rows: Callable[[Any], dec.DecodeState]
    axes: Any


class Round(NamedTuple):
    """What ``run`` hands a policy's ``step``: the round's index and a capped ``extend``."""

    index: jax.Array
    last: jax.Array
    ledger: steps.Ledger
    budget: core.Budget | None
    lm: Any
    prm_fn: steps.PRMFn
    config: steps.StepConfig
    prompt_index: jax.Array

    def extend(self, key, state, scores, ledger=None, prompt_index=None, config=None):
        """``steps.extend`` under the budget's caps, counted in ``ledger`` (default: the
        round's); returns ``(state, scores, StepOut)`` with the updated ledger."""
        return steps.extend(
            key, self.lm, state, self.prompt_index if prompt_index is None else prompt_index,
            self.prm_fn, scores, self.config if config is None else config,
            ledger=self.ledger if ledger is None else ledger, budget=self.budget,
        )  # fmt: skip

    def may_select(self, state: dec.DecodeState) -> jax.Array:
        """``[B]`` bool: the group has a live row and this is not the last round."""
        b = self.ledger.tokens.shape[0]
        return ~jnp.all(state.finished.reshape(b, -1), axis=1) & ~self.last


def start(lm, prompts, prompt_mask, rows_per_prompt: int, config) -> Start:
    """Prefills every prompt once, ``rows_per_prompt`` rows each (``steps.start``)."""
    state, prompt_index, info = steps.start(lm, prompts, prompt_mask, rows_per_prompt, config)
    b = int(jnp.shape(prompts)[0])
    return Start(state, prompt_index, info.prompt_tokens, b, info.bad_prompt_tokens)


def run(
    key: jax.Array,
    policy: Policy,
    pstate: Any,
    *,
    lm: Any,
    prm_fn: steps.PRMFn,
    prompt_index: jax.Array,
    config: steps.StepConfig,
    ledger: steps.Ledger,
    budget: core.Budget | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[Any, steps.Ledger, dict, jax.Array]:
    """Runs ``policy`` for at most ``config.max_steps`` rounds (one ``lax.while_loop``).

    Round ``i`` calls ``policy.step(fold_in(key, i), pstate, Round(...))``.

    Args:
        key: PRNG key.
        policy: the search.
        pstate: ``policy.init(start)``.
        lm: the decoding protocol.
        prm_fn: the PRM, ``(state, prompt_index) -> [R]`` scores.
        prompt_index: ``[R]`` prompt of every row.
        config: the static settings (``StepConfig``); with ``config.runtime_checks``
            rows with non-finite logits are a ``checkify`` error.
        ledger: per-prompt counters to continue from (``steps.Ledger.zeros(B)``;
            particle Gibbs carries one ledger over its sweeps).
        budget: per-prompt ``core.Budget`` whose ``tokens`` / ``prm_calls`` caps
            are enforced (None: uncapped).
        mesh: optional ``"particles"`` mesh.

    Returns:
        ``(pstate, ledger, trace, rounds)``: the trace's arrays are
            ``[max_steps, B]`` (rounds after ``rounds`` repeat the last one): the
            policy's, ``num_finished``, ``out_of_budget`` and
            ``num_non_finite_logits`` (rows whose next-token logits held a NaN/inf
            after the round's step, ``steps.non_finite_logits``; the SMC policies
            report their core's count of the same rows).

    Raises:
        TypeError: if ``config`` is not a ``StepConfig``.
        ValueError: for a ``config`` whose token ids are outside ``lm``'s vocabulary.
    """
    if not isinstance(config, steps.StepConfig):
        raise TypeError(f"config: expected a StepConfig, got {type(config).__name__}")
    config.checked_for(lm)
    t = config.max_steps
    b = ledger.tokens.shape[0]

    def round_of(i, led):
        return Round(i, i >= t - 1, led, budget, lm, prm_fn, config, prompt_index)

    def record(ps, led, before, extra):
        fin = policy.rows(ps).finished.reshape(b, -1)
        out = dict(
            extra,
            num_finished=jnp.sum(fin, axis=1, dtype=jnp.int32),
            out_of_budget=led.out_of_budget - before.out_of_budget,
        )
        if led.non_finite_logits is not None and before.non_finite_logits is not None:
            # a policy's own count (the SMC core's, the same rows) is kept
            out.setdefault(
                "num_non_finite_logits", led.non_finite_logits - before.non_finite_logits
            )
        return out

    def one(i, ps, led):
        new, led2, extra = policy.step(jax.random.fold_in(key, i), ps, round_of(i, led))
        return constrain(new, policy.axes, mesh), led2, record(new, led2, led, extra)

    _, _, shape = jax.eval_shape(lambda ps, led: one(0, ps, led), pstate, ledger)
    trace0 = jax.tree_util.tree_map(lambda a: jnp.zeros((t, *a.shape), a.dtype), shape)

    def cond(carry):
        i, ps, *_ = carry
        return (i < t) & ~jnp.all(policy.rows(ps).finished)

    def body(carry):
        i, ps, led, trace = carry
        ps, led, rec = one(i, ps, led)
        trace = jax.tree_util.tree_map(lambda buf, v: buf.at[i].set(v), trace, rec)
        return i + 1, ps, led, trace

    with mesh_context(mesh):
        ledger0 = ledger
        init = (jnp.zeros((), jnp.int32), constrain(pstate, policy.axes, mesh), ledger, trace0)
        rounds, pstate, ledger, trace = jax.lax.while_loop(cond, body, init)
    if ledger.non_finite_logits is not None:  # after the loop: the SMC core's check first
        steps.check_finite_logits(
            ledger.non_finite_logits - ledger0.non_finite_logits, config.runtime_checks
        )
    last = jnp.maximum(rounds - 1, 0)
    keep = jnp.arange(t) < rounds
    trace = jax.tree_util.tree_map(
        lambda a: jnp.where(keep.reshape((t,) + (1,) * (a.ndim - 1)), a, a[last]), trace
    )
    return pstate, ledger, trace, rounds


def info_of(
    sequences: int,
    ledger: steps.Ledger,
    start: Start,
    rounds: jax.Array,
    trace: dict,
    budget: core.Budget | None,
    **extra,
) -> steps.LMSearchInfo:
    """``LMSearchInfo`` from ``run``'s ledger and trace (``trace["num_nan_scores"]`` and
    ``trace["num_bad_scores"]``, PRM scores outside ``[0, 1]`` treated as NaN, added) and
    the ``Start`` (prompt tokens prefilled, out-of-range prompt ids)."""
    trace = dict(trace, num_nan_scores=ledger.num_nan, num_bad_scores=jnp.asarray(ledger.num_bad))
    return steps.LMSearchInfo(
        sequences, jnp.sum(ledger.tokens), jnp.sum(ledger.prm_calls), ledger.decode_steps,
        start.prompt_tokens, rounds, trace, ledger.tokens, ledger.prm_calls, budget,
        bad_prompt_tokens=start.bad_prompt_tokens, **extra,
    )  # fmt: skip


def search(
    key: jax.Array,
    policy: Policy,
    start: Start,
    *,
    lm: Any,
    prm_fn: Any,
    config: steps.StepConfig,
    budget: core.Budget | None,
    mesh: jax.sharding.Mesh | None,
    sequences: int,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """A whole search from its policy: ``init`` (under the mesh), ``run``, ``finish``.

    The one-call form every driver-based search ends with; ``sequences`` is the
    population over all prompts reported in the info.
    """
    b = start.num_prompts
    with mesh_context(mesh):
        st = policy.init(start)
    final, ledger, trace, rounds = run(
        key, policy, st, lm=lm, prm_fn=prm_fn, prompt_index=start.prompt_index, config=config,
        ledger=steps.Ledger.zeros(b), budget=budget, mesh=mesh,
    )  # fmt: skip
    info = info_of(sequences, ledger, start, rounds, trace, budget)
    return policy.finish(final), info


def search_prompts(
    key: jax.Array,
    make_policy: Callable[[], Policy],
    *,
    lm: Any,
    prm_fn: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array | None,
    rows_per_prompt: int,
    config: steps.StepConfig,
    budget: core.Budget | None,
    mesh: jax.sharding.Mesh | None,
) -> tuple[steps.LMSearchResult, steps.LMSearchInfo]:
    """A whole search from the prompts: the body a one-population search ends with.

    Checks ``mesh`` against the ``B * rows_per_prompt`` rows (``check_mesh``),
    prefills them (``start``, which checks ``lm`` and the prompts), then builds the
    policy (``make_policy()``) and runs it (``search``, with ``prm_fn`` checked by
    ``steps.check_prm``); ``info.sequences`` is ``B * rows_per_prompt``.
    """
    b = jnp.shape(prompts)[0]
    rows = b * rows_per_prompt
    mesh = check_mesh(mesh, rows)
    first = start(lm, prompts, prompt_mask, rows_per_prompt, config)
    policy = make_policy()
    return search(
        key, policy, first, lm=lm, prm_fn=steps.check_prm(prm_fn), config=config, budget=budget,
        mesh=mesh, sequences=rows,
    )  # fmt: skip


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


def mesh_context(mesh):
    """The ambient abstract mesh of ``mesh`` (the SMC core then replicates weights)."""
    return (
        contextlib.nullcontext()
        if mesh is None
        else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
    )
