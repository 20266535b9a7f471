"""Search over the initial noise of a flow ODE (Ma et al. 2025, REFERENCES section 4).

The ODE maps noise to a sample deterministically, so a verifier can steer
generation by choosing the noise. Total compute = candidates x NFE of one
solve (``flow.cost``); the reward is scored on the solved samples.

- ``random_search``: best-of-N over i.i.d. noises.
- ``zero_order_search``: a pivot noise n and neighbours on the shell around it,
  y = ||n|| (c u + sqrt(1 - c^2) w) with u = n / ||n|| and w a random unit
  vector orthogonal to u (the norm of n is kept and the angle to it is
  arccos c); the best neighbour replaces the pivot when it improves on it.

The model is a bare velocity with its solver options (``num_steps``,
``solver``, ``nfe_per_call``) or a ``Dynamics`` (``make_dynamics``), whose
velocity, grid and cost are then used; the search always solves the ODE
(the dynamics' noise scale is not used). ``random_search_plan`` and
``zero_order_plan`` say statically what a budget buys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, flow
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

if TYPE_CHECKING:
    from inferax.search import core

__all__ = [
    "neighbors",
    "ode_solver",
    "random_search",
    "random_search_plan",
    "zero_order_plan",
    "zero_order_search",
]

PIVOT_POLICIES = ("keep", "fresh")


def ode_solver(
    velocity_fn: Callable | dyn_lib.Dynamics,
    num_steps: int | Sequence[float] | jax.Array | None,
    solver: str | flow.Solver = "euler",
    nfe_per_call: int | None = None,
) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """``(solve(x0) -> x1, NFE per sample of one solve)`` on a uniform grid.

    Args:
        velocity_fn: batched velocity ``(x [N, *event], t) -> [N, *event]``, or
            a ``Dynamics`` (its velocity, grid and cost; then ``num_steps`` and
            ``nfe_per_call`` must be left None).
        num_steps: number of grid intervals, or a concrete increasing grid
            (default 10).
        solver: a name in ``flow.SOLVERS`` or a ``flow.Solver``.
        nfe_per_call: cost of one velocity call (default ``cost.nfe_per_call``).

    Returns:
        ``(solve, per_solve)``: ``solve(x0 [N, *event]) -> x1 [N, *event]`` integrates
            the ODE from t = 0 to 1 (jit-able); ``per_solve`` is the static NFE of
            one solve per sample.

    Raises:
        ValueError: ``num_steps`` or ``nfe_per_call`` given with a ``Dynamics``, or
            a ``num_steps`` that is not a positive int or an increasing grid.
        TypeError: ``velocity_fn`` is not callable.
    """
    if isinstance(velocity_fn, dyn_lib.Dynamics):
        if num_steps is not None or nfe_per_call is not None:
            raise ValueError(
                "num_steps: expected None with a Dynamics (its grid and cost are used), "
                f"got num_steps={num_steps!r}, nfe_per_call={nfe_per_call!r}"
            )
        dyn = velocity_fn
        velocity_fn, num_steps, nfe_per_call = dyn.velocity_fn, dyn.grid, dyn.nfe_per_call
    num_steps = 10 if num_steps is None else num_steps
    per_call = base.check_velocity(velocity_fn, nfe_per_call)
    if hasattr(num_steps, "shape") or isinstance(num_steps, list | tuple):
        grid = np.asarray(flow.check_grid(num_steps, "num_steps"), np.float64)
    else:
        n = _checks.positive_int(num_steps, "num_steps")
        grid = np.linspace(0.0, 1.0, n + 1)
    per_solve = flow.cost(grid.shape[0] - 1, solver, per_call)

    def solve(x0):
        ts = jnp.asarray(grid, x0.dtype)
        return flow.sample(velocity_fn, x0, ts, solver=solver, nfe_per_call=per_call)[0]

    return solve, per_solve


def random_search_plan(
    budget: core.Budget | int,
    *,
    num_steps: int = 10,
    solver: str | flow.Solver = "euler",
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``random_search`` buys with ``budget`` (static): N = budget // (NFE of one solve).

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_steps: ODE intervals of one solve.
        solver: ODE solver name or ``flow.Solver`` (with ``num_steps``, the cost of
            one solve).
        nfe_per_call: cost of one velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": N, "nfe": N x solve, "reward_evals": N x reward_cost}``.

    Raises:
        ValueError: the budget is below one full solve.
    """
    per_solve = flow.cost(_checks.positive_int(num_steps, "num_steps"), solver, nfe_per_call)
    return base.solves_plan(budget, per_solve, reward_cost, "one full ODE solve")


