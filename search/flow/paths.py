"""Search over paths of a flow ODE (Ma et al. 2025, REFERENCES section 4).

N noises are solved to the search start time. Then, repeatedly, each of the N
states at time t is re-noised M times back to an earlier time s (the exact
forward kernel of the interpolant, ``interpolants.renoise``: the marginals are
kept, unlike an ad hoc noise), each copy is solved forward past t to a later
time e, scored by the verifier on its one-step clean prediction (the
posterior mean from one extra velocity call, or the state itself at t = 1),
and the N best of the N M copies are kept. At t = 1 the best one is returned.

Times are points of a uniform grid of ``num_steps`` intervals (or of the grid
of a ``Dynamics`` given as the model, with its interpolant); ``backward_steps``
and ``forward_steps`` count grid intervals (forward > backward, so each round
advances by their difference; the last round stops at t = 1).
``search_over_paths_plan`` says statically what a budget buys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, flow
from inferax.sampling import interpolants as interp_lib
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

if TYPE_CHECKING:
    from inferax.search import core

__all__ = ["path_rounds", "search_over_paths", "search_over_paths_cost", "search_over_paths_plan"]


def path_rounds(num_steps: int, start_step: int, backward_steps: int, forward_steps: int):
    """The ``[(s, e), ...]`` grid indices of each round: re-noise to ``s``, solve to ``e``."""
    rounds, i = [], start_step
    while i < num_steps:
        s = i - backward_steps
        e = min(s + forward_steps, num_steps)
        rounds.append((s, e))
        i = e
    return rounds


def _check_plan(num_steps, start_step, backward_steps, forward_steps):
    num_steps = _checks.positive_int(num_steps, "num_steps")
    backward_steps = _checks.positive_int(backward_steps, "backward_steps")
    forward_steps = _checks.positive_int(forward_steps, "forward_steps")
    start_step = _checks.non_negative_int(start_step, "start_step")
    if forward_steps <= backward_steps:
        raise ValueError(
            f"forward_steps: expected more than backward_steps = {backward_steps} "
            f"(each round must advance), got {forward_steps}"
        )
    if not backward_steps <= start_step <= num_steps:
        raise ValueError(
            f"start_step: expected a grid index in [backward_steps = {backward_steps}, "
            f"num_steps = {num_steps}], got {start_step}"
        )
    return num_steps, start_step, backward_steps, forward_steps


def search_over_paths_cost(
    num_paths, num_branches, num_steps, start_step, backward_steps, forward_steps, per_call=1
) -> int:
    """NFE ``search_over_paths`` spends (static; Euler, 1 velocity call per interval)."""
    num_steps, start_step, backward_steps, forward_steps = _check_plan(
        num_steps, start_step, backward_steps, forward_steps
    )
    nfe = num_paths * start_step
    for s, e in path_rounds(num_steps, start_step, backward_steps, forward_steps):
        nfe += num_paths * num_branches * ((e - s) + (1 if e < num_steps else 0))
    return nfe * per_call


def search_over_paths_plan(
    budget: core.Budget | int,
    *,
    num_paths: int = 2,
    num_branches: int = 2,
    num_steps: int = 10,
    start_step: int = 2,
    backward_steps: int = 1,
    forward_steps: int = 2,
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``search_over_paths`` spends on this plan (static), or ValueError naming ``budget``.

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_paths: N, states kept per round.
        num_branches: M, re-noised copies of each state per round.
        num_steps: grid intervals from 0 to 1.
        start_step: grid index of the search start time (>= backward_steps).
        backward_steps: intervals re-noised back per round.
        forward_steps: intervals solved forward per round.
        nfe_per_call: cost of one velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": N M copies per round, "rounds", "nfe", "reward_evals"}``.

    Raises:
        ValueError: naming ``budget`` when it is below one full solve or below
            ``search_over_paths_cost`` of the plan, or an inconsistent plan.
    """
    num_paths = _checks.positive_int(num_paths, "num_paths")
    num_branches = _checks.positive_int(num_branches, "num_branches")
    needed = search_over_paths_cost(
        num_paths, num_branches, num_steps, start_step, backward_steps, forward_steps, nfe_per_call
    )
    base.check_budget(budget, num_steps * nfe_per_call, "one full ODE solve")
    base.check_budget(
        budget,
        needed,
        f"{num_paths} paths x {num_branches} branches on this plan (see search_over_paths_cost)",
    )
    rounds = len(path_rounds(num_steps, start_step, backward_steps, forward_steps))
    scored = num_paths * num_branches * rounds if rounds else num_paths
    return {
        "population": num_paths * num_branches,
        "rounds": rounds,
        "nfe": needed,
        "reward_evals": scored * reward_cost,
    }


