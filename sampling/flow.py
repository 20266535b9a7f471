"""ODE sampling of flow-matching models.

Integrates dx/dt = v(x, t) from ``ts[0]`` to ``ts[-1]`` on a fixed grid with
one ``lax.scan``. Time runs from noise (t = 0) to data (t = 1).

NFE is counted per sample, the way papers count it: one network evaluation
of one sample is 1 NFE; a step of a two-stage solver costs 2; a guided
velocity (classifier-free guidance) declares ``nfe_per_call = 2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

# Network evaluations per step for each solver.
SOLVER_EVALS = {"euler": 1, "midpoint": 2, "heun": 2}


class FlowInfo(NamedTuple):
    """What a flow sample cost.

    Attributes:
        num_steps: number of grid intervals integrated.
        nfe: network evaluations per sample (steps x evals per step x
            ``nfe_per_call`` of the velocity).
        trajectory: ``[num_steps + 1, *x0.shape]`` states on the grid when
            ``return_trajectory=True``, else ``None``.
    """

    num_steps: jax.Array
    nfe: jax.Array
    trajectory: jax.Array | None = None


def noise(
    key: jax.Array,
    num_samples: int,
    event_shape: tuple[int, ...],
    *,
    offset: int | jax.Array = 0,
    dtype=jnp.float32,
) -> jax.Array:
    """Standard normal source samples, one key per sample index.

    Sample ``i`` is drawn from ``fold_in(key, offset + i)``, so a population
    drawn in one batch equals the same population drawn in several batches
    (``offset`` = index of the first sample), on any number of devices.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    idx = jnp.arange(num_samples) + offset
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    return jax.vmap(lambda k: jax.random.normal(k, tuple(event_shape), dtype))(keys)


def _euler(v, x, t0, t1):
    return x + (t1 - t0) * v(x, t0)


def _midpoint(v, x, t0, t1):
    dt = t1 - t0
    x_mid = x + 0.5 * dt * v(x, t0)
    return x + dt * v(x_mid, t0 + 0.5 * dt)


def _heun(v, x, t0, t1):
    # Full Heun on every interval, the last one included (2 NFE each): the
    # linear-interpolant velocity is regular at t = 1, so there is no reason to
    # drop the corrector there.
    dt = t1 - t0
    v0 = v(x, t0)
    v1 = v(x + dt * v0, t1)
    return x + 0.5 * dt * (v0 + v1)


_SOLVERS = {"euler": _euler, "midpoint": _midpoint, "heun": _heun}


def check_grid(ts, name: str = "ts") -> jax.Array:
    """Validates a time grid; value checks run when ``ts`` is concrete.

    Raises:
        ValueError: if ``ts`` is not 1-D with >= 2 points, leaves [0, 1], or is
            not strictly increasing.
    """
    ts_arr = jnp.asarray(ts)
    if ts_arr.ndim != 1 or ts_arr.shape[0] < 2:
        raise ValueError(
            f"{name}: expected a 1-D time grid with at least 2 points, got shape {ts_arr.shape}"
        )
    if not jnp.issubdtype(ts_arr.dtype, jnp.floating):
        raise ValueError(f"{name}: expected a floating-point grid, got dtype {ts_arr.dtype}")
    try:
        values = np.asarray(ts_arr)
    except jax.errors.TracerArrayConversionError:
        return ts_arr  # traced grid: value checks are the caller's responsibility
    if np.any(values < 0.0) or np.any(values > 1.0):
        raise ValueError(
            f"{name}: expected times in [0, 1], got min {values.min()}, max {values.max()}"
        )
    steps = np.diff(values)
    if np.any(steps <= 0.0):
        i = int(np.argmax(steps <= 0.0))
        raise ValueError(
            f"{name}: expected a strictly increasing grid, got ts[{i}] = {values[i]} "
            f">= ts[{i + 1}] = {values[i + 1]}"
        )
    return ts_arr


def check_state(x0, name: str = "x0") -> jax.Array:
    if not hasattr(x0, "shape") or not hasattr(x0, "dtype"):
        raise TypeError(f"{name}: expected an array [N, *event], got {type(x0).__name__}")
    if x0.ndim < 1:
        raise ValueError(f"{name}: expected an array [N, *event], got a scalar")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x0.dtype}")
    return x0


def _check_output_shape(out, x, name: str) -> None:
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x.shape):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{name}: expected an output of shape {tuple(x.shape)} (the shape of x), got {got}"
        )


def check_velocity_output(out, x, name: str = "velocity_fn") -> jax.Array:
    """Checks, at trace time, that a velocity output has the shape of ``x``; casts
    it to ``x``'s dtype."""
    _check_output_shape(out, x, name)
    return out.astype(x.dtype)


def check_velocity(velocity_fn, x0, t, name: str = "velocity_fn") -> None:
    """Traces ``velocity_fn`` abstractly once and checks its output shape.

    ``sample`` does not call this (it checks the output where it traces the
    solver step anyway, saving a trace); it is for callers that need the check
    before building something bigger.
    """
    if not callable(velocity_fn):
        raise TypeError(f"{name}: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    _check_output_shape(jax.eval_shape(velocity_fn, x0, t), x0, name)


def sample(
    velocity_fn: VelocityFn,
    x0: jax.Array,
    ts: jax.Array,
    *,
    solver: str = "euler",
    return_trajectory: bool = False,
    nfe_per_call: int | None = None,
) -> tuple[jax.Array, FlowInfo]:
    """Solves the flow ODE dx/dt = velocity_fn(x, t) on the grid ``ts``.

    Args:
        velocity_fn: batched velocity ``(x [N, *event], t scalar) -> [N, *event]``.
        x0: the state at ``ts[0]``, e.g. Gaussian noise when ``ts[0] = 0``.
        ts: strictly increasing grid in [0, 1] (see ``inferax.sampling.schedules``).
        solver: ``"euler"`` (1 NFE/step), ``"midpoint"`` or ``"heun"`` (2 NFE/step).
        return_trajectory: also return the state at every grid point.
        nfe_per_call: NFE one call of ``velocity_fn`` costs per sample; defaults to
            ``velocity_fn.nfe_per_call`` if set (2 for ``guidance.cfg``), else 1.

    Returns:
        ``(x1, info)``: the state at ``ts[-1]`` and a ``FlowInfo``.

    Raises:
        ValueError: unknown solver, bad grid, or a velocity of the wrong shape.
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver: expected one of {sorted(_SOLVERS)}, got {solver!r}")
    x0 = check_state(x0)
    ts = check_grid(ts)
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    if nfe_per_call is None:
        nfe_per_call = int(getattr(velocity_fn, "nfe_per_call", 1))
    step = _SOLVERS[solver]
    num_steps = ts.shape[0] - 1

    def v(x, t):
        return check_velocity_output(velocity_fn(x, t), x)

    def body(x, t01):
        x_next = step(v, x, t01[0], t01[1])
        return x_next, (x_next if return_trajectory else None)

    pairs = jnp.stack([ts[:-1], ts[1:]], axis=1)
    x1, traj = jax.lax.scan(body, x0, pairs)
    if return_trajectory:
        traj = jnp.concatenate([x0[None], traj], axis=0)
    info = FlowInfo(
        num_steps=jnp.asarray(num_steps, jnp.int32),
        nfe=jnp.asarray(num_steps * SOLVER_EVALS[solver] * nfe_per_call, jnp.int32),
        trajectory=traj,
    )
    return x1, info
