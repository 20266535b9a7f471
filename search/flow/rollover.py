"""Rollover Budget Forcing (Kim, Yoon, Hwang, Sung 2025; REFERENCES section 2).

C chains. First ``num_initial`` noises per chain are drawn and the one with
the best lookahead reward starts the chain. Then, at every step, a chain may
draw up to ``quota + rollover`` SDE proposals from its state (1 NFE each: the
velocity at the proposal, shared by its lookahead reward and its next step).
The first proposal, in draw order, whose reward beats the chain's current
reward is accepted and the quota it did not use rolls over to the next step;
if none does, the best proposal is accepted and the rollover is reset to 0.
The best final chain is returned.

On an accelerator proposals are drawn ``block_size`` at a time (one batched
network call per block, for all chains at once). Proposal ``j`` of chain ``c``
at step ``i`` always uses the noise of ``fold_in(fold_in(fold_in(key, i), c),
j)``, and the first improving proposal in draw order is accepted, so every
block size makes the same decisions as one at a time; a block may evaluate
proposals after the accepted one, and every proposal drawn is counted in the
NFE. The quota is planned so that even then the budget holds:
quota = (budget - C num_initial) // (C (num_steps - 1)) - (block_size - 1)
(the final step's proposals are clean samples, scored without a network
evaluation). Over the steps, a chain uses at most its quotas, and a block
overshoots the accepted proposal by at most ``block_size - 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

__all__ = ["rbf", "rbf_cost", "rbf_quota"]


def rbf_cost(num_chains, num_initial, num_steps, quota, block_size=1, per_call=1) -> int:
    """The most NFE ``rbf`` can spend with these settings (what the budget must cover)."""
    return (num_chains * num_initial + num_chains * (num_steps - 1) * (quota + block_size - 1)) * (
        per_call
    )


def rbf_quota(budget, num_chains, num_initial, num_steps, block_size=1, per_call=1) -> int:
    """The per-step quota ``rbf`` plans for a budget (may be < 1: budget too small)."""
    spare = budget // per_call - num_chains * num_initial
    return spare // (num_chains * (num_steps - 1)) - (block_size - 1)


def _proposal_noise(key, chains, js, shape, dtype):
    def one(c, j):
        k = jax.random.fold_in(jax.random.fold_in(key, c), j)
        return jax.random.normal(k, shape, dtype)

    c = jnp.arange(chains)
    return jax.vmap(lambda ci: jax.vmap(lambda j: one(ci, j))(js))(c)


def _rbf_step(key, dyn, reward_fn, state, i, quota, block, last):
    x, v, r, roll = state
    chains, shape = x.shape[0], x.shape[1:]
    avail = quota + roll
    rep = lambda a: jnp.repeat(a, block, axis=0)  # noqa: E731

    def cond(c):
        b, done = c[0], c[1]
        return jnp.any(~done & (b * block < avail))

    def body(c):
        b, done, acc_j, ax, av, ar, bx, bv, br, drawn, nan = c
        js = b * block + jnp.arange(block)
        eps = _proposal_noise(key, chains, js, shape, x.dtype).reshape((chains * block, *shape))
        px, pv, pr, n1 = dyn_lib.advance(key, dyn, reward_fn, rep(x), rep(v), i, last, eps)
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
    _, done, acc_j, ax, av, ar, bx, bv, br, drawn, nan = jax.lax.while_loop(cond, body, start)
    ex = done.reshape((chains,) + (1,) * len(shape))
    x1 = jnp.where(ex, ax, bx)
    v1 = jnp.where(ex, av, bv)
    r1 = jnp.where(done, ar, br)
    roll1 = jnp.where(done, avail - (acc_j + 1), 0).astype(jnp.int32)
    return (x1, v1, r1, roll1), (acc_j, drawn, nan)


def rbf(
    key,
    dynamics,
    reward_fn,
    budget: int,
    *,
    event_shape,
    num_chains: int = 2,
    num_initial: int = 4,
    block_size: int = 1,
    quota: int | None = None,
    dtype=None,
):
    """Rollover Budget Forcing on ``dynamics`` (see the module docstring).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` with at least 2 steps (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: NFE; must cover ``rbf_cost`` with a quota of at least 1.
        event_shape: shape of one sample.
        num_chains: C (Kim et al. use 2).
        num_initial: initial noises per chain (Kim et al. use 25).
        block_size: proposals drawn per batched call (1: one at a time).
        quota: per-step proposals per chain; default the largest that fits.
        dtype: floating dtype of the noise.

    Returns:
        ``(x [*event], SearchInfo)``. The trace has per step ``accepted``
        (``[C]`` index of the accepted proposal, -1 when none improved and the
        best was taken), ``drawn`` (``[C]`` proposals evaluated), ``rollover``
        (``[C]``) and ``best_reward``.
    """
    dyn = dyn_lib.check_dynamics(dynamics)
    chains = _checks.positive_int(num_chains, "num_chains")
    k0_per = _checks.positive_int(num_initial, "num_initial")
    block = _checks.positive_int(block_size, "block_size")
    n, per = dyn.num_steps, dyn.nfe_per_call
    if n < 2:
        raise ValueError(f"dynamics: expected at least 2 steps for RBF, got {n}")
    r_cost = base.check_reward(reward_fn)
    least = rbf_cost(chains, k0_per, n, 1, block, per)
    budget = base.check_budget(
        budget, least, f"{chains} chains x {num_initial} initial particles and a quota of 1"
    )
    if quota is None:
        quota = rbf_quota(budget, chains, k0_per, n, block, per)
    else:
        quota = _checks.positive_int(quota, "quota")
        need = rbf_cost(chains, k0_per, n, quota, block, per)
        if need > budget:
            raise ValueError(
                f"budget: expected at least {need} NFE for quota {quota} with block_size "
                f"{block}, got {budget}"
            )
    shape = base.event_shape_of(event_shape)
    k_init, k_steps = jax.random.split(key)
    x, v, r, nan = dyn_lib.init_particles(k_init, dyn, reward_fn, chains * k0_per, shape, dtype)
    best = jax.vmap(base.best_index)(r.reshape(chains, k0_per))
    rows = jnp.arange(chains) * k0_per + best
    state = (x[rows], v[rows], r[rows], jnp.zeros((chains,), jnp.int32))

    def body(state, i):
        state, (acc, drawn, n1) = _rbf_step(
            jax.random.fold_in(k_steps, i), dyn, reward_fn, state, i, quota, block, False
        )
        return state, (acc, drawn, state[3], jnp.max(state[2]), n1)

    state, (acc, drawn, roll, best_r, nans) = jax.lax.scan(body, state, jnp.arange(n - 1))
    state, (acc_l, drawn_l, nan_l) = _rbf_step(
        jax.random.fold_in(k_steps, n - 1), dyn, reward_fn, state, n - 1, quota, block, True
    )
    x, _, r, roll_l = state
    nfe = (chains * k0_per + jnp.sum(drawn)) * per
    evals = (chains * k0_per + jnp.sum(drawn) + jnp.sum(drawn_l)) * r_cost
    cat = lambda a, b: jnp.concatenate([a, b[None]])  # noqa: E731
    trace = {
        "accepted": cat(acc, acc_l),
        "drawn": cat(drawn, drawn_l),
        "rollover": cat(roll, roll_l),
        "best_reward": cat(best_r, jnp.max(r)),
    }
    i = base.best_index(r)
    info = base.SearchInfo(
        nfe=nfe.astype(jnp.int32),
        reward_evals=evals.astype(jnp.int32),
        reward=r[i],
        budget=budget,
        trace=trace,
        num_nan=nan + jnp.sum(nans) + nan_l,
        population=(x, r),
    )
    return x[i], info
