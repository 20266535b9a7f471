"""SDE sampling of flow models (Kim, Yoon, Hwang, Sung 2025; REFERENCES section 2).

A flow model with velocity u_t and marginals p_t can be sampled by any SDE

    dx = [u_t(x) + (g(t)^2 / 2) grad log p_t(x)] dt + g(t) dW,   t: 0 -> 1,

with g(t) >= 0: all of them have the marginals p_t of the ODE (g = 0). The
score comes from the velocity through the interpolant
(``interpolants.score_from_velocity``). Integration is Euler-Maruyama on a grid
``ts``: x' ~ N(x + dt (u + g^2/2 score), g^2 dt I), with the drift and g
evaluated at the left end point t0 of each interval. The score is singular at
t = 1 (b(1) = 0), and left end points are always < 1, so the last interval is
an ordinary Euler step too. One velocity call per interval: 1 NFE per step
(times ``nfe_per_call`` of the velocity), or none for a step given the
velocity already computed by a lookahead (``step(..., velocity=u)``).

**One integrator.** ``euler_maruyama`` is the single Euler-Maruyama step of
the package: this module's ``step``/``sample``, the Feynman-Kac correctors
(``feynman_kac``) and the reward-guided particle methods
(``inferax.search``'s dynamics) all move with it. ``EULER_MARUYAMA`` is its
``SDESolver`` record (like ``flow.Solver``): ``evals_per_step`` drift
evaluations per step, from which ``cost`` and the samplers' budgets derive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, flow, schedules
from inferax.sampling import cost as cost_lib
from inferax.sampling import interpolants as interp_lib

GFn = Callable[[jax.Array], jax.Array]

# Named diffusion schedules g(t), in inferax time (t = 0 noise, t = 1 data).
G_SCHEDULES: dict[str, GFn] = {
    # The ODE: no noise, Euler-Maruyama is exactly the Euler ODE step.
    "zero": lambda t: jnp.zeros_like(t),
    # Unit noise at every time. With the linear interpolant the drift term
    # g^2 / 2 * score grows like 1 / (1 - t) near the data: needs fine grids.
    "constant": lambda t: jnp.ones_like(t),
    # 3 (1 - t): noise decaying linearly to zero at the data.
    "linear": lambda t: 3.0 * (1.0 - t),
    # 3 (1 - t)^2: the default of Kim et al. 2025 ("square", norm 3, in their
    # reversed time t' = 1 - t).
    "square": lambda t: 3.0 * (1.0 - t) ** 2,
    # sqrt(2 (1 - t)): g^2 / 2 = 1 - t, so that g^2 / 2 * score stays bounded
    # for the linear interpolant, (1 - t) * (t u - x) / (1 - t) = t u - x.
    "sqrt": lambda t: jnp.sqrt(2.0 * (1.0 - t)),
}


# One info type for ODE and SDE samples (``SDEInfo`` kept for old code).
SDEInfo = flow.FlowInfo

DriftFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class SDESolver(NamedTuple):
    """One SDE integrator, defined once (the SDE counterpart of ``flow.Solver``).

    Attributes:
        name: a label for messages.
        step: ``(drift_fn, x, t0, t1, noise, drift0=None) -> (x_next, mean, std)``;
            ``drift_fn(x, t) -> (drift [N, *event], g scalar)``; ``drift0``, when
            given, is ``drift_fn(x, t0)`` already computed (then ``drift_fn`` is not
            called and may be None).
        evals_per_step: calls of ``drift_fn`` per step (with ``drift0=None``); one
            drift call is one velocity call of each model.
        strong_order: strong order of convergence (0.5 for Euler-Maruyama).
        weak_order: weak order of convergence (1 for Euler-Maruyama).
    """

    name: str
    step: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    evals_per_step: int
    strong_order: float
    weak_order: float


def euler_maruyama(
    drift_fn: DriftFn | None,
    x: jax.Array,
    t0: float | jax.Array,
    t1: float | jax.Array,
    noise: jax.Array,
    drift0: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Euler-Maruyama step of dx = f(x, t) dt + g(t) dW from ``t0`` to ``t1``.

    x' = x + (t1 - t0) f(x, t0) + g(t0) sqrt(t1 - t0) xi, xi ~ N(0, I) (Kloeden &
    Platen 1992, eq. 9.1.1), the drift and noise scale taken at the left end point,
    so the step is the Gaussian proposal N(mean, std^2 I) whose log-density SMC-style
    callers need.

    Args:
        drift_fn: ``(x, t) -> (drift [N, *event], g scalar)``, e.g. ``sde.drift``
            bound to a velocity; may be None when ``drift0`` is given.
        x: states ``[N, *event]`` at ``t0``.
        t0: scalar interval start (cast to ``x.dtype``).
        t1: scalar interval end (cast to ``x.dtype``), t1 > t0.
        noise: standard normal ``[N, *event]`` (the caller draws it, e.g. per
            particle from ``fold_in(key, i)``).
        drift0: ``drift_fn(x, t0)`` if already computed (costs no evaluation then).

    Returns:
        ``(x_next, mean, std)`` in ``x.dtype``; ``std = g(t0) sqrt(t1 - t0)`` is a
            scalar shared by all particles.

    Raises:
        TypeError: neither ``drift_fn`` nor ``drift0`` given.
        ValueError: ``noise`` not of the shape of ``x``.

    Example:
        A known drift 1 and g = 2 (``drift0``), zero noise: the step is the mean.

        >>> import jax.numpy as jnp
        >>> from inferax.sampling import sde
        >>> x = jnp.zeros((3, 2))
        >>> x_next, mean, std = sde.euler_maruyama(
        ...     None, x, 0.0, 0.25, jnp.zeros_like(x), drift0=(jnp.ones_like(x), 2.0))
        >>> bool((x_next == mean).all()), mean[0].tolist(), float(std)
        (True, [0.25, 0.25], 1.0)
    """
    if drift0 is None:
        if not callable(drift_fn):
            raise TypeError(
                f"drift_fn: expected a callable (x, t) -> (drift, g) when drift0 is None, "
                f"got {type(drift_fn).__name__}"
            )
        drift0 = drift_fn(x, jnp.asarray(t0, x.dtype))
    f, g = drift0
    if jnp.shape(noise) != jnp.shape(x):
        raise ValueError(f"noise: expected the shape of x {jnp.shape(x)}, got {jnp.shape(noise)}")
    dt = jnp.asarray(t1, x.dtype) - jnp.asarray(t0, x.dtype)
    mean = x + dt * jnp.asarray(f, x.dtype)
    std = jnp.asarray(g, x.dtype) * jnp.sqrt(dt)
    return mean + std * noise.astype(x.dtype), mean, std