def random_search(
    key: jax.Array,
    velocity_fn: Callable | dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_steps: int | Sequence[float] | jax.Array | None = None,
    solver: str | flow.Solver = "euler",
    nfe_per_call: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Best-of-N over initial noises: N = budget // (NFE of one solve).

    Args:
        key: typed PRNG key; noise ``i`` comes from ``fold_in(key, i)``.
        velocity_fn: batched velocity of the flow model, or a ``Dynamics``.
        reward_fn: ``x [N, *event] -> [N]``, higher is better.
        budget: a ``core.Budget`` with ``nfe``, or a positive int (NFE); at
            least one full solve.
        event_shape: shape of one sample.
        num_steps: ODE intervals (or a concrete grid); default 10.
        solver: ODE solver name or ``flow.Solver``.
        nfe_per_call: cost of one velocity call.
        dtype: floating dtype of the noise (default ``jnp.result_type(float)``).

    Returns:
        ``(x [*event], SearchInfo)``; ``trace["reward"]`` holds the ``[N]``
            rewards of all candidates (one round).

    Raises:
        ValueError: the budget is below one full solve.

    Example:
        With ``target``, ``reward_fn`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.random_search(
        ...     key, target.velocity, reward_fn, 16, event_shape=2, num_steps=4)
        >>> x.shape, int(info.nfe), int(info.reward_evals), info.trace["reward"].shape
        ((2,), 16, 4, (4,))
    """
    solve, per_solve = ode_solver(velocity_fn, num_steps, solver, nfe_per_call)
    r_cost = base.check_reward(reward_fn)
    plan = base.solves_plan(budget, per_solve, r_cost, "one full ODE solve")
    n = plan["population"]
    x0 = flow.noise(key, n, base.event_shape_of(event_shape), dtype=dtype)
    x1 = solve(x0)
    r, num_nan = base.safe_rewards(reward_fn, x1)
    trace = {"reward": r}
    evals = plan["reward_evals"]
    return base.finish(x1, r, plan["nfe"], evals, budget, trace, num_nan, population=(x1, r))


def neighbors(key: jax.Array, pivot: jax.Array, num: int, c: float = 0.95) -> jax.Array:
    """``num`` points on the shell around ``pivot`` at angle arccos(c), with its norm.

    y = ||n|| (c u + sqrt(1 - c^2) w), u = n / ||n||, w a uniformly random unit
    vector orthogonal to u (a Gaussian draw with its u-component removed).
    Neighbour ``j`` uses ``fold_in(key, j)``.

    Args:
        key: typed PRNG key.
        pivot: ``[*event]`` array, not zero.
        num: number of neighbours.
        c: cosine of the angle to the pivot, in [-1, 1].

    Returns:
        ``[num, *event]`` neighbours in ``pivot.dtype``. A zero pivot has no
            direction: known at trace time it is a ValueError; traced (under
            ``jit``) its shell has radius 0 and every neighbour is the zero pivot
            itself (not NaN).

    Raises:
        ValueError: for ``num < 1``, ``c`` outside [-1, 1], or a concrete pivot that
            is zero or not finite.
    """
    num = _checks.positive_int(num, "num")
    if isinstance(c, bool) or not isinstance(c, int | float) or not -1.0 <= c <= 1.0:
        raise ValueError(f"c: expected a cosine in [-1, 1], got {c!r}")
    pivot = _checks.floating_array(pivot, "pivot")
    concrete = _checks.concrete_value(pivot)
    if concrete is not None:
        if not np.isfinite(concrete).all():
            raise ValueError(
                f"pivot: expected finite values, got {int((~np.isfinite(concrete)).sum())} "
                "NaN/inf entries"
            )
        if not np.any(concrete):
            raise ValueError(
                f"pivot: expected a non-zero array (its direction defines the shell), got all "
                f"zeros of shape {concrete.shape}"
            )
    flat = pivot.reshape(-1)
    norm = jnp.linalg.norm(flat)
    u = flat / jnp.where(norm > 0, norm, jnp.ones_like(norm))  # zero pivot: u = 0, y = 0
    z = flow.noise(key, num, flat.shape, dtype=flat.dtype)
    w = z - (z @ u)[:, None] * u[None, :]
    w = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    y = norm * (c * u[None, :] + s * w)
    return y.reshape((num, *pivot.shape)).astype(pivot.dtype)


def zero_order_plan(
    budget: core.Budget | int,
    *,
    num_neighbors: int = 4,
    num_steps: int = 10,
    solver: str | flow.Solver = "euler",
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``zero_order_search`` buys (static): 1 + rounds x num_neighbors solves.

    rounds = (budget // solve - 1) // num_neighbors.

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_neighbors: neighbours solved per round.
        num_steps: ODE intervals of one solve.
        solver: ODE solver name or ``flow.Solver``.
        nfe_per_call: cost of one velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": num_neighbors, "rounds", "nfe", "reward_evals"}``.

    Raises:
        ValueError: the budget is below ``1 + num_neighbors`` solves.
    """
    num_neighbors = _checks.positive_int(num_neighbors, "num_neighbors")
    per_solve = flow.cost(_checks.positive_int(num_steps, "num_steps"), solver, nfe_per_call)
    return _zero_order_plan(budget, num_neighbors, per_solve, reward_cost)


def _zero_order_plan(budget, num_neighbors, per_solve, reward_cost):
    budget = base.check_budget(
        budget, (1 + num_neighbors) * per_solve, f"a pivot and {num_neighbors} neighbours solved"
    )
    rounds = (budget // per_solve - 1) // num_neighbors
    solves = 1 + rounds * num_neighbors
    return {
        "population": num_neighbors,
        "rounds": rounds,
        "nfe": solves * per_solve,
        "reward_evals": solves * reward_cost,
    }


def zero_order_search(
    key: jax.Array,
    velocity_fn: Callable | dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_neighbors: int = 4,
    c: float = 0.95,
    pivot_policy: str = "fresh",
    num_steps: int | Sequence[float] | jax.Array | None = None,
    solver: str | flow.Solver = "euler",
    nfe_per_call: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Zero-order search over the initial noise (Ma et al. 2025).

    Round 0 solves one random pivot. Each later round solves ``num_neighbors``
    neighbours of the pivot (``neighbors``, angle arccos ``c``); if the best
    of them beats the pivot's reward it becomes the pivot. If none improves,
    ``pivot_policy`` decides: ``"keep"`` keeps the pivot (new neighbours are
    drawn next round); ``"fresh"`` (the public reimplementation) moves to a
    fresh random noise, which is not solved itself: its reward counts as
    ``-inf``, so its best neighbour becomes the pivot next round. The best
    sample seen in any round is returned. Rounds = (budget // solve - 1) //
    num_neighbors.

    Args:
        key: typed PRNG key.
        velocity_fn: batched velocity of the flow model, or a ``Dynamics``.
        reward_fn: ``x [N, *event] -> [N]``, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least
            ``1 + num_neighbors`` solves.
        event_shape: shape of one sample.
        num_neighbors: neighbours per round.
        c: cosine between a neighbour and its pivot (0.95 by default).
        pivot_policy: ``"fresh"`` or ``"keep"``.
        num_steps: ODE intervals (or a concrete grid); default 10.
        solver: ODE solver name or ``flow.Solver``.
        nfe_per_call: cost of one velocity call.
        dtype: floating dtype of the noise (default ``jnp.result_type(float)``).

    Returns:
        ``(x [*event], SearchInfo)``; the trace has per-round ``best_reward``
            (best so far) and ``improved`` (bool).

    Raises:
        ValueError: an unknown ``pivot_policy``, or a budget below
            ``1 + num_neighbors`` solves.

    Example:
        With ``target``, ``reward_fn`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.zero_order_search(
        ...     key, target.velocity, reward_fn, 40, event_shape=2, num_steps=4, num_neighbors=2)
        >>> x.shape, int(info.nfe), info.trace["improved"].shape  # 1 + 4 x 2 solves of 4 NFE
        ((2,), 36, (4,))
    """
    if pivot_policy not in PIVOT_POLICIES:
        raise ValueError(f"pivot_policy: expected one of {PIVOT_POLICIES}, got {pivot_policy!r}")
    num_neighbors = _checks.positive_int(num_neighbors, "num_neighbors")
    solve, per_solve = ode_solver(velocity_fn, num_steps, solver, nfe_per_call)
    r_cost = base.check_reward(reward_fn)
    plan = _zero_order_plan(budget, num_neighbors, per_solve, r_cost)
    rounds = plan["rounds"]
    shape = base.event_shape_of(event_shape)
    k_pivot, k_rounds = jax.random.split(key)
    pivot = flow.noise(k_pivot, 1, shape, dtype=dtype)
    x_pivot = solve(pivot)
    r_pivot, nan0 = base.safe_rewards(reward_fn, x_pivot)

    def round_fn(carry, i):
        pivot, r_piv, best_x, best_r, nan = carry
        k = jax.random.fold_in(k_rounds, i)
        k_nb, k_fresh = jax.random.split(k)
        cand = neighbors(k_nb, pivot, num_neighbors, c)
        x1 = solve(cand)
        r, n_nan = base.safe_rewards(reward_fn, x1)
        j = base.best_index(r)
        improved = r[j] > r_piv
        if pivot_policy == "keep":
            other, other_r = pivot, r_piv
        else:
            other = flow.noise(k_fresh, 1, shape, dtype=pivot.dtype)[0]
            other_r = jnp.asarray(-jnp.inf, r_piv.dtype)
        new_pivot = jnp.where(improved, cand[j], other)
        new_r = jnp.where(improved, r[j], other_r)
        better = r[j] > best_r
        best_x = jnp.where(better, x1[j], best_x)
        best_r = jnp.where(better, r[j], best_r)
        return (new_pivot, new_r, best_x, best_r, nan + n_nan), (best_r, improved)

    carry = (pivot[0], r_pivot[0], x_pivot[0], r_pivot[0], nan0)
    (_, _, best_x, best_r, nan), (trace_r, trace_imp) = jax.lax.scan(
        round_fn, carry, jnp.arange(rounds)
    )
    info = base.SearchInfo(
        nfe=jnp.int32(plan["nfe"]),
        reward_evals=jnp.int32(plan["reward_evals"]),
        reward=best_r,
        budget=base.nfe_budget(budget),
        trace={"best_reward": trace_r, "improved": trace_imp},
        num_nan=nan,
    )
    return best_x, info
