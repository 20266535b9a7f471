"""Rollover Budget Forcing (Kim, Yoon, Hwang, Sung 2025; REFERENCES section 2).

C chains. First ``num_initial`` noises per chain are drawn and the one with
the best lookahead reward starts the chain. Then, at every step, a chain may
draw up to ``quota + rollover`` SDE proposals from its state (1 NFE each: the
velocity at the proposal, shared by its lookahead reward and its next step).
The first proposal, in draw order, whose reward beats the chain's current
reward is accepted and the quota it did not use rolls over to the next step;
if none does, the best proposal is accepted and the rollover is reset to 0.
The best final chain is returned.

On an accelerator proposals are drawn ``block_size`` at a time for all chains
at once: one batched network call of ``W = C block_size`` rows, repeated while
some chain still draws. Every row of every call is evaluated and counted
(chains that are done, or out of proposals, ride along until the slowest chain
is done), so ``info.nfe`` is exactly the network evaluations made. Proposal
``j`` of chain ``c`` at step ``i`` always uses the noise of
``fold_in(fold_in(fold_in(key, i), c), j)`` and the first improving proposal
in draw order is accepted, so every block size makes the same decisions as
one at a time, as long as the budget cap below does not bind.

Budget (``rbf_plan``): the quota is planned in whole blocks,
quota = block_size floor((budget - C num_initial) / (C (num_steps - 1) block_size)),
and a run-time cap keeps the lockstep evaluation inside the budget: the
``num_steps - 1`` network steps together evaluate at most the budget's
spare rows (``budget - C num_initial``, in whole calls), each step keeping one
call in reserve for every later step, so a step cut short by the cap still
draws one block per chain (and then accepts its best draw). The final step's
proposals are clean samples scored without a network evaluation; it draws at
most its quota (in whole blocks) plus the rows the earlier steps left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

if TYPE_CHECKING:
    from inferax.search import core

__all__ = ["rbf", "rbf_cost", "rbf_plan", "rbf_quota"]


def _whole_blocks(quota: int, block: int) -> int:
    return -(-quota // block) * block


def rbf_cost(num_chains, num_initial, num_steps, quota, block_size=1, per_call=1) -> int:
    """The least NFE budget ``rbf`` accepts for ``quota``: the initial particles and every
    chain drawing its quota, in whole blocks, at every network step."""
    steps_rows = num_chains * (num_steps - 1) * _whole_blocks(quota, block_size)
    return (num_chains * num_initial + steps_rows) * per_call


def rbf_quota(budget, num_chains, num_initial, num_steps, block_size=1, per_call=1) -> int:
    """The per-step quota ``rbf`` plans for a budget: the most whole blocks per chain and
    network step (0 or less: the budget is too small)."""
    spare = budget // per_call - num_chains * num_initial
    return spare // (num_chains * (num_steps - 1) * block_size) * block_size


def rbf_plan(
    budget: core.Budget | int,
    *,
    num_steps: int,
    num_chains: int = 2,
    num_initial: int = 4,
    block_size: int = 1,
    quota: int | None = None,
    nfe_per_call: int = 1,
    reward_cost: int = 1,
) -> dict[str, int]:
    """What ``rbf`` buys with ``budget`` (static; see the module docstring).

    Args:
        budget: a ``core.Budget`` with ``nfe`` or a positive int.
        num_steps: intervals of the dynamics' grid (at least 2).
        num_chains: C chains, as in ``rbf``.
        num_initial: initial noises per chain, as in ``rbf``.
        block_size: proposals per chain drawn per batched call, as in ``rbf``.
        quota: per-step proposals per chain, as in ``rbf``.
        nfe_per_call: cost of a velocity call.
        reward_cost: reward evaluations per sample scored.

    Returns:
        ``{"population": C, "quota", "row_cap"`` (rows the network steps may
            evaluate together), ``"nfe"``, ``"reward_evals"}`` (the most it can
            spend).

    Raises:
        ValueError: naming ``budget`` when a quota of one block does not fit
            (``num_steps`` below 2 names ``num_steps``).
    """
    chains = _checks.positive_int(num_chains, "num_chains")
    k0 = _checks.positive_int(num_initial, "num_initial")
    block = _checks.positive_int(block_size, "block_size")
    n = _checks.positive_int(num_steps, "num_steps")
    if n < 2:
        raise ValueError(f"num_steps: expected at least 2 steps for RBF, got {n}")
    least = rbf_cost(chains, k0, n, 1, block, nfe_per_call)
    budget = base.check_budget(
        budget,
        least,
        f"{chains} chains x {k0} initial particles and one block of {block} per step",
    )
    if quota is None:
        quota = rbf_quota(budget, chains, k0, n, block, nfe_per_call)
    else:
        quota = _checks.positive_int(quota, "quota")
        need = rbf_cost(chains, k0, n, quota, block, nfe_per_call)
        if need > budget:
            raise ValueError(
                f"budget: expected at least {need} NFE for quota {quota} with block_size "
                f"{block}, got {budget}"
            )
    width = chains * block
    row_cap = (budget // nfe_per_call - chains * k0) // width * width
    last_rows = chains * _whole_blocks(quota, block)
    return {
        "population": chains,
        "quota": quota,
        "row_cap": row_cap,
        "nfe": (chains * k0 + row_cap) * nfe_per_call,
        "reward_evals": (chains * k0 + row_cap + last_rows) * reward_cost,
    }


def _proposal_noise(key, chains, js, shape, dtype):
    def one(c, j):
        k = jax.random.fold_in(jax.random.fold_in(key, c), j)
        return jax.random.normal(k, shape, dtype)

    c = jnp.arange(chains)
    return jax.vmap(lambda ci: jax.vmap(lambda j: one(ci, j))(js))(c)


def _rbf_step(key, dyn, reward_fn, state, i, quota, block, last, limit):
    """One step of every chain; draws blocks while a chain draws and ``limit`` rows allow."""
    x, v, r, roll = state
    chains, shape = x.shape[0], x.shape[1:]
    width = chains * block
    avail = quota + roll

    def cond(c):
        b, done = c[0], c[1]
        drawing = jnp.any(~done & (b * block < avail))
        return drawing & ((b + 1) * width <= limit)

    def body(c):
        b, done, acc_j, ax, av, ar, bx, bv, br, drawn, nan = c
        js = b * block + jnp.arange(block)
        eps = _proposal_noise(key, chains, js, shape, x.dtype).reshape((chains * block, *shape))
        xs, vs = base.expand((x, v), block)
        px, pv, pr, n1 = dyn_lib.advance(key, dyn, reward_fn, xs, vs, i, last, eps)
        px = px.reshape((chains, block, *shape))
        pv = pv.reshape((chains, block, *shape))
        pr = pr.reshape(chains, block)
        valid = (js[None, :] < avail[:, None]) & ~done[:, None]
        improving = valid & (pr > r[:, None])
        first = jnp.argmax(improving, axis=1)
        has = jnp.any(improving, axis=1)
        rows = jnp.arange(chains)
        sel = lambda a, j: a[rows, j]  # noqa: E731
        new = has & ~done
        acc_j = jnp.where(new, js[first], acc_j)
        ex = lambda m, _: m.reshape((chains,) + (1,) * len(shape))  # noqa: E731
        ax = jnp.where(ex(new, ax), sel(px, first), ax)
        av = jnp.where(ex(new, av), sel(pv, first), av)
        ar = jnp.where(new, sel(pr, first), ar)
        masked = jnp.where(valid, pr, -jnp.inf)
        j_best = jnp.argmax(masked, axis=1)
        # Strictly better than earlier blocks (ties: the earlier draw), or the first valid one.
        better = jnp.any(valid, axis=1) & ((sel(masked, j_best) > br) | (drawn == 0))
        bx = jnp.where(ex(better, bx), sel(px, j_best), bx)
        bv = jnp.where(ex(better, bv), sel(pv, j_best), bv)
        br = jnp.where(better, sel(masked, j_best), br)
        drawn = drawn + jnp.sum(valid, axis=1).astype(jnp.int32)
        return b + 1, done | has, acc_j, ax, av, ar, bx, bv, br, drawn, nan + n1

    neg = jnp.full_like(r, -jnp.inf)
    zeros_c = jnp.zeros((chains,), jnp.int32)
    start = (
        jnp.int32(0),
        jnp.zeros((chains,), bool),
        jnp.full((chains,), -1, jnp.int32),
        x,
        v,
        neg,
        x,
        v,
        neg,
        zeros_c,
        jnp.int32(0),
    )
    b, done, acc_j, ax, av, ar, bx, bv, br, drawn, nan = jax.lax.while_loop(cond, body, start)
    ex = done.reshape((chains,) + (1,) * len(shape))
    x1 = jnp.where(ex, ax, bx)
    v1 = jnp.where(ex, av, bv)
    r1 = jnp.where(done, ar, br)
    roll1 = jnp.where(done, avail - (acc_j + 1), 0).astype(jnp.int32)
    return (x1, v1, r1, roll1), (acc_j, drawn, b * width, nan)


def rbf(
    key: jax.Array,
    dynamics: dyn_lib.Dynamics,
    reward_fn: base.RewardFn,
    budget: core.Budget | int,
    *,
    event_shape: int | Sequence[int],
    num_chains: int = 2,
    num_initial: int = 4,
    block_size: int = 1,
    quota: int | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> tuple[jax.Array, base.SearchInfo]:
    """Rollover Budget Forcing on ``dynamics`` (see the module docstring).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` with at least 2 steps (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: a ``core.Budget`` with ``nfe`` or an int; must cover
            ``rbf_cost`` with a quota of one block (``rbf_plan``).
        event_shape: shape of one sample.
        num_chains: C (Kim et al. use 2).
        num_initial: initial noises per chain (Kim et al. use 25).
        block_size: proposals per chain drawn per batched call (1: one at a time).
        quota: per-step proposals per chain; default the most whole blocks
            that fit (``rbf_quota``).
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``. The trace has per step ``accepted``
            (``[C]`` index of the accepted proposal, -1 when none improved and the
            best was taken), ``drawn`` (``[C]`` proposals each chain considered),
            ``rows`` (rows evaluated, all chains, what the step cost),
            ``rollover`` (``[C]``) and ``best_reward``.

    Raises:
        ValueError: ``dynamics`` with fewer than 2 steps, or a budget that does
            not cover a quota of one block.

    Example:
        With ``target``, ``reward_fn``, ``dynamics`` and ``key`` from the package example
        (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> x, info = flow.rbf(key, dynamics, reward_fn, 48, event_shape=2)
        >>> x.shape, int(info.nfe), info.trace["accepted"].shape  # per step, per chain
        ((2,), 48, (4, 2))
    """
    dyn = dyn_lib.check_dynamics(dynamics)
    n, per = dyn.num_steps, dyn.nfe_per_call
    if n < 2:
        raise ValueError(f"dynamics: expected at least 2 steps for RBF, got {n}")
    r_cost = base.check_reward(reward_fn)
    options = dict(num_chains=num_chains, num_initial=num_initial, block_size=block_size)
    _, plan = dyn_lib.planned(rbf_plan, dyn, reward_fn, budget, quota=quota, **options)
    chains, k0_per, block, quota = (
        plan["population"],
        int(num_initial),
        int(block_size),
        plan["quota"],
    )
    width, cap = chains * block, plan["row_cap"]
    shape = base.event_shape_of(event_shape)
    k_init, k_steps = jax.random.split(key)
    x, v, r, nan = dyn_lib.init_particles(k_init, dyn, reward_fn, chains * k0_per, shape, dtype)
    best = jax.vmap(base.best_index)(r.reshape(chains, k0_per))
    rows = jnp.arange(chains) * k0_per + best
    state = (x[rows], v[rows], r[rows], jnp.zeros((chains,), jnp.int32))

    def body(carry, i):
        state, spent = carry
        limit = cap - spent - width * (n - 2 - i)  # one call in reserve per later step
        state, (acc, drawn, used, n1) = _rbf_step(
            jax.random.fold_in(k_steps, i), dyn, reward_fn, state, i, quota, block, False, limit
        )
        return (state, spent + used), (acc, drawn, used, state[3], jnp.max(state[2]), n1)

    (state, spent), (acc, drawn, used, roll, best_r, nans) = jax.lax.scan(
        body, (state, jnp.int32(0)), jnp.arange(n - 1)
    )
    limit_l = chains * _whole_blocks(quota, block) + cap - spent
    state, (acc_l, drawn_l, used_l, nan_l) = _rbf_step(
        jax.random.fold_in(k_steps, n - 1),
        dyn,
        reward_fn,
        state,
        n - 1,
        quota,
        block,
        True,
        limit_l,
    )
    x, _, r, roll_l = state
    cat = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
    trace = {
        "accepted": cat(acc, acc_l),
        "drawn": cat(drawn, drawn_l),
        "rows": cat(used, used_l),
        "rollover": cat(roll, roll_l),
        "best_reward": cat(best_r, jnp.max(r)),
    }
    nfe = (chains * k0_per + spent) * per
    evals = (chains * k0_per + spent + used_l) * r_cost
    num_nan = nan + jnp.sum(nans) + nan_l
    return base.finish(x, r, nfe, evals, budget, trace, num_nan, population=(x, r))
