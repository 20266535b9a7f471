"""Stochastic generation for reward-guided particle methods (Kim et al. 2025, REFERENCES 2).

A ``Dynamics`` bundles what a particle method moves with: the velocity on an
interpolant, the noise scale g(t) of the marginal-preserving SDE and the time
grid. Three kinds, all from one model trained on the linear interpolant:

- ``"ode"``: linear interpolant, g = 0 (deterministic; branching adds nothing);
- ``"linear"``: linear interpolant, SDE with g = 3 (1 - t)^2 by default;
- ``"vp"``: the variance-preserving interpolant (``interpolants.vp``), the
  velocity converted by ``interpolants.convert_velocity`` (one network
  evaluation per call) and the same g.

The grid is chosen in linear-interpolant time and, for VP, mapped to the VP
times with the same signal-to-noise ratio (``interpolants.time_to_linear``
inverted), so the three kinds discretise the same path: ``time_grid="uniform"``
(default) or ``"kim"``, t = 1 - sqrt(1 - u^2) for uniform u (the reference
code's "exp" schedule: small steps at high noise, a long last step).

``advance`` is the one move every method makes: from particles at ``t0``
whose velocity ``v`` is already known, an Euler-Maruyama step to ``t1`` using
that ``v`` (no evaluation: ``sde.drift(..., velocity=v)`` moved by
``sde.euler_maruyama``, the package's single EM step), then one velocity
evaluation at the new point, which serves both the lookahead reward (the
posterior mean E[x1 | x_t1]) and the next step. So one step costs 1 NFE per
particle; at t1 = 1 the state is clean, the reward is taken on it and no
velocity is evaluated. Noise for particle ``i`` comes from ``fold_in(key, i)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, flow, sde
from inferax.sampling import interpolants as interp_lib
from inferax.search.flow import base

__all__ = ["DYNAMICS", "Dynamics", "advance", "init_particles", "make_dynamics", "planned"]

DYNAMICS = ("ode", "linear", "vp")


class Dynamics(NamedTuple):
    """What a particle method moves with.

    Attributes:
        kind: ``"ode"``, ``"linear"`` or ``"vp"``.
        velocity_fn: batched velocity on ``interpolant``.
        interpolant: the interpolant of ``velocity_fn``.
        g_fn: noise scale ``g(t)``.
        grid: ``np.ndarray`` float64 [num_steps + 1], 0 to 1.
        nfe_per_call: NFE per sample of one velocity call.
    """

    kind: str
    velocity_fn: Callable
    interpolant: interp_lib.Interpolant
    g_fn: Callable
    grid: np.ndarray
    nfe_per_call: int

    @property
    def num_steps(self) -> int:
        return self.grid.shape[0] - 1


TIME_GRIDS = ("uniform", "kim")


def _vp_times(interp, linear_times: np.ndarray) -> np.ndarray:
    """VP times s with t_s = a(s) / (a(s) + b(s)) equal to ``linear_times`` (bisection)."""
    lo, hi = np.zeros_like(linear_times), np.ones_like(linear_times)
    with jax.ensure_compile_time_eval():
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            a, b = np.asarray(interp.a(mid)), np.asarray(interp.b(mid))
            below = a / (a + b) < linear_times
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = 0.5 * (lo + hi)
    out[0], out[-1] = 0.0, 1.0
    return out


def make_dynamics(
    velocity_fn: Callable,
    kind: str = "vp",
    num_steps: int = 10,
    *,
    g: str | float | Callable = "square",
    time_grid: str = "uniform",
    nfe_per_call: int | None = None,
) -> Dynamics:
    """A ``Dynamics`` from a velocity trained on the linear interpolant.

    Args:
        velocity_fn: batched linear-interpolant velocity ``(x, t) -> v``.
        kind: ``"ode"``, ``"linear"`` or ``"vp"``.
        num_steps: grid intervals.
        g: noise scale for the SDEs (name in ``sde.G_SCHEDULES``, number or
            callable); ignored for ``"ode"``. Kim et al.'s ``"square"`` is the
            default; at 10 steps or fewer it is coarse for ``"vp"`` (the
            eight-Gaussians oracle at 8 steps: sample radius 2.26 vs 2.01),
            where ``"sqrt"`` is accurate (2.02).
        time_grid: ``"uniform"`` or ``"kim"`` in linear-interpolant time (see
            the module docstring).
        nfe_per_call: cost of one velocity call (default ``cost.nfe_per_call``).

    Returns:
        The ``Dynamics`` (for ``"vp"`` the velocity converted to the VP
            interpolant and the grid mapped to VP times).

    Raises:
        ValueError: an unknown ``kind`` or ``time_grid``, or a ``num_steps`` that is
            not a positive int.
        TypeError: ``velocity_fn`` is not callable.

    Example:
        With ``target`` from the package example (``inferax.search.flow``):

        >>> from inferax.search import flow
        >>> dyn = flow.make_dynamics(target.velocity, "linear", num_steps=4, g="sqrt")
        >>> dyn.kind, dyn.num_steps, dyn.nfe_per_call
        ('linear', 4, 1)
    """
    if time_grid not in TIME_GRIDS:
        raise ValueError(f"time_grid: expected one of {TIME_GRIDS}, got {time_grid!r}")
    if kind not in DYNAMICS:
        raise ValueError(f"kind: expected one of {DYNAMICS}, got {kind!r}")
    per_call = base.check_velocity(velocity_fn, nfe_per_call)
    n = _checks.positive_int(num_steps, "num_steps")
    u = np.linspace(0.0, 1.0, n + 1)
    grid = u if time_grid == "uniform" else 1.0 - np.sqrt(1.0 - u**2)
    if kind == "vp":
        interp = interp_lib.vp()
        vel = interp_lib.convert_velocity(velocity_fn, interp)
        grid = _vp_times(interp, grid)
    else:
        interp, vel = interp_lib.linear(), velocity_fn
    g_fn = sde.resolve_g(0.0 if kind == "ode" else g)
    return Dynamics(kind, vel, interp, g_fn, grid, per_call)


def check_dynamics(dynamics, name: str = "dynamics") -> Dynamics:
    if not isinstance(dynamics, Dynamics):
        raise TypeError(
            f"{name}: expected a search.Dynamics (search.make_dynamics(...)), "
            f"got {type(dynamics).__name__}"
        )
    return dynamics


def planned(plan_fn, dynamics, reward_fn, budget, **options):
    """``(dynamics, plan)``: checks the dynamics and the reward, then ``plan_fn(budget,
    num_steps=, nfe_per_call=, reward_cost=, **options)`` on them (the prologue of every
    particle method)."""
    dyn = check_dynamics(dynamics)
    r_cost = base.check_reward(reward_fn)
    cost = dict(num_steps=dyn.num_steps, nfe_per_call=dyn.nfe_per_call, reward_cost=r_cost)
    return dyn, plan_fn(budget, **cost, **options)


def _velocity(dyn: Dynamics, x, t):
    return flow.check_velocity_output(dyn.velocity_fn(x, jnp.asarray(t, x.dtype)), x)


def lookahead(dyn: Dynamics, reward_fn, x, v, t):
    """Reward of the one-step posterior mean E[x1 | x_t = x] from the velocity ``v``."""
    x1_hat = interp_lib.posterior_mean_from_velocity(dyn.interpolant, v, x, t)
    return base.safe_rewards(reward_fn, x1_hat)


def init_particles(key, dyn: Dynamics, reward_fn, num: int, event_shape, dtype=None):
    """``(x, v, r, num_nan)`` for ``num`` noises at t = 0 with their lookahead rewards.

    Costs ``num`` velocity calls and ``num`` reward evaluations.
    """
    x = flow.noise(key, num, event_shape, dtype=dtype)
    t0 = jnp.asarray(dyn.grid[0], x.dtype)
    v = _velocity(dyn, x, t0)
    r, nan = lookahead(dyn, reward_fn, x, v, t0)
    return x, v, r, nan


def advance(
    key: jax.Array,
    dyn: Dynamics,
    reward_fn: base.RewardFn,
    x: jax.Array,
    v: jax.Array,
    i: int | jax.Array,
    last: bool,
    eps: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One move of every particle from grid point ``i`` to ``i + 1`` (see the module doc).

    Args:
        key: typed PRNG key; particle ``j`` uses ``fold_in(key, j)``.
        dyn: the dynamics.
        reward_fn: batched reward.
        x: ``[P, *event]`` states at ``grid[i]``.
        v: ``[P, *event]`` their velocities.
        i: grid index (int or traced int).
        last: Python bool, whether ``grid[i + 1] = 1`` (no velocity then).
        eps: optional standard normal noise ``[P, *event]`` to use instead of
            drawing it from ``key``.

    Returns:
        ``(x', v', r', num_nan)``; ``v'`` is zeros when ``last``.
    """
    ts = jnp.asarray(dyn.grid, x.dtype)
    t0, t1 = ts[i], ts[i + 1]
    d0 = sde.drift(dyn.velocity_fn, x, t0, dyn.g_fn, dyn.interpolant, velocity=v)
    if eps is None:
        eps = flow.noise(key, x.shape[0], x.shape[1:], dtype=x.dtype)
    x1 = sde.euler_maruyama(None, x, t0, t1, eps, drift0=d0)[0]  # the package's one EM step
    if last:
        r, nan = base.safe_rewards(reward_fn, x1)
        return x1, jnp.zeros_like(x1), r, nan
    v1 = _velocity(dyn, x1, t1)
    r, nan = lookahead(dyn, reward_fn, x1, v1, t1)
    return x1, v1, r, nan
