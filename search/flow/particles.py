"""Reward-guided particle methods on flow SDEs (Kim et al. 2025, REFERENCES section 2).

Every method moves particles with one ``dynamics.Dynamics`` (ODE, linear SDE
or VP SDE) at 1 NFE per particle per step (``dynamics.advance``: the lookahead
reward shares the step's velocity evaluation), and spends its budget as:

- ``best_of_n``: N independent samples, the best final reward wins:
  N = budget // num_steps.
- ``svdd`` / ``code``: C chains; each step every chain draws K children (one
  SDE step each). SVDD keeps the child with the best lookahead reward after
  every step; CoDe lets the K children run ``block_length`` steps before it
  keeps the best. NFE = C + C K (num_steps - 1); K is the largest that fits.
- ``smc``: N particles with the reward-difference potential
  G = exp(alpha (r_{t+1} - r_t)) on lookahead rewards, resampled when
  ESS < threshold N (``inferax.sampling.smc``). Initial weights exp(alpha r_0)
  make the potentials telescope: the final population targets
  p(x) exp(alpha r(x)) / Z, up to the SDE's discretisation.
  N = budget // num_steps.

Each returns ``(x [*event], SearchInfo)`` with the best final sample, and
has a static plan (``best_of_n_plan``, ``branching_plan``, ``smc_plan``) of
what a budget buys. ``branching_search`` is the loop SVDD, CoDe and beam search
share: parents expanded into children (``base.expand``), one SDE step each,
a selection hook choosing the next parents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from inferax.sampling import _checks, flow
from inferax.sampling import smc as smc_lib
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

if TYPE_CHECKING:
    from inferax.search import core

__all__ = [
    "best_of_n",
    "best_of_n_plan",
    "branching_cost",
    "branching_plan",
    "branching_search",
    "code",
    "run_branching",
    "select_per_parent",
    "smc",
    "smc_plan",
    "svdd",
]

SELECT_SALT = 0x5E1EC7
"""Selection keys are ``fold_in(fold_in(key, SELECT_SALT), step)`` (apart from every noise key)."""

SelectFn = Callable[[jax.Array, jax.Array, int], jax.Array]


def best_of_n_plan(
    budget: core.Budget | int, *, num_steps: int, nfe_per_call: int = 1, reward_cost: int = 1
) -> dict[str, int]:
    """What ``best_of_n`` buys (static): N = budget // (num_steps x nfe_per_call) samples.

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_steps: intervals of the dynamics' grid.
        nfe_per_call: cost of one velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": N, "nfe": N x solve, "reward_evals": N x reward_cost}``.

    Raises:
        ValueError: the budget is below one full solve.
    """
    per_solve = _checks.positive_int(num_steps, "num_steps") * nfe_per_call
    return base.solves_plan(budget, per_solve, reward_cost, "one full solve")


def best_of_n(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Best-of-N on ``dynamics``: N = budget // (NFE of one sample), argmax final reward.

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``); each sample is one SDE (or
            ODE) solve on its grid.
        reward_fn: batched reward ``x [N, *event] -> [N]``, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least one solve.
        event_shape: shape of one sample.
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the sample with the highest final reward;
            the trace holds the ``[N]`` final rewards (one round).

    Raises:
        ValueError: the budget is below one full solve.

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.best_of_n(key, dynamics, reward_fn, 16, event_shape=2)
        >>> x.shape, int(info.nfe), info.trace["reward"].shape  # 16 NFE buy 4 solves of 4 steps
        ((2,), 16, (4,))
    """
    dyn, plan = dyn_lib.planned(best_of_n_plan, dynamics, reward_fn, budget)
    n = plan["population"]
    shape = base.event_shape_of(event_shape)
    k0, k_steps = jax.random.split(key)
    x = flow.noise(k0, n, shape, dtype=dtype)
    ts = jnp.asarray(dyn.grid, x.dtype)
    v = dyn_lib._velocity(dyn, x, ts[0])

    def body(carry, i):
        x, v = carry
        x, v, _, _ = _move_no_reward(jax.random.fold_in(k_steps, i), dyn, x, v, i)
        return (x, v), None

    (x, v), _ = jax.lax.scan(body, (x, v), jnp.arange(dyn.num_steps - 1))
    last = dyn.num_steps - 1
    x, _, r, nan = dyn_lib.advance(
        jax.random.fold_in(k_steps, last), dyn, reward_fn, x, v, last, True
    )
    return base.finish(x, r, plan["nfe"], plan["reward_evals"], budget, {"reward": r}, nan, (x, r))


def _move_no_reward(key, dyn, x, v, i):
    """``advance`` without the reward (best-of-N needs only the final one)."""
    return dyn_lib.advance(key, dyn, lambda y: jnp.zeros(y.shape[0]), x, v, i, False)


