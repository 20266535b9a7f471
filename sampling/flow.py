"""ODE sampling of flow-matching models.

Integrates dx/dt = v(x, t) from ``ts[0]`` to ``ts[-1]`` on a fixed grid with
one ``lax.scan`` (or, for a step count only known at run time, one
``lax.while_loop``). Time runs from noise (t = 0) to data (t = 1).

NFE is counted per sample, the way papers count it: one network evaluation
of one sample is 1 NFE; a step of a two-stage solver costs 2; a guided
velocity (classifier-free guidance) costs 2 per call. The cost of a call is
static (``inferax.sampling.cost``): ``cost(num_steps, solver, nfe_per_call)``
says before tracing what ``sample`` will report in ``FlowInfo.nfe``.

Dtype policy: a sampler computes in the dtype of its state ``x0`` (float64,
float32, bfloat16 or float16). The time grid is cast to that dtype before it
is checked and used, the velocity is called with ``x`` and ``t`` of that
dtype and its output is cast back to it, so the result has the dtype of
``x0``. A grid that the state's dtype cannot resolve (two points that round
to the same value) is rejected. ``noise`` draws in the default float dtype
(``jnp.result_type(float)``: float64 under ``jax_enable_x64``) unless given
``dtype=``.

Garbage in is never garbage out silently. What is known before tracing is
checked at the call (``ValueError``/``TypeError`` naming the argument): the
grid (NaN, range, strict increase), a concrete ``x0`` holding NaN/inf, a
complex velocity output, ``step`` times outside [0, 1] or not increasing.
What is only known at run time (a traced grid, a traced ``x0``, the
velocity's values) is counted in ``FlowInfo`` (``grid_valid``,
``non_finite_inputs``, ``non_finite_outputs``), and ``runtime_checks=True``
turns those counts into errors through ``jax.experimental.checkify``: the
check is a value of the compiled program (no host callback, so it works
under ``jit``, ``vmap`` and on every backend, and costs nothing when off);
the caller wraps its function in ``checkify.checkify`` and calls
``err.throw()``. Without the wrapper a ``runtime_checks=True`` sampler under
``jit`` fails at trace time, never silently.

Solvers are ``Solver`` records (step function, evaluations per step, order);
``SOLVERS`` holds Euler, midpoint and Heun, and ``solver=`` accepts a name or
any ``Solver``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.sampling import cost as cost_lib
from inferax.sampling.schedules import (  # grid checks, re-exported for the samplers
    check_grid,
    check_num_active_steps,
    grid_is_valid,
    prepare_grid,
)

__all__ = [
    "SOLVERS",
    "SOLVER_EVALS",
    "FlowInfo",
    "Solver",
    "check_grid",
    "check_info",
    "check_num_active_steps",
    "check_state",
    "check_velocity_output",
    "cost",
    "count_non_finite",
    "grid_flag",
    "grid_is_valid",
    "integrate",
    "integrate_counted",
    "noise",
    "prepare_grid",
    "resolve_solver",
    "sample",
    "step",
]

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


class Solver(NamedTuple):
    """One ODE solver, defined once.

    Attributes:
        name: a label for messages.
        step: ``(v, x, t0, t1, v0=None) -> x1``: one step from ``t0`` to ``t1``;
            ``v0``, when given, is ``v(x, t0)`` already computed (a solver whose
            first stage is ``v(x, t0)`` must use it instead of calling ``v``).
        evals_per_step: calls of ``v`` per step (with ``v0=None``).
        order: global order of accuracy.
    """

    name: str
    step: Callable[..., jax.Array]
    evals_per_step: int
    order: int


def _euler(v, x, t0, t1, v0=None):
    v0 = v(x, t0) if v0 is None else v0
    return x + (t1 - t0) * v0


def _midpoint(v, x, t0, t1, v0=None):
    dt = t1 - t0
    v0 = v(x, t0) if v0 is None else v0
    half = dt / 2
    return x + dt * v(x + half * v0, t0 + half)


def _heun(v, x, t0, t1, v0=None):
    # Full Heun on every interval, the last one included (2 NFE each): the
    # linear-interpolant velocity is regular at t = 1, so there is no reason to
    # drop the corrector there (REFERENCES section 1).
    dt = t1 - t0
    v0 = v(x, t0) if v0 is None else v0
    v1 = v(x + dt * v0, t1)
    return x + (dt / 2) * (v0 + v1)


SOLVERS: dict[str, Solver] = {
    s.name: s
    for s in (
        Solver("euler", _euler, 1, 1),
        Solver("midpoint", _midpoint, 2, 2),
        Solver("heun", _heun, 2, 2),
    )
}
# Evaluations per step by name, derived from SOLVERS (kept for experiments/benchmarks).
SOLVER_EVALS = {name: s.evals_per_step for name, s in SOLVERS.items()}


def resolve_solver(solver, name: str = "solver") -> Solver:
    """A ``Solver`` from a name in ``SOLVERS`` or a ``Solver`` record.

    Raises:
        ValueError: unknown name.
        TypeError: anything else, or a ``Solver`` with a bad field.
    """
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(
                f"{name}: expected one of {sorted(SOLVERS)} or a Solver, got {solver!r}"
            )
        return SOLVERS[solver]
    if isinstance(solver, Solver):
        if not callable(solver.step):
            raise TypeError(f"{name}.step: expected a callable, got {type(solver.step).__name__}")
        _checks.positive_int(solver.evals_per_step, f"{name}.evals_per_step")
        _checks.positive_int(solver.order, f"{name}.order")
        return solver
    raise TypeError(f"{name}: expected a solver name or a flow.Solver, got {type(solver).__name__}")


class FlowInfo(NamedTuple):
    """What a flow (ODE or SDE) sample cost, and whether its inputs were sound.

    Attributes:
        num_steps: number of grid intervals integrated (the active ones).
        nfe: network evaluations per sample (steps x evals per step x
            ``nfe_per_call`` of the velocity).
        trajectory: ``[len(ts), *x0.shape]`` states on the grid when
            ``return_trajectory=True`` (after the last active step the final
            state is repeated), else ``None``.
        grid_valid: bool scalar: the active grid lies in [0, 1] and strictly
            increases (always True for a grid checked before tracing; a
            traced grid is checked at run time). False means garbage.
        non_finite_inputs: int32 count of NaN/inf entries of ``x0``.
        non_finite_outputs: int32 count of NaN/inf entries over every
            velocity evaluation (a NaN network output makes the sample NaN).
    """

    num_steps: jax.Array
    nfe: jax.Array
    trajectory: jax.Array | None = None
    grid_valid: jax.Array | None = None
    non_finite_inputs: jax.Array | None = None
    non_finite_outputs: jax.Array | None = None


def noise(
    key: jax.Array,
    num_samples: int,
    event_shape: tuple[int, ...],
    *,
    offset: int | jax.Array = 0,
    dtype: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """Standard normal source samples, one key per sample index.

    Sample ``i`` is drawn from ``fold_in(key, offset + i)``, so a population
    drawn in one batch equals the same population drawn in several batches
    (``offset`` = index of the first sample), on any number of devices.

    Args:
        key: typed PRNG key.
        num_samples: positive int.
        event_shape: shape of one sample.
        offset: index of the first sample.
        dtype: floating dtype; default ``jnp.result_type(float)``.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    idx = jnp.arange(num_samples) + offset
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    return jax.vmap(lambda k: jax.random.normal(k, tuple(event_shape), dtype))(keys)


