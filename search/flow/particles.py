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

Each returns ``(x [*event], SearchInfo)`` with the best final sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inferax.sampling import _checks, flow
from inferax.sampling import smc as smc_lib
from inferax.search.flow import base
from inferax.search.flow import dynamics as dyn_lib

__all__ = ["best_of_n", "code", "svdd", "smc", "branching_cost"]


def _setup(dynamics, reward_fn, budget, chains, what):
    dyn = dyn_lib.check_dynamics(dynamics)
    r_cost = base.check_reward(reward_fn)
    per_chain = dyn.num_steps * dyn.nfe_per_call
    budget = base.check_budget(budget, chains * per_chain, what)
    return dyn, r_cost, budget


def _finish(x, r, nfe, evals, budget, trace, nan, population=None):
    i = base.best_index(r)
    info = base.SearchInfo(
        nfe=jnp.asarray(nfe, jnp.int32),
        reward_evals=jnp.asarray(evals, jnp.int32),
        reward=r[i],
        budget=budget,
        trace=trace,
        num_nan=nan,
        population=population,
    )
    return x[i], info


def best_of_n(key, dynamics, reward_fn, budget: int, *, event_shape, dtype=None):
    """Best-of-N on ``dynamics``: N = budget // (NFE of one sample), argmax final reward.

    The trace holds the ``[N]`` final rewards (one round).
    """
    dyn, r_cost, budget = _setup(dynamics, reward_fn, budget, 1, "one full solve")
    n = budget // (dyn.num_steps * dyn.nfe_per_call)
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
    nfe = n * dyn.num_steps * dyn.nfe_per_call
    return _finish(x, r, nfe, n * r_cost, budget, {"reward": r}, nan, (x, r))


def _move_no_reward(key, dyn, x, v, i):
    """``advance`` without the reward (best-of-N needs only the final one)."""
    return dyn_lib.advance(key, dyn, lambda y: jnp.zeros(y.shape[0]), x, v, i, False)


def branching_cost(num_chains: int, num_children: int, num_steps: int, per_call: int = 1) -> int:
    """NFE of ``svdd`` / ``code``: C initial evaluations + C K per step but the last."""
    return (num_chains + num_chains * num_children * (num_steps - 1)) * per_call


def _branching(key, dyn, reward_fn, budget, r_cost, chains, children, block, shape, dtype):
    n = dyn.num_steps
    k0, k_steps = jax.random.split(key)
    x, v, r, nan = dyn_lib.init_particles(k0, dyn, reward_fn, chains, shape, dtype)
    # Children of chain c sit at rows c K .. c K + K - 1.
    rep = lambda a: jnp.repeat(a, children, axis=0)  # noqa: E731
    x, v, r = rep(x), rep(v), rep(r)
    evals = chains

    def select(x, v, r):
        rr = r.reshape(chains, children)
        j = jax.vmap(base.best_index)(rr)
        rows = jnp.arange(chains) * children + j
        return rep(x[rows]), rep(v[rows]), rep(r[rows])

    def body(carry, i):
        x, v, r, nan = carry
        k = jax.random.fold_in(k_steps, i)
        is_sel = (i + 1) % block == 0

        def with_reward(_):
            x1, v1, r1, n1 = dyn_lib.advance(k, dyn, reward_fn, x, v, i, False)
            x1, v1, r1 = select(x1, v1, r1)
            return x1, v1, r1, n1

        def without(_):
            x1, v1, _, _ = _move_no_reward(k, dyn, x, v, i)
            return x1, v1, r, jnp.int32(0)

        x1, v1, r1, n1 = jax.lax.cond(is_sel, with_reward, without, None)
        return (x1, v1, r1, nan + n1), (jnp.max(r1), is_sel)

    (x, v, r, nan), (trace_r, trace_sel) = jax.lax.scan(body, (x, v, r, nan), jnp.arange(n - 1))
    evals += int(sum(((i + 1) % block == 0) for i in range(n - 1))) * chains * children
    x, _, r, n1 = dyn_lib.advance(
        jax.random.fold_in(k_steps, n - 1), dyn, reward_fn, x, v, n - 1, True
    )
    evals += chains * children
    x, _, r = select(x, v, r)
    firsts = jnp.arange(chains) * children
    trace = {
        "best_reward": jnp.append(trace_r, jnp.max(r)),
        "selected": jnp.append(trace_sel, True),
    }
    nfe = branching_cost(chains, children, n, dyn.nfe_per_call)
    return _finish(
        x[firsts], r[firsts], nfe, evals * r_cost, budget, trace, nan + n1, (x[firsts], r[firsts])
    )


