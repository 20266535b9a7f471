"""The shared vocabulary of every search: what a search returns and how it counts.

A search takes a key, the model as plain callables, a ``reward_fn`` (higher is
better; a verifier or a process reward) and a compute budget, and returns what
it chose together with a ``SearchInfo``. Compute is counted the way the papers
count it (DESIGN.md, Budgets): for flow models one network evaluation of one
sample is 1 NFE (a guided pair 2, a midpoint step 2); for language models the
same fields count generated tokens or sequences. A search plans its spending
statically, before tracing, raises ``ValueError`` when the budget is below one
full solve or below its population, and never spends more than the budget.

Rewards are batched, ``reward_fn(x [N, *event]) -> [N]``. A NaN reward is a
numerical failure: it never wins a selection (it counts as ``-inf``) and it is
counted in ``SearchInfo.num_nan``. The cost of one reward call per sample is
static too (``inferax.sampling.cost``: a ``Costed`` reward, e.g. an
``ensemble`` of k verifiers, costs k evaluations per sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.sampling import cost as cost_lib
from inferax.search import core

RewardFn = Callable[[jax.Array], jax.Array]

__all__ = [
    "SearchInfo",
    "best_index",
    "check_budget",
    "check_reward",
    "check_velocity",
    "ensemble",
    "event_shape_of",
    "expand",
    "finish",
    "nfe_budget",
    "rank_normalize",
    "reward_cost",
    "safe_rewards",
    "solves_plan",
]


class SearchInfo(NamedTuple):
    """What a search spent and found.

    Attributes:
        nfe: int32, model evaluations actually spent (NFE for flow models,
            tokens for language models), never more than ``budget``.
        reward_evals: int32, reward (verifier) evaluations spent, one per
            sample scored (times the reward's ``nfe_per_call``).
        reward: the reward of what was returned (scalar for one sample).
        budget: int, the NFE limit the search was given (``budget.nfe`` of a
            ``core.Budget``; an int, not the record, so that the info can leave
            a ``jax.jit``).
        trace: a dict of per-round arrays (leading axis = round), documented
            by each search (e.g. the best reward after each round).
        num_nan: int32, rewards that were NaN (counted as ``-inf``).
        population: the final candidates ``(samples [P, *event], rewards
            [P])`` when the search has a population worth returning (e.g. the
            SMC particles, to measure the target they sample), else None.
    """

    nfe: jax.Array
    reward_evals: jax.Array
    reward: jax.Array
    budget: int
    trace: dict
    num_nan: jax.Array
    population: Any = None

    def spent(self) -> dict[str, jax.Array]:
        """What the search spent in every unit it counts: ``{"nfe", "reward_evals"}``."""
        return {"nfe": self.nfe, "reward_evals": self.reward_evals}


def nfe_budget(budget: core.Budget | int, name: str = "budget") -> int:
    """The NFE limit of ``budget``: a ``core.Budget`` with ``nfe`` set, or a positive int.

    Raises:
        TypeError: neither a ``Budget`` nor an int (e.g. 2.5).
        ValueError: an int below 1, or a ``Budget`` without an ``nfe`` limit.
    """
    return core.as_budget(budget, "nfe", name).require("nfe", "a flow search")


def check_budget(budget: core.Budget | int, needed: int, what: str, name: str = "budget") -> int:
    """The NFE limit of ``budget`` (``nfe_budget``), or ValueError when it is below ``needed``.

    Args:
        budget: a ``core.Budget`` with ``nfe`` set, or a positive int (NFE).
        needed: the least NFE the search can run on (one full solve, or the
            population times one solve).
        what: what ``needed`` pays for, for the message.
        name: the argument name for the message.

    Returns:
        The NFE limit, an int.

    Raises:
        ValueError: the limit is below ``needed`` (or not a valid budget).
        TypeError: ``budget`` is neither a ``Budget`` nor an int.
    """
    budget = nfe_budget(budget, name)
    if budget < needed:
        raise ValueError(f"{name}: expected at least {needed} NFE ({what}), got {budget}")
    return budget


def solves_plan(
    budget: core.Budget | int, per_solve: int, reward_cost: int, what: str
) -> dict[str, int]:
    """What a budget buys in independent solves: N = budget // per_solve, each scored once.

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        per_solve: NFE of one solve of one sample.
        reward_cost: reward evaluations per sample scored.
        what: what one solve is, for the message (``check_budget``).

    Returns:
        ``{"population": N, "nfe": N x per_solve, "reward_evals": N x reward_cost}``.

    Raises:
        ValueError: the budget is below one solve.
    """
    budget = check_budget(budget, per_solve, what)
    n = budget // per_solve
    return {"population": n, "nfe": n * per_solve, "reward_evals": n * reward_cost}


def check_velocity(velocity_fn, nfe_per_call: int | None = None, name: str = "velocity_fn") -> int:
    """Checks that ``velocity_fn`` is callable; returns its cost per call (``nfe_per_call``,
    or what the velocity says, ``inferax.sampling.cost.nfe_per_call``)."""
    if not callable(velocity_fn):
        raise TypeError(f"{name}: expected a callable (x, t) -> v, got {velocity_fn!r}")
    return cost_lib.nfe_per_call(velocity_fn, nfe_per_call)


def check_reward(reward_fn, name: str = "reward_fn") -> int:
    """Checks that ``reward_fn`` is callable; returns its cost per sample scored."""
    if not callable(reward_fn):
        raise TypeError(f"{name}: expected a callable x [N, *event] -> [N], got {reward_fn!r}")
    return reward_cost(reward_fn, name)


def reward_cost(reward_fn, name: str = "reward_fn") -> int:
    """Reward evaluations one call costs per sample (a ``Costed`` says so; else 1)."""
    return cost_lib.nfe_per_call(reward_fn, name=name)


def safe_rewards(reward_fn: RewardFn, x: jax.Array, name: str = "reward_fn"):
    """``(rewards with NaN -> -inf, number of NaN)``; checks the output shape ``[N]``."""
    r = reward_fn(x)
    n = x.shape[0]
    if not hasattr(r, "shape") or tuple(r.shape) != (n,):
        got = getattr(r, "shape", type(r).__name__)
        raise ValueError(f"{name}: expected rewards of shape ({n},) for {n} samples, got {got}")
    r = jnp.asarray(r)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.float32)
    nan = jnp.isnan(r)
    return jnp.where(nan, -jnp.inf, r), jnp.sum(nan).astype(jnp.int32)


def rank_normalize(r: jax.Array) -> jax.Array:
    """Ranks of ``r [N]`` scaled to [0, 1] (ties share their mean rank; NaN ranks lowest).

    rank_i = (#{j: r_j < r_i} + (#{j: r_j = r_i} - 1) / 2) / (N - 1), and 0.5
    for N = 1. A constant reward has every rank 0.5: ties stay ties.
    """
    r = jnp.where(jnp.isnan(r), -jnp.inf, r)
    n = r.shape[0]
    if n == 1:
        return jnp.full((1,), 0.5, jnp.float32)
    less = jnp.sum(r[None, :] < r[:, None], axis=1)
    equal = jnp.sum(r[None, :] == r[:, None], axis=1)
    return ((less + (equal - 1) / 2) / (n - 1)).astype(jnp.float32)


def ensemble(reward_fns: Sequence[RewardFn], weights: Sequence[float] | None = None):
    """A verifier ensemble: the (weighted) average of each verifier's rank in the batch.

    Ma et al. 2025 (REFERENCES section 4) combine verifiers by rank so that
    scores on different scales count equally. The ranks are taken within the
    batch the reward is called on, so a search must compare candidates scored
    together (every search here does: a round scores its candidates in one
    call). The result is a ``Costed`` with cost ``len(reward_fns)`` per sample.

    Args:
        reward_fns: one or more ``reward_fn(x [N, *event]) -> [N]``.
        weights: optional non-negative weights, one per verifier (default equal).

    Raises:
        ValueError / TypeError: empty list, a non-callable, bad weights.
    """
    fns = list(reward_fns) if isinstance(reward_fns, list | tuple) else None
    if not fns:
        raise ValueError(f"reward_fns: expected a non-empty list of callables, got {reward_fns!r}")
    for i, f in enumerate(fns):
        if not callable(f):
            raise TypeError(f"reward_fns[{i}]: expected a callable, got {type(f).__name__}")
    if weights is None:
        w = [1.0] * len(fns)
    else:
        w = [float(v) for v in weights]
        if len(w) != len(fns) or min(w) < 0 or sum(w) <= 0:
            raise ValueError(
                f"weights: expected {len(fns)} non-negative weights with a positive sum, "
                f"got {weights!r}"
            )
    total = sum(w)
    cost = sum(reward_cost(f, f"reward_fns[{i}]") for i, f in enumerate(fns))

    def reward(x):
        out = 0.0
        for f, wi in zip(fns, w, strict=True):
            out = out + (wi / total) * rank_normalize(f(x))
        return out

    return cost_lib.with_cost(reward, cost)


def event_shape_of(event_shape, name: str = "event_shape") -> tuple[int, ...]:
    """``event_shape`` (an int or a sequence of positive ints) as a tuple, or ValueError."""
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    for d in shape:
        _checks.positive_int(d, name)
    return shape


def expand(tree, num_children: int):
    """Every row of ``tree`` (a pytree with a leading particle axis) ``num_children`` times.

    Child ``j`` of parent ``p`` sits at row ``p * num_children + j`` (``jnp.repeat``,
    not ``jnp.tile``), so the children of one parent are contiguous, a reshape to
    ``[P, num_children, ...]`` groups them by parent and child row ``i`` descends
    from parent ``i // num_children``: per-parent quantities (states, rewards,
    weights) travel with their own children. Used by the branching methods
    (SVDD, CoDe) and beam search.
    """
    num_children = _checks.positive_int(num_children, "num_children")
    return jax.tree.map(lambda a: jnp.repeat(a, num_children, axis=0), tree)


def best_index(r: jax.Array) -> jax.Array:
    """Index of the largest reward (the first one on ties; NaN never wins)."""
    return jnp.argmax(jnp.where(jnp.isnan(r), -jnp.inf, r))


def finish(x, r, nfe, reward_evals, budget, trace, num_nan, population=None):
    """``(x[best], SearchInfo)`` for candidates ``x [P, *event]`` with rewards ``r [P]``.

    The best is ``best_index(r)``; ``nfe`` and ``reward_evals`` are what the
    search spent (ints or int arrays), ``budget`` what it was given (a
    ``core.Budget`` or an int; the info keeps its NFE limit).
    """
    i = best_index(r)
    info = SearchInfo(
        nfe=jnp.asarray(nfe, jnp.int32),
        reward_evals=jnp.asarray(reward_evals, jnp.int32),
        reward=r[i],
        budget=nfe_budget(budget),
        trace=trace,
        num_nan=num_nan,
        population=population,
    )
    return x[i], info