def check_state(x0, name: str = "x0", *, finite: bool = False) -> jax.Array:
    """An array ``[N, *event]`` of a floating dtype (else TypeError/ValueError naming ``name``).

    With ``finite``, a concrete (not traced) ``x0`` holding NaN or inf is a
    ``ValueError``; a traced one is left to the sampler's run-time count.
    """
    if not hasattr(x0, "shape") or not hasattr(x0, "dtype"):
        raise TypeError(f"{name}: expected an array [N, *event], got {type(x0).__name__}")
    if x0.ndim < 1:
        raise ValueError(f"{name}: expected an array [N, *event], got a scalar")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x0.dtype}")
    # (An array spread over several processes is left to the run-time count.)
    if finite and not isinstance(x0, jax.core.Tracer) and getattr(x0, "is_fully_addressable", True):
        with jax.ensure_compile_time_eval():  # a concrete x0 closed over inside jit too
            bad = ~jnp.isfinite(x0)
            count = int(jnp.sum(bad))
            first = int(jnp.argmax(bad.reshape(x0.shape[0], -1).any(axis=1))) if count else 0
        if count:
            raise ValueError(
                f"{name}: expected finite values, got {count} NaN/inf entries "
                f"(the first in sample {first})"
            )
    return x0


def check_velocity_output(out, x, name: str = "velocity_fn") -> jax.Array:
    """Checks, at trace time, that a velocity output has the shape of ``x`` and a real
    dtype; casts it to ``x``'s dtype.

    Raises:
        ValueError: an output of another shape.
        TypeError: a complex (or non-numeric) output, whose cast to ``x``'s
            dtype would silently drop the imaginary part.
    """
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x.shape):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{name}: expected an output of shape {tuple(x.shape)} (the shape of x), got {got}"
        )
    dtype = getattr(out, "dtype", None)
    if dtype is None or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        raise TypeError(
            f"{name}: expected a real floating-point output (like x, {x.dtype}), got dtype {dtype}"
        )
    return out.astype(x.dtype)