EULER_MARUYAMA = SDESolver("euler_maruyama", euler_maruyama, 1, 0.5, 1.0)
SDE_SOLVERS: dict[str, SDESolver] = {EULER_MARUYAMA.name: EULER_MARUYAMA}


def resolve_g(g, name: str = "g") -> GFn:
    """Turns a schedule name, a non-negative number or a callable into ``g(t)``.

    A scalar array is a constant too: checked when its value is known at trace
    time, else (traced, e.g. a swept noise level) by ``check_g_on_grid`` at
    run time when asked.

    Raises:
        ValueError: unknown name or negative constant.
        TypeError: anything else.
    """
    if isinstance(g, str):
        if g not in G_SCHEDULES:
            raise ValueError(
                f"{name}: expected one of {sorted(G_SCHEDULES)} or a callable, got {g!r}"
            )
        return G_SCHEDULES[g]
    if isinstance(g, bool | np.bool_):
        raise TypeError(f"{name}: expected a schedule name, a number or a callable, got {g!r}")
    if isinstance(g, int | float | np.number) or (hasattr(g, "dtype") and jnp.ndim(g) == 0):
        value = _checks.concrete_value(g)
        if value is not None:
            if not float(value) >= 0.0:
                raise ValueError(f"{name}: expected a non-negative noise scale, got {value}")
            g = float(value)
        return lambda t: jnp.full_like(t, g)
    if callable(g):
        return g
    raise TypeError(
        f"{name}: expected a schedule name, a non-negative number or a callable g(t), "
        f"got {type(g).__name__}"
    )


def _g_on(g_fn: GFn, left: jax.Array) -> jax.Array:
    return jax.vmap(lambda t: jnp.asarray(g_fn(t), left.dtype))(left)