def search_over_paths(
    key: jax.Array,
    velocity_fn: Callable | dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_paths: int = 2,
    num_branches: int = 2,
    num_steps: int | None = None,
    start_step: int = 2,
    backward_steps: int = 1,
    forward_steps: int = 2,
    interpolant: interp_lib.Interpolant | None = None,
    nfe_per_call: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Search over paths (Ma et al. 2025) with Euler steps on a uniform grid.

    Args:
        key: typed PRNG key.
        velocity_fn: batched velocity of ``interpolant``, or a ``Dynamics``
            (its velocity, grid, interpolant and cost; ``num_steps``,
            ``interpolant`` and ``nfe_per_call`` are then left None).
        reward_fn: ``x [N, *event] -> [N]``.
        budget: a ``core.Budget`` with ``nfe`` or an int;
            ``search_over_paths_cost(...)`` of the arguments must fit
            (ValueError otherwise, and when it is below one full solve).
        event_shape: shape of one sample.
        num_paths: N, states kept per round.
        num_branches: M, re-noised copies of each state per round.
        num_steps: grid intervals from 0 to 1 (default 10).
        start_step: grid index of the search start time (>= backward_steps).
        backward_steps: intervals re-noised back per round (df).
        forward_steps: intervals solved forward per round (db > df).
        interpolant: the velocity's interpolant (default linear).
        nfe_per_call: cost of one velocity call.
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``; the trace has ``best_reward`` per round.

    Raises:
        ValueError: a budget below one full solve or the plan's cost, an
            inconsistent plan, or solver options given with a ``Dynamics``.
        TypeError: ``velocity_fn`` is not callable.

    Example:
        With ``target``, ``reward_fn`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.search_over_paths(key, target.velocity, reward_fn, 60, event_shape=2,
        ...     num_steps=4, start_step=1, backward_steps=1, forward_steps=2)
        >>> x.shape, int(info.nfe), info.trace["best_reward"].shape
        ((2,), 34, (3,))
    """
    grid = None
    if isinstance(velocity_fn, dyn_lib.Dynamics):
        if not (num_steps is None and interpolant is None and nfe_per_call is None):
            raise ValueError(
                "num_steps: expected num_steps, interpolant and nfe_per_call None with a "
                f"Dynamics, got {num_steps!r}, {interpolant!r}, {nfe_per_call!r}"
            )
        dyn = velocity_fn
        velocity_fn, interpolant, grid = dyn.velocity_fn, dyn.interpolant, dyn.grid
        num_steps, nfe_per_call = dyn.num_steps, dyn.nfe_per_call
    num_steps = 10 if num_steps is None else num_steps
    interpolant = interp_lib.linear() if interpolant is None else interpolant
    interp_lib.check_interpolant(interpolant)
    per_call = base.check_velocity(velocity_fn, nfe_per_call)
    r_cost = base.check_reward(reward_fn)
    moves = dict(start_step=start_step, backward_steps=backward_steps, forward_steps=forward_steps)
    population = dict(num_paths=num_paths, num_branches=num_branches, num_steps=num_steps)
    plan = search_over_paths_plan(
        budget, nfe_per_call=per_call, reward_cost=r_cost, **population, **moves
    )
    if grid is None:
        grid = np.linspace(0.0, 1.0, num_steps + 1)
    shape = base.event_shape_of(event_shape)
    k_init, k_rounds = jax.random.split(key)
    x = flow.noise(k_init, num_paths, shape, dtype=dtype)
    ts = jnp.asarray(grid, x.dtype)
    if start_step > 0:
        x = flow.sample(velocity_fn, x, ts[: start_step + 1], nfe_per_call=per_call)[0]
    rounds = path_rounds(num_steps, start_step, backward_steps, forward_steps)
    evals, nan, trace = 0, jnp.int32(0), []
    r = None
    for k, (s, e) in enumerate(rounds):
        i = s + backward_steps
        kr = jax.random.fold_in(k_rounds, k)
        copies = jnp.repeat(x, num_branches, axis=0)
        if i > 0:
            # One key per copy (sharding-invariant), the exact kernel t_i -> t_s.
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(kr, jnp.arange(copies.shape[0]))
            kernel = functools.partial(interp_lib.renoise, interp=interpolant, t=grid[i], s=grid[s])
            copies = jax.vmap(lambda kk, xx, f=kernel: f(kk, x_t=xx))(keys, copies)
        else:  # at t = 0 re-noising to t = 0 is a fresh draw
            copies = flow.noise(kr, copies.shape[0], shape, dtype=x.dtype)
        copies = flow.sample(velocity_fn, copies, ts[s : e + 1], nfe_per_call=per_call)[0]
        if e < num_steps:
            u = flow.check_velocity_output(velocity_fn(copies, ts[e]), copies)
            scored = interp_lib.posterior_mean_from_velocity(interpolant, u, copies, ts[e])
        else:
            scored = copies
        rc, n_nan = base.safe_rewards(reward_fn, scored)
        nan = nan + n_nan
        evals += copies.shape[0]
        r, idx = jax.lax.top_k(rc, num_paths)
        x = copies[idx]
        trace.append(r[0])
    if r is None:  # the search started at t = 1: plain best-of-N
        r, n_nan = base.safe_rewards(reward_fn, x)
        nan = nan + n_nan
        evals += num_paths
        trace.append(jnp.max(r))
    trace = {"best_reward": jnp.stack(trace)}
    evals *= r_cost
    return base.finish(x, r, plan["nfe"], evals, budget, trace, nan, population=(x, r))