def _children_for(dyn, budget, chains, num_children):
    n, per = dyn.num_steps, dyn.nfe_per_call
    if n == 1:
        k = num_children if num_children is not None else 1
    else:
        k = (budget // per - chains) // (chains * (n - 1))
    if num_children is not None:
        num_children = _checks.positive_int(num_children, "num_children")
        need = branching_cost(chains, num_children, n, per)
        if need > budget:
            raise ValueError(
                f"budget: expected at least {need} NFE for {chains} chains x {num_children} "
                f"children over {n} steps, got {budget}"
            )
        k = num_children
    return k


def svdd(
    key,
    dynamics,
    reward_fn,
    budget: int,
    *,
    event_shape,
    num_chains=1,
    num_children=None,
    dtype=None,
):
    """SVDD (Li et al. 2024; Kim et al. 2025 baseline): per step, K children per chain, keep
    the argmax of the lookahead reward. K from the budget unless ``num_children`` is given.

    The trace has ``best_reward`` after each step and ``selected`` (all True).
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
    key,
    dynamics,
    reward_fn,
    budget: int,
    *,
    event_shape,
    num_chains=1,
    num_children=None,
    block_length: int = 2,
    dtype=None,
):
    """CoDe (Singh et al. 2024; Kim et al. 2025 baseline): K children per chain run
    ``block_length`` steps, then the best lookahead reward is kept (and replicated).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics`` (``make_dynamics``).
        reward_fn: batched reward, higher is better.
        budget: NFE; at least one solve per chain.
        event_shape: shape of one sample.
        num_chains: C independent chains (the best final one is returned).
        num_children: K; default the largest with ``branching_cost`` <= budget.
        block_length: steps between selections (1 is SVDD).
        dtype: floating dtype of the noise.
    """
    chains = _checks.positive_int(num_chains, "num_chains")
    block = _checks.positive_int(block_length, "block_length")
    dyn, r_cost, budget = _setup(dynamics, reward_fn, budget, chains, "one solve per chain")
    k = _children_for(dyn, budget, chains, num_children)
    return _branching(
        key,
        dyn,
        reward_fn,
        budget,
        r_cost,
        chains,
        k,
        block,
        base.event_shape_of(event_shape),
        dtype,
    )


def smc(
    key,
    dynamics,
    reward_fn,
    budget: int,
    *,
    event_shape,
    alpha: float = 1.0,
    ess_threshold: float = 0.5,
    resampling="systematic",
    num_particles=None,
    dtype=None,
):
    """SMC with the reward-difference potential exp(alpha (r_{t+1} - r_t)) (Kim et al. 2025).

    Args:
        key: typed PRNG key.
        dynamics: a ``Dynamics``.
        reward_fn: batched reward.
        budget: NFE; at least ``num_particles`` solves.
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
    """
    dyn = dyn_lib.check_dynamics(dynamics)
    per_solve = dyn.num_steps * dyn.nfe_per_call
    if num_particles is None:
        _, r_cost, budget = _setup(dyn, reward_fn, budget, 1, "one full solve")
        n = budget // per_solve
    else:
        n = _checks.positive_int(num_particles, "num_particles")
        _, r_cost, budget = _setup(dyn, reward_fn, budget, n, f"{n} particles x one solve")
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
    evals = n * (steps + 1) * r_cost
    return _finish(x, r, n * per_solve, evals, budget, trace, nan, (x, r))