def branching_cost(num_chains: int, num_children: int, num_steps: int, per_call: int = 1) -> int:
    """NFE of ``svdd`` / ``code`` / beam search: C initial evaluations + C K per step
    but the last."""
    return (num_chains + num_chains * num_children * (num_steps - 1)) * per_call


def branching_plan(
    budget: core.Budget | int,
    *,
    num_steps: int,
    num_chains: int = 1,
    num_children: int | None = None,
    block_length: int = 1,
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``branching_search`` (SVDD, CoDe, beam search) buys (static).

    Args:
        budget: a ``core.Budget`` with ``nfe`` or an int.
        num_steps: intervals of the dynamics' grid.
        num_chains: C parents kept (chains, or the beam width).
        num_children: K children per parent; default the largest with
            ``branching_cost`` <= budget.
        block_length: steps between selections (rewards are scored only then).
        nfe_per_call: cost of a velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": C K, "children": K, "nfe", "reward_evals"}``.

    Raises:
        ValueError: naming ``budget`` when one solve per chain (or the
            requested children) does not fit.
    """
    c = _checks.positive_int(num_chains, "num_chains")
    n = _checks.positive_int(num_steps, "num_steps")
    block = _checks.positive_int(block_length, "block_length")
    budget = base.check_budget(budget, c * n * nfe_per_call, f"one solve per chain ({c} chains)")
    if num_children is None:
        k = 1 if n == 1 else (budget // nfe_per_call - c) // (c * (n - 1))
    else:
        k = _checks.positive_int(num_children, "num_children")
        need = branching_cost(c, k, n, nfe_per_call)
        if need > budget:
            raise ValueError(
                f"budget: expected at least {need} NFE for {c} chains x {k} "
                f"children over {n} steps, got {budget}"
            )
    selections = sum((i + 1) % block == 0 for i in range(n - 1))
    return {
        "population": c * k,
        "children": k,
        "nfe": branching_cost(c, k, n, nfe_per_call),
        "reward_evals": (c + (selections + 1) * c * k) * reward_cost,
    }


def select_per_parent(key: jax.Array, rewards: jax.Array, num_keep: int) -> jax.Array:
    """SVDD / CoDe selection: the best child of each parent (rows ``[num_keep]``).

    Args:
        key: unused (a ``SelectFn`` takes one).
        rewards: ``[P K]`` with the children of parent ``p`` at rows
            ``p K .. p K + K - 1`` (``base.expand``).
        num_keep: P, the number of parents.

    Returns:
        ``[P]`` int rows, the best child of each parent.
    """
    del key
    k = rewards.shape[0] // num_keep
    j = jax.vmap(base.best_index)(rewards.reshape(num_keep, k))
    return jnp.arange(num_keep) * k + j


def branching_search(
    key: jax.Array,
    dyn: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    *,
    num_parents: int,
    num_children: int,
    select: SelectFn,
    block_length: int,
    event_shape: tuple[int, ...],
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, jax.Array, dict, jax.Array]:
    """Parents expanded into children, one SDE step each, the next parents chosen by ``select``.

    ``num_parents`` noises start at t = 0 (1 NFE each, with their lookahead
    rewards). The population is always ``P K`` rows, the children of parent
    ``p`` at rows ``p K .. p K + K - 1`` (``base.expand``). At every step each
    row takes one ``dynamics.advance`` move (1 NFE, fresh noise per row);
    every ``block_length`` steps, and after the last, the lookahead rewards
    are scored and ``select(key, rewards [P K], P) -> rows [P]`` picks the next
    parents, which are expanded again. Spends ``branching_cost(P, K, steps)``
    NFE; rewards as in ``branching_plan``.

    Args:
        key: typed PRNG key.
        dyn: the dynamics.
        reward_fn: batched reward, higher is better.
        num_parents: P parents kept after each selection.
        num_children: K children per parent.
        select: ``(key, rewards [P K], P) -> rows [P]``.
        block_length: steps between selections.
        event_shape: shape of one sample (a tuple).
        dtype: floating dtype of the noise.

    Returns:
        ``(x [P, *event], r [P], trace, num_nan)`` of the final parents; the
            trace has per step ``best_reward`` and ``selected`` (bool).
    """
    n = dyn.num_steps
    k0, k_steps = jax.random.split(key)
    k_sel = jax.random.fold_in(key, SELECT_SALT)
    x, v, r, nan = dyn_lib.init_particles(k0, dyn, reward_fn, num_parents, event_shape, dtype)
    x, v, r = base.expand((x, v, r), num_children)

    def chosen(i, x, v, r):
        rows = select(jax.random.fold_in(k_sel, i), r, num_parents)
        return base.expand((x[rows], v[rows], r[rows]), num_children)

    def body(carry, i):
        x, v, r, nan = carry
        k = jax.random.fold_in(k_steps, i)
        is_sel = (i + 1) % block_length == 0

        def with_reward(_):
            x1, v1, r1, n1 = dyn_lib.advance(k, dyn, reward_fn, x, v, i, False)
            return (*chosen(i, x1, v1, r1), n1)

        def without(_):
            x1, v1, _, _ = _move_no_reward(k, dyn, x, v, i)
            return x1, v1, r, jnp.int32(0)

        x1, v1, r1, n1 = jax.lax.cond(is_sel, with_reward, without, None)
        return (x1, v1, r1, nan + n1), (jnp.max(r1), is_sel)

    (x, v, r, nan), (trace_r, trace_sel) = jax.lax.scan(body, (x, v, r, nan), jnp.arange(n - 1))
    x, _, r, n1 = dyn_lib.advance(
        jax.random.fold_in(k_steps, n - 1), dyn, reward_fn, x, v, n - 1, True
    )
    rows = select(jax.random.fold_in(k_sel, n - 1), r, num_parents)
    trace = {
        "best_reward": jnp.append(trace_r, jnp.max(r)),
        "selected": jnp.append(trace_sel, True),
    }
    return x[rows], r[rows], trace, nan + n1


def run_branching(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_chains: int,
    num_children: int | None,
    block_length: int,
    select: SelectFn,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """A whole branching method (CoDe, SVDD, beam search): plan, search, pick the best.

    Plans with ``branching_plan`` (K from the budget unless ``num_children``
    is given), runs ``branching_search`` with ``num_chains`` parents and the
    ``select`` hook, and returns the best final parent.

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int (``branching_plan``).
        event_shape: shape of one sample.
        num_chains: C parents kept after each selection.
        num_children: K; None for the largest with ``branching_cost`` <= budget.
        block_length: steps between selections.
        select: ``(key, rewards [C K], C) -> rows [C]``.
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the best final parent; ``population``
            holds the final parents and their rewards; the trace is
            ``branching_search``'s.

    Raises:
        ValueError: the budget does not fit one solve per chain (or the
            requested children).
    """
    options = dict(num_chains=num_chains, num_children=num_children, block_length=block_length)
    dyn, plan = dyn_lib.planned(branching_plan, dynamics, reward_fn, budget, **options)
    x, r, trace, nan = branching_search(
        key,
        dyn,
        reward_fn,
        num_parents=num_chains,
        num_children=plan["children"],
        select=select,
        block_length=block_length,
        event_shape=base.event_shape_of(event_shape),
        dtype=dtype,
    )
    return base.finish(x, r, plan["nfe"], plan["reward_evals"], budget, trace, nan, (x, r))


def svdd(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_chains: int = 1,
    num_children: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """SVDD (Li et al. 2024; Kim et al. 2025 baseline): per step, K children per chain.

    Keeps the argmax of the lookahead reward. K from the budget unless
    ``num_children`` is given. ``code`` with ``block_length=1``.

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least one solve
            per chain (``branching_plan``).
        event_shape: shape of one sample.
        num_chains: C independent chains (the best final one is returned).
        num_children: K; default the largest with ``branching_cost`` <= budget.
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the best final sample; the trace has
            ``best_reward`` after each step and ``selected`` (all True).

    Raises:
        ValueError: the budget does not fit one solve per chain (or the
            requested children).

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.svdd(key, dynamics, reward_fn, 32, event_shape=2)
        >>> x.shape, int(info.nfe), int(info.reward_evals), info.trace["selected"].tolist()
        ((2,), 31, 41, [True, True, True, True])
    """
    return code(
        key,
        dynamics,
        reward_fn,
        budget,
        event_shape=event_shape,
        num_chains=num_chains,
        num_children=num_children,
        block_length=1,
        dtype=dtype,
    )


def code(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    block_length: int = 2,
    num_chains: int = 1,
    num_children: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """CoDe (Singh et al. 2024; Kim et al. 2025 baseline): K children per chain.

    The children run ``block_length`` steps, then the best lookahead reward is
    kept (and replicated).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least one solve
            per chain (``branching_plan``).
        event_shape: shape of one sample.
        num_chains: C independent chains (the best final one is returned).
        num_children: K; default the largest with ``branching_cost`` <= budget.
        block_length: steps between selections (1 is SVDD).
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the best final sample; the trace has per
            step ``best_reward`` and ``selected`` (bool).

    Raises:
        ValueError: the budget does not fit one solve per chain (or the
            requested children).

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.code(key, dynamics, reward_fn, 32, event_shape=2, block_length=2)
        >>> x.shape, int(info.nfe), info.trace["selected"].shape
        ((2,), 31, (4,))
    """
    return run_branching(
        key,
        dynamics,
        reward_fn,
        budget,
        event_shape=event_shape,
        num_chains=num_chains,
        num_children=num_children,
        block_length=block_length,
        select=select_per_parent,
        dtype=dtype,
    )


def smc_plan(
    budget: core.Budget | int,
    *,
    num_steps: int,
    num_particles: int | None = None,
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``smc`` buys (static): N = num_particles or budget // (NFE of one solve).

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_steps: intervals of the dynamics' grid.
        num_particles: N; default budget // (NFE of one solve).
        nfe_per_call: cost of one velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": N, "nfe": N x solve, "reward_evals": N (steps + 1) x reward_cost}``.

    Raises:
        ValueError: the budget is below ``N`` solves (one solve without ``num_particles``).
    """
    steps = _checks.positive_int(num_steps, "num_steps")
    per_solve = steps * nfe_per_call
    if num_particles is None:
        budget = base.check_budget(budget, per_solve, "one full solve")
        n = budget // per_solve
    else:
        n = _checks.positive_int(num_particles, "num_particles")
        base.check_budget(budget, n * per_solve, f"{n} particles x one solve")
    return {"population": n, "nfe": n * per_solve, "reward_evals": n * (steps + 1) * reward_cost}


def smc(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    alpha: float = 1.0,
    ess_threshold: float = 0.5,
    resampling: str | Callable = "systematic",
    num_particles: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """SMC with the reward-difference potential exp(alpha (r_{t+1} - r_t)) (Kim et al. 2025).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics``.
        reward_fn: batched reward.
        budget: a ``core.Budget`` with ``nfe`` or an int; at least
            ``num_particles`` solves (``smc_plan``).
        event_shape: shape of one sample.
        alpha: reward scale (inverse temperature) of the target p exp(alpha r).
        ess_threshold: resample when ESS < threshold N.
        resampling: a scheme of ``inferax.sampling.resampling`` or a callable.
        num_particles: N; default budget // (NFE of one solve).
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``: the best final particle; ``population``
            holds the final (resampled, equally weighted) particles and rewards;
            the trace has per-step ``ess``, ``resampled`` and ``best_reward``.

    Raises:
        ValueError: the budget is below ``num_particles`` solves (or one solve).
        TypeError: ``alpha`` is not a real number or a scalar array.

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.smc(key, dynamics, reward_fn, 32, event_shape=2, alpha=1.0)
        >>> samples, rewards = info.population  # 32 NFE buy 8 particles of 4 steps
        >>> x.shape, samples.shape, int(info.nfe)
        ((2,), (8, 2), 32)
    """
    dyn, plan = dyn_lib.planned(smc_plan, dynamics, reward_fn, budget, num_particles=num_particles)
    n = plan["population"]
    if isinstance(alpha, bool) or not (
        isinstance(alpha, int | float) or (hasattr(alpha, "dtype") and jnp.ndim(alpha) == 0)
    ):
        raise TypeError(f"alpha: expected a real number or a scalar array, got {alpha!r}")
    shape = base.event_shape_of(event_shape)
    k0, k_run, k_last = jax.random.split(key, 3)
    x, v, r, nan = dyn_lib.init_particles(k0, dyn, reward_fn, n, shape, dtype)
    steps = dyn.num_steps

    def transition(last):
        def fn(k, particles, i):
            x, v, r = particles
            x1, v1, r1, n1 = dyn_lib.advance(k, dyn, reward_fn, x, v, i, last)
            # A NaN reward became -inf: its particle gets weight 0, never resampled.
            inc = jnp.where(jnp.isneginf(r1), -jnp.inf, alpha * (r1 - r))
            return (x1, v1, r1), inc, (r1, n1)

        return fn

    kw = dict(resampling=resampling, ess_threshold=ess_threshold)
    body = smc_lib.build(transition(False), **kw)
    state = body.init((x, v, r), alpha * r)
    state, infos = body.run(k_run, state, jnp.arange(steps - 1))
    # The last step always resamples, so that the returned population is equally weighted.
    final = smc_lib.build(transition(True), resampling=resampling, ess_threshold=1.0)
    state, last_info = final.step(k_last, state, jnp.int32(steps - 1), True)
    x, _, r = state.particles
    stack = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
    trace = {
        "ess": stack(infos.ess, last_info.ess),
        "resampled": stack(infos.resampled, last_info.resampled),
        "best_reward": stack(jnp.max(infos.aux[0], axis=1), jnp.max(last_info.aux[0])),
        "all_invalid": stack(infos.all_invalid, last_info.all_invalid),
    }
    nan = nan + jnp.sum(infos.aux[1]) + last_info.aux[1]
    return base.finish(x, r, plan["nfe"], plan["reward_evals"], budget, trace, nan, (x, r))