def count_non_finite(x: jax.Array) -> jax.Array:
    """The number of NaN/inf entries of ``x`` (int32 scalar, traceable)."""
    return jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)


def integrate(
    step_fn: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    ts: jax.Array,
    *,
    num_active_steps: int | jax.Array | None = None,
    return_trajectory: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Runs ``x <- step_fn(i, x, ts[i], ts[i + 1])`` over the first intervals of ``ts``.

    See ``integrate_counted`` (this is it without the count).

    Example:
        A hand-written Euler step of dx/dt = 1 over four intervals:

        >>> import jax.numpy as jnp
        >>> from inferax.sampling import flow, schedules
        >>> x1, steps, _ = flow.integrate(
        ...     lambda i, x, t0, t1: x + (t1 - t0), jnp.zeros(3), schedules.uniform(4))
        >>> x1.tolist(), int(steps)
        ([1.0, 1.0, 1.0], 4)
    """

    def counted(i, x, t0, t1):
        return step_fn(i, x, t0, t1), jnp.zeros((), jnp.int32)

    x1, steps, traj, _ = integrate_counted(
        counted, x0, ts, num_active_steps=num_active_steps, return_trajectory=return_trajectory
    )
    return x1, steps, traj


def integrate_counted(
    step_fn: Callable[..., tuple[jax.Array, jax.Array]],
    x0: jax.Array,
    ts: jax.Array,
    *,
    num_active_steps: int | jax.Array | None = None,
    return_trajectory: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array]:
    """Runs ``x, c <- step_fn(i, x, ts[i], ts[i + 1])`` over the first intervals of ``ts``,
    summing the int32 counts ``c`` of the active steps (e.g. non-finite outputs).

    With ``num_active_steps=None`` every interval is integrated (one
    ``lax.scan``); with a Python int only the first ``num_active_steps``; with
    a traced count a ``lax.while_loop`` runs exactly that many steps, so the
    inactive ones evaluate nothing (under ``vmap`` with a count that differs
    across the batch, the loop runs to the largest count and masks the rest).

    Returns:
        ``(x_final, num_steps int32, trajectory or None, count int32)``; the
            trajectory has ``len(ts)`` entries, the final state repeated after the
            active steps.
    """
    total = ts.shape[0] - 1
    n = total if num_active_steps is None else num_active_steps
    zero = jnp.zeros((), jnp.int32)
    if isinstance(n, int):

        def body(carry, inp):
            x, c = carry
            i, t0, t1 = inp
            x_next, dc = step_fn(i, x, t0, t1)
            return (x_next, c + dc), (x_next if return_trajectory else None)

        inputs = (jnp.arange(n), ts[:n], ts[1 : n + 1])
        (x1, count), traj = jax.lax.scan(body, (x0, zero), inputs)
        if return_trajectory:
            pad = jnp.broadcast_to(x1, (total - n, *x1.shape))
            traj = jnp.concatenate([x0[None], traj, pad], axis=0)
        return x1, jnp.asarray(n, jnp.int32), traj, count

    def loop_body(i, carry):
        x, traj, c = carry
        x_next, dc = step_fn(i, x, ts[i], ts[i + 1])
        if return_trajectory:
            traj = jax.lax.dynamic_update_index_in_dim(traj, x_next, i + 1, 0)
        return x_next, traj, c + dc

    traj0 = None
    if return_trajectory:
        traj0 = jnp.zeros((total + 1, *x0.shape), x0.dtype).at[0].set(x0)
    x1, traj, count = jax.lax.fori_loop(0, n, loop_body, (x0, traj0, zero))
    if return_trajectory:
        after = (jnp.arange(total + 1) > n).reshape((-1,) + (1,) * x0.ndim)
        traj = jnp.where(after, x1[None], traj)
    return x1, jnp.asarray(n, jnp.int32), traj, count


def _check_step_times(t0, t1) -> None:
    values = {}
    for name, t in (("t0", t0), ("t1", t1)):
        if isinstance(t, bool) or not (isinstance(t, int | float) or hasattr(t, "dtype")):
            raise TypeError(f"{name}: expected a time in [0, 1] (a real scalar), got {t!r}")
        if jnp.ndim(t) != 0:
            raise ValueError(f"{name}: expected a scalar time in [0, 1], got shape {jnp.shape(t)}")
        v = _checks.concrete_value(t)
        if v is not None:
            v = float(v)
            if not 0.0 <= v <= 1.0:  # NaN fails too
                raise ValueError(f"{name}: expected a time in [0, 1], got {v}")
            values[name] = v
    if len(values) == 2 and not values["t0"] < values["t1"]:
        raise ValueError(
            f"t1: expected a time after t0 = {values['t0']} (time runs from noise at 0 to "
            f"data at 1), got {values['t1']}"
        )


def step(
    velocity_fn: VelocityFn,
    x: jax.Array,
    t0: float | jax.Array,
    t1: float | jax.Array,
    *,
    solver: str | Solver = "euler",
    velocity: jax.Array | None = None,
) -> jax.Array:
    """One solver step of dx/dt = velocity_fn(x, t) from ``t0`` to ``t1``.

    Args:
        velocity_fn: batched velocity ``(x [N, *event], t scalar) -> [N, *event]``.
        x: states at ``t0``.
        t0: scalar start time (cast to ``x.dtype``).
        t1: scalar end time (cast to ``x.dtype``), after ``t0``.
        solver: a name in ``SOLVERS`` or a ``Solver``.
        velocity: ``velocity_fn(x, t0)`` if already computed (e.g. for a
            lookahead); the solver then skips that evaluation.

    Returns:
        The state at ``t1``, in ``x.dtype``.

    Raises:
        ValueError: ``t0`` or ``t1`` known before tracing and outside [0, 1],
            or ``t1 <= t0``; a velocity of the wrong shape.
        TypeError: unknown solver type, non-floating ``x``, complex velocity.
    """
    solver = resolve_solver(solver)
    x = check_state(x, "x")
    _check_step_times(t0, t1)
    t0, t1 = jnp.asarray(t0, x.dtype), jnp.asarray(t1, x.dtype)

    def v(y, t):
        return check_velocity_output(velocity_fn(y, jnp.asarray(t, x.dtype)), y)

    if velocity is not None:
        velocity = check_velocity_output(velocity, x, "velocity")
    return solver.step(v, x, t0, t1, velocity).astype(x.dtype)


def cost(
    num_steps: int | jax.Array | Sequence[float],
    solver: str | Solver = "euler",
    nfe_per_call: int = 1,
) -> int:
    """The NFE per sample ``sample`` reports, known before tracing.

    Args:
        num_steps: the number of (active) intervals, or a concrete grid.
        solver: a name in ``SOLVERS`` or a ``Solver``.
        nfe_per_call: cost of one velocity call (see ``cost.nfe_per_call``).

    Returns:
        steps x the solver's evaluations per step x ``nfe_per_call``.

    Raises:
        ValueError: a negative step count, a bad grid or a ``nfe_per_call`` below 1.
    """
    if hasattr(num_steps, "shape") or isinstance(num_steps, list | tuple):
        num_steps = check_grid(num_steps, "num_steps").shape[0] - 1
    steps = _checks.non_negative_int(num_steps, "num_steps")
    nfe = _checks.positive_int(nfe_per_call, "nfe_per_call")
    return steps * resolve_solver(solver).evals_per_step * nfe


def sample(
    velocity_fn: VelocityFn,
    x0: jax.Array,
    ts: jax.Array,
    *,
    solver: str | Solver = "euler",
    return_trajectory: bool = False,
    nfe_per_call: int | None = None,
    num_active_steps: int | jax.Array | None = None,
    runtime_checks: bool = False,
) -> tuple[jax.Array, FlowInfo]:
    """Solves the flow ODE dx/dt = velocity_fn(x, t) on the grid ``ts``.

    Args:
        velocity_fn: batched velocity ``(x [N, *event], t scalar) -> [N, *event]``.
        x0: the state at ``ts[0]``, e.g. Gaussian noise when ``ts[0] = 0``.
        ts: strictly increasing grid in [0, 1] (see ``inferax.sampling.schedules``).
        solver: a name in ``SOLVERS`` (``"euler"`` 1 NFE/step, ``"midpoint"``,
            ``"heun"`` 2 NFE/step) or a ``Solver``.
        return_trajectory: also return the state at every grid point.
        nfe_per_call: NFE one call of ``velocity_fn`` costs per sample; default
            from ``cost.nfe_per_call`` (2 for ``guidance.cfg``, else 1).
        num_active_steps: integrate only the first ``num_active_steps``
            intervals (a Python int or a traced integer scalar); the rest of
            ``ts`` is padding, never evaluated nor counted in the NFE. One
            compiled sampler then serves every step count up to ``len(ts) - 1``.
            A traced count runs a ``lax.while_loop``, which supports forward-
            but not reverse-mode differentiation; a Python int runs a scan.
        runtime_checks: turn what is only known at run time into ``checkify``
            errors (wrap the caller in ``jax.experimental.checkify.checkify``
            and call ``err.throw()``): a traced grid or step count out of
            range, NaN/inf in ``x0`` or in any velocity output.

    Returns:
        ``(x1, info)``: the state after the last active step and a ``FlowInfo``
            whose ``grid_valid``, ``non_finite_inputs`` and ``non_finite_outputs``
            say whether the result can be trusted.

    Raises:
        ValueError / TypeError: unknown solver, bad grid, step count, cost or
            state (a concrete ``x0`` with NaN/inf included), or a velocity of
            the wrong shape or a complex dtype.

    Example:
        With ``target``, ``key`` and ``x0`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import flow, schedules
        >>> x1, info = flow.sample(target.velocity, x0, schedules.uniform(8), solver="heun")
        >>> x1.shape, int(info.nfe), bool(info.grid_valid), int(info.non_finite_outputs)
        ((64, 2), 16, True, 0)
    """
    solver = resolve_solver(solver)
    x0 = check_state(x0, finite=True)
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    per_call = cost_lib.nfe_per_call(velocity_fn, nfe_per_call)
    ts, n = prepare_grid(ts, x0, num_active_steps, runtime_checks)

    def step_fn(i, x, t0, t1):
        counts = []

        def v(y, t):
            out = check_velocity_output(velocity_fn(y, t), y)
            counts.append(count_non_finite(out))
            return out

        x_next = solver.step(v, x, t0, t1).astype(x.dtype)
        return x_next, sum(counts, jnp.zeros((), jnp.int32))

    x1, steps, traj, bad_out = integrate_counted(
        step_fn, x0, ts, num_active_steps=n, return_trajectory=return_trajectory
    )
    nfe = steps * (solver.evals_per_step * per_call)
    info = FlowInfo(
        num_steps=steps,
        nfe=nfe.astype(jnp.int32),
        trajectory=traj,
        grid_valid=grid_flag(ts, n),
        non_finite_inputs=count_non_finite(x0),
        non_finite_outputs=bad_out,
    )
    check_info(info, runtime_checks)
    return x1, info


def grid_flag(ts: jax.Array, n) -> jax.Array:
    """``FlowInfo.grid_valid`` of a grid from ``prepare_grid``: True for a grid that was
    value-checked before tracing, else the run-time ``grid_is_valid``."""
    if _checks.concrete_value(ts) is not None and (n is None or isinstance(n, int)):
        return jnp.asarray(True)
    return grid_is_valid(ts, n)


def check_info(info: FlowInfo, enabled: bool, name: str = "velocity_fn") -> None:
    """With ``enabled``, ``checkify`` checks that ``info`` reports a sound run: a valid
    grid, a finite ``x0`` and finite velocity outputs (see ``sample``'s
    ``runtime_checks``). Fields that are None are skipped."""
    if not enabled:
        return
    if info.grid_valid is not None:
        _checks.runtime_check(
            info.grid_valid,
            "ts: expected times in [0, 1], strictly increasing over the active steps",
            True,
        )
    if info.non_finite_inputs is not None:
        _checks.runtime_check(
            info.non_finite_inputs == 0,
            "x0: expected finite values, got {} NaN/inf entries",
            True,
            info.non_finite_inputs,
        )
    if info.non_finite_outputs is not None:
        _checks.runtime_check(
            info.non_finite_outputs == 0,
            name + ": expected finite outputs, got {} NaN/inf entries",
            True,
            info.non_finite_outputs,
        )