def check_g_on_grid(g_fn: GFn, ts: jax.Array, name: str = "g", *, num_active_steps=None) -> None:
    """Raises ValueError if g is negative or not finite at a left end point of the grid.

    Runs whenever the grid is known at trace time, inside ``jit`` too (g is
    evaluated at compile time); skipped for a traced grid or a g that closes
    over traced values (see ``g_is_valid`` for the run-time check). With an
    int ``num_active_steps`` only the active left end points are checked.
    """
    out = jax.eval_shape(g_fn, jax.ShapeDtypeStruct((), jnp.result_type(ts)))
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{name}: expected g(t) to return a scalar, got shape {getattr(out, 'shape', out)}"
        )
    values = _checks.concrete_value(ts)
    if values is None or not (num_active_steps is None or isinstance(num_active_steps, int)):
        return
    n = values.shape[0] - 1 if num_active_steps is None else num_active_steps
    left = values[:n]
    try:
        with jax.ensure_compile_time_eval():
            g_values = np.asarray(_g_on(g_fn, jnp.asarray(left))).astype(np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # g depends on traced values
    bad = ~(np.isfinite(g_values) & (g_values >= 0.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name}: expected g(t) >= 0 and finite on the grid, got g({left[i]}) = {g_values[i]}"
        )


def g_is_valid(g_fn: GFn, ts: jax.Array, num_active_steps=None) -> jax.Array:
    """Traced check: g >= 0 and finite at the (active) left end points of ``ts``."""
    n = ts.shape[0] - 1 if num_active_steps is None else num_active_steps
    values = _g_on(g_fn, ts[:-1])
    ok = jnp.isfinite(values) & (values >= 0.0)
    return jnp.all(jnp.where(jnp.arange(ts.shape[0] - 1) < n, ok, True))


def drift(
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array] | None,
    x: jax.Array,
    t: float | jax.Array,
    g_fn: GFn | str | float,
    interpolant: interp_lib.Interpolant,
    *,
    velocity: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(u + g^2/2 score, g)`` at ``(x, t)`` (Kim et al. 2025, REFERENCES section 2).

    Args:
        velocity_fn: batched velocity of ``interpolant``.
        x: states at ``t``.
        t: scalar time < 1 (cast to ``x.dtype``).
        g_fn: ``g(t) -> scalar`` (a name or number is resolved by ``resolve_g``).
        interpolant: the interpolant the velocity belongs to.
        velocity: ``velocity_fn(x, t)`` if already computed (e.g. by a
            lookahead); then ``velocity_fn`` is not called.

    Returns:
        ``(drift, g)``; one velocity call, or none with ``velocity``.

    Example:
        With ``target`` and ``x0`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import interpolants, sde
        >>> f, g = sde.drift(target.velocity, x0, 0.5, sde.resolve_g("square"),
        ...                  interpolants.linear())
        >>> f.shape, float(g)
        ((64, 2), 0.75)
    """
    g_fn = resolve_g(g_fn, "g_fn")
    t = jnp.asarray(t, x.dtype)
    if velocity is None:
        u = flow.check_velocity_output(velocity_fn(x, t), x)  # shape checked where traced
    else:
        u = flow.check_velocity_output(velocity, x, "velocity")
    g = jnp.asarray(g_fn(t), x.dtype)
    score = interp_lib.score_from_velocity(interpolant, u, x, t)
    # g = 0 gives exactly u (0 * finite score = 0), so the ODE is reproduced bit for bit.
    return u + 0.5 * g**2 * score, g


def step(
    key: jax.Array,
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array] | None,
    x: jax.Array,
    t0: float | jax.Array,
    t1: float | jax.Array,
    g_fn: GFn | str | float,
    interpolant: interp_lib.Interpolant,
    *,
    velocity: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Euler-Maruyama step of the flow SDE from ``t0`` to ``t1`` (t0 < 1).

    The proposal is N(mean, std^2 I) with mean = x + (t1 - t0) (u + g^2/2 score)
    and std = g(t0) sqrt(t1 - t0), both evaluated at the left end point, so that
    SMC-style callers can compute proposal log-densities.

    Args:
        key: typed PRNG key.
        velocity_fn: batched ``(x [N, *event], t) -> [N, *event]`` for ``interpolant``.
        x: states ``[N, *event]`` at ``t0``.
        t0: scalar interval start.
        t1: scalar interval end, after ``t0``.
        g_fn: callable ``g(t) -> scalar`` (or a name / number, see ``resolve_g``).
        interpolant: the interpolant the velocity belongs to.
        velocity: ``velocity_fn(x, t0)`` if already computed, e.g. for a
            lookahead reward: the step then costs no network evaluation.

    Returns:
        ``(x_next, mean, std)`` in ``x.dtype``; ``std`` is a scalar shared by all
            particles.
    """
    d0 = drift(velocity_fn, x, t0, g_fn, interpolant, velocity=velocity)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return euler_maruyama(None, x, t0, t1, noise, drift0=d0)


def cost(num_steps: int | jax.Array | Sequence[float], nfe_per_call: int = 1) -> int:
    """The NFE per sample ``sample`` reports: ``EULER_MARUYAMA.evals_per_step`` per step.

    Args:
        num_steps: the number of (active) intervals, or a concrete grid.
        nfe_per_call: cost of one velocity call (see ``cost.nfe_per_call``).
    """
    if hasattr(num_steps, "shape") or isinstance(num_steps, list | tuple):
        num_steps = flow.check_grid(num_steps, "num_steps").shape[0] - 1
    steps = _checks.non_negative_int(num_steps, "num_steps")
    nfe = _checks.positive_int(nfe_per_call, "nfe_per_call")
    return steps * EULER_MARUYAMA.evals_per_step * nfe


def sample(
    key: jax.Array,
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    ts: jax.Array,
    *,
    g: str | float | jax.Array | GFn = "square",
    interpolant: interp_lib.Interpolant | None = None,
    return_trajectory: bool = False,
    nfe_per_call: int | None = None,
    num_active_steps: int | jax.Array | None = None,
    runtime_checks: bool = False,
) -> tuple[jax.Array, flow.FlowInfo]:
    """Integrates dx = [u + g^2/2 score] dt + g dW on ``ts`` by Euler-Maruyama.

    Args:
        key: typed PRNG key (``jax.random.key``); step i uses ``fold_in(key, i)``.
        velocity_fn: batched velocity ``(x [N, *event], t) -> [N, *event]`` of
            ``interpolant`` (convert a linear model with
            ``interpolants.convert_velocity`` to sample along another path).
        x0: states at ``ts[0]`` (N(0, I) noise when ``ts[0] = 0``); the sampler
            computes in ``x0.dtype`` (see ``flow``'s dtype policy).
        ts: strictly increasing grid in [0, 1].
        g: a name in ``G_SCHEDULES`` (default ``"square"`` = 3 (1 - t)^2), a
            non-negative number or scalar array, or a callable ``g(t)``.
        interpolant: defaults to ``interpolants.linear()``.
        return_trajectory: also return the states on the grid.
        nfe_per_call: NFE per velocity call per sample; default from
            ``cost.nfe_per_call`` (2 for ``guidance.cfg``, else 1).
        num_active_steps: integrate only the first ``num_active_steps``
            intervals (int or traced integer scalar); the padding after them is
            neither evaluated nor counted (see ``flow.sample``).
        runtime_checks: add ``checkify`` checks of a traced grid, step count
            or g (run the caller under ``jax.experimental.checkify.checkify``).

    Returns:
        ``(x1, FlowInfo)``.

    Raises:
        ValueError / TypeError: bad grid, state, velocity, g, cost or interpolant.

    Example:
        With ``target``, ``key`` and ``x0`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import schedules, sde
        >>> x1, info = sde.sample(key, target.velocity, x0, schedules.uniform(8), g="sqrt")
        >>> x1.shape, int(info.nfe), bool(info.grid_valid)
        ((64, 2), 8, True)
    """
    if interpolant is None:
        interpolant = interp_lib.linear()
    interp_lib.check_interpolant(interpolant)
    g_fn = resolve_g(g)
    x0 = flow.check_state(x0, finite=True)
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    per_call = cost_lib.nfe_per_call(velocity_fn, nfe_per_call)
    ts, n = schedules.prepare_grid(ts, x0, num_active_steps, runtime_checks)
    check_g_on_grid(g_fn, ts, num_active_steps=n)
    if runtime_checks:
        _checks.runtime_check(
            g_is_valid(g_fn, ts, n), "g: expected g(t) >= 0 and finite on the grid", True
        )

    def step_fn(i, x, t0, t1):
        counts = []

        def counted(y, t):  # counts NaN/inf in every velocity output of the step
            out = velocity_fn(y, t)
            counts.append(flow.count_non_finite(out))
            return out

        x1 = step(jax.random.fold_in(key, i), counted, x, t0, t1, g_fn, interpolant)[0]
        return x1, sum(counts, jnp.zeros((), jnp.int32))

    x1, steps, traj, bad = flow.integrate_counted(
        step_fn, x0, ts, num_active_steps=n, return_trajectory=return_trajectory
    )
    evals = EULER_MARUYAMA.evals_per_step * per_call
    info = flow.FlowInfo(
        num_steps=steps, nfe=steps * evals, trajectory=traj, grid_valid=flow.grid_flag(ts, n),
        non_finite_inputs=flow.count_non_finite(x0), non_finite_outputs=bad,
    )  # fmt: skip
    flow.check_info(info, runtime_checks)
    return x1, info
