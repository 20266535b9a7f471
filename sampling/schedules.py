"""Time grids for flow-matching samplers, and the checks samplers run on them.

Every grid function returns a 1-D float array ``ts`` of length ``num_steps + 1``
running from ``t_start`` to 1 (t = 0 is noise, t = 1 is data). The grids are
built in float64 NumPy and returned as JAX arrays of the default float dtype
(``jnp.result_type(float)``), so they are exact up to the final cast; a
sampler then casts the grid to its state's dtype. The arrays are made under
``jax.ensure_compile_time_eval``, so a grid built inside ``jit`` is still a
known constant and the samplers check its values at trace time.

``check_grid`` and ``prepare_grid`` (re-exported by ``flow``) validate a grid
for a sampler: NaN, range, strict increase in the state's dtype, only over
the active steps when a step count is given.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks

SWAY_MIN = -1.0
SWAY_MAX = 2.0 / (math.pi - 2.0)  # ~1.7519; above it the warp is not monotone near t = 1

# EPSS grids of F5-TTS (empirically pruned step sampling), in units of 1/32.
_EPSS_GRIDS: dict[int, tuple[int, ...]] = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}
EPSS_STEPS = tuple(sorted(_EPSS_GRIDS))


def _check_num_steps(num_steps) -> int:
    return _checks.positive_int(num_steps, "num_steps")


def _check_t_start(t_start) -> float:
    return _checks.unit_interval(t_start, "t_start", closed_right=False)


def _to_jax(ts: np.ndarray) -> jnp.ndarray:
    # Built under compile-time evaluation, so a grid made inside ``jit`` stays a
    # concrete constant that the samplers can check.
    with jax.ensure_compile_time_eval():
        return jnp.asarray(ts, dtype=jnp.result_type(float))


def _check_coef(coef) -> float:
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real):
        raise TypeError(f"coef: expected a real number, got {coef!r}")
    coef = float(coef)
    if not SWAY_MIN <= coef <= SWAY_MAX:
        raise ValueError(
            f"coef: sway coefficient must lie in the monotone range "
            f"[{SWAY_MIN}, {SWAY_MAX:.6f}] (= [-1, 2/(pi - 2)]), got {coef}"
        )
    return coef


def _sway_np(u: np.ndarray, coef: float) -> np.ndarray:
    return u + coef * (np.cos(0.5 * np.pi * u) - 1.0 + u)


def _rescale(u: np.ndarray, t_start: float) -> jnp.ndarray:
    ts = t_start + (1.0 - t_start) * u
    ts[0], ts[-1] = t_start, 1.0  # exact end points despite rounding
    return _to_jax(ts)


def uniform(num_steps: int, t_start: float = 0.0) -> jnp.ndarray:
    """Evenly spaced grid ``t_start, ..., 1`` with ``num_steps`` intervals.

    ``t_start > 0`` gives an early-skip grid (BinauralFlow): the sampler then
    integrates only the later part of the path from a state built for
    ``t_start``.

    Example:
        >>> from inferax.sampling import schedules
        >>> schedules.uniform(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> schedules.uniform(2, t_start=0.5).tolist()
        [0.5, 0.75, 1.0]
    """
    n = _check_num_steps(num_steps)
    return _rescale(np.linspace(0.0, 1.0, n + 1), _check_t_start(t_start))


def sway(num_steps: int, coef: float = -1.0, t_start: float = 0.0) -> jnp.ndarray:
    """Sway sampling grid of F5-TTS (Chen et al. 2024, eq. 7).

    With u_i = i / n, ``t_i = u_i + coef * (cos(pi u_i / 2) - 1 + u_i)``; coef = -1
    gives ``1 - cos(pi u / 2)``, coef = 0 the uniform grid, coef < 0 spends more
    steps near the noise end. For ``t_start > 0`` the warped unit grid is mapped
    affinely onto ``[t_start, 1]`` so that the grid still starts at ``t_start``
    (the F5-TTS code warps ``linspace(t_start, 1)`` instead, which moves the
    first point).

    Raises:
        ValueError: if ``coef`` is outside ``[-1, 2/(pi - 2)]``, where the warp
            stops being monotone.

    Example:
        >>> from inferax.sampling import schedules
        >>> [round(t, 3) for t in schedules.sway(4).tolist()]  # more steps near the noise end
        [0.0, 0.076, 0.293, 0.617, 1.0]
        >>> bool((schedules.sway(4, coef=0.0) == schedules.uniform(4)).all())
        True
    """
    n = _check_num_steps(num_steps)
    coef = _check_coef(coef)
    return _rescale(_sway_np(np.linspace(0.0, 1.0, n + 1), coef), _check_t_start(t_start))


def sway_warp(ts, coef: float = -1.0) -> jnp.ndarray:
    """Applies the sway warp to any grid ``ts`` in [0, 1] (e.g. an EPSS grid).

    The warp fixes 0 and 1 and is monotone for coef in ``[-1, 2/(pi - 2)]``, so
    a strictly increasing grid stays strictly increasing.

    Raises:
        ValueError: ``ts`` is not a 1-D grid of >= 2 points in [0, 1] that
            strictly increases (a decreasing grid would warp into garbage).
    """
    coef = _check_coef(coef)
    arr = np.asarray(ts, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"ts: expected a 1-D grid with at least 2 points, got shape {arr.shape}")
    if np.any(np.isnan(arr)):
        raise ValueError(
            f"ts: expected a grid without NaN, got NaN at index {np.argmax(np.isnan(arr))}"
        )
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"ts: expected values in [0, 1], got min {arr.min()}, max {arr.max()}")
    steps = np.diff(arr)
    if np.any(steps <= 0.0):
        i = int(np.argmax(steps <= 0.0))
        raise ValueError(
            f"ts: expected a strictly increasing grid, got ts[{i}] = {arr[i]} >= "
            f"ts[{i + 1}] = {arr[i + 1]}"
        )
    return _to_jax(_sway_np(arr, coef))


def epss(num_steps: int) -> jnp.ndarray:
    """Empirically pruned step sampling grid of F5-TTS (fixed, in units of 1/32).

    Available for ``num_steps`` in ``EPSS_STEPS`` = (5, 6, 7, 10, 12, 16); other
    step counts raise rather than silently falling back to a uniform grid.
    """
    n = _check_num_steps(num_steps)
    if n not in _EPSS_GRIDS:
        raise ValueError(f"num_steps: EPSS has grids for {EPSS_STEPS}, got {n}")
    return _to_jax(np.asarray(_EPSS_GRIDS[n], np.float64) / 32.0)


def make(
    name: str, num_steps: int, *, coef: float | None = None, t_start: float | None = None
) -> jnp.ndarray:
    """Grid by name: ``"uniform"``, ``"sway"``, ``"epss"`` or ``"epss_sway"``.

    ``coef`` (default -1) applies to the sway grids only and ``t_start``
    (default 0) to ``"uniform"`` and ``"sway"`` only; an argument the named
    grid would ignore is refused rather than dropped.

    Raises:
        ValueError: unknown name, or an argument the grid does not use.

    Example:
        >>> from inferax.sampling import schedules
        >>> schedules.make("epss", 5).tolist()
        [0.0, 0.0625, 0.125, 0.25, 0.5, 1.0]
        >>> schedules.make("epss_sway", 5).shape
        (6,)
    """
    uses = {
        "uniform": ("t_start",),
        "sway": ("coef", "t_start"),
        "epss": (),
        "epss_sway": ("coef",),
    }
    if name not in uses:
        raise ValueError(f"name: expected one of {sorted(uses)}, got {name!r}")
    for arg, value in (("coef", coef), ("t_start", t_start)):
        if value is not None and arg not in uses[name]:
            raise ValueError(
                f"{arg}: the {name!r} grid does not use it (it applies to "
                f"{[k for k, v in uses.items() if arg in v]}), got {arg}={value!r}"
            )
    coef = -1.0 if coef is None else coef
    t_start = 0.0 if t_start is None else t_start
    if name == "uniform":
        return uniform(num_steps, t_start)
    if name == "sway":
        return sway(num_steps, coef, t_start)
    if name == "epss":
        return epss(num_steps)
    return sway_warp(epss(num_steps), coef)


# --- grid checks used by the samplers (flow.sample, sde.sample, feynman_kac) ---


def check_grid(ts, name: str = "ts", *, dtype=None, num_active_steps=None) -> jax.Array:
    """Validates a time grid (cast to ``dtype`` first, if given) and returns it.

    Value checks run whenever the values are known at trace time: concrete
    arrays, lists, and constants built under ``jax.ensure_compile_time_eval``
    inside ``jit`` (the ``schedules`` grids are); a known grid stays concrete.
    With ``num_active_steps`` (an int) only ``ts[:num_active_steps + 1]`` is
    value-checked; with a traced count, none of it. For traced grids see
    ``grid_is_valid`` (the samplers' ``runtime_checks=True``).

    Raises:
        ValueError: if ``ts`` is not 1-D with >= 2 points, holds NaN, leaves
            [0, 1], or is not strictly increasing (in ``dtype``).
    """
    values = _checks.concrete_value(ts) if hasattr(ts, "dtype") else np.asarray(ts)
    shape, in_dtype = (ts.shape, ts.dtype) if values is None else (values.shape, values.dtype)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(
            f"{name}: expected a 1-D time grid with at least 2 points, got shape {tuple(shape)}"
        )
    if not jnp.issubdtype(in_dtype, jnp.floating):
        raise ValueError(f"{name}: expected a floating-point grid, got dtype {in_dtype}")
    if values is None:  # traced: only the opt-in run-time check applies
        ts_arr = jnp.asarray(ts)
        return ts_arr if dtype is None else ts_arr.astype(dtype)
    with jax.ensure_compile_time_eval():  # stays concrete inside jit
        ts_arr = jnp.asarray(values) if dtype is None else jnp.asarray(values, dtype)
    if num_active_steps is None:
        n = shape[0] - 1
    elif isinstance(num_active_steps, int):
        n = max(num_active_steps, 1)
    else:
        return ts_arr
    checked = np.asarray(ts_arr).astype(np.float64)[: n + 1]
    if np.any(np.isnan(checked)):
        raise ValueError(
            f"{name}: expected a grid without NaN, got NaN at index "
            f"{int(np.argmax(np.isnan(checked)))}"
        )
    if np.any(checked < 0.0) or np.any(checked > 1.0):
        raise ValueError(
            f"{name}: expected times in [0, 1], got min {checked.min()}, max {checked.max()}"
        )
    steps = np.diff(checked)
    if np.any(steps <= 0.0):
        i = int(np.argmax(steps <= 0.0))
        raise ValueError(
            f"{name}: expected a strictly increasing grid (in {ts_arr.dtype}), got "
            f"ts[{i}] = {checked[i]} >= ts[{i + 1}] = {checked[i + 1]}"
        )
    return ts_arr


def grid_is_valid(ts: jax.Array, num_active_steps=None) -> jax.Array:
    """Traced check: ``ts[:num_active_steps + 1]`` lies in [0, 1] and strictly increases."""
    n = ts.shape[0] - 1 if num_active_steps is None else num_active_steps
    idx = jnp.arange(ts.shape[0])
    in_range = jnp.where(idx <= n, (ts >= 0.0) & (ts <= 1.0), True)  # NaN fails
    increasing = jnp.where(idx[:-1] < n, jnp.diff(ts) > 0.0, True)
    return jnp.all(in_range) & jnp.all(increasing)


def check_num_active_steps(
    num_active_steps,
    num_steps: int,
    name: str = "num_active_steps",
    of: str = "the grid's intervals",
):
    """A step count in ``[0, num_steps]``: a Python int if known at trace time,
    else a traced int32 scalar clipped to that range.

    Raises:
        TypeError: a bool, a float, or a non-scalar.
        ValueError: a known value outside ``[0, num_steps]``.
    """
    if isinstance(num_active_steps, bool | np.bool_) or not (
        isinstance(num_active_steps, int | np.integer)
        or (
            hasattr(num_active_steps, "dtype")
            and jnp.ndim(num_active_steps) == 0
            and jnp.issubdtype(num_active_steps.dtype, jnp.integer)
        )
    ):
        raise TypeError(
            f"{name}: expected an int or an integer scalar array, got {num_active_steps!r}"
        )
    value = _checks.concrete_value(num_active_steps)
    if value is None:
        return jnp.clip(jnp.asarray(num_active_steps, jnp.int32), 0, num_steps)
    value = int(value)
    if not 0 <= value <= num_steps:
        raise ValueError(f"{name}: expected an int in [0, {num_steps}] ({of}), got {value}")
    return value


def prepare_grid(
    ts: jax.Array,
    x0: jax.Array,
    num_active_steps: int | jax.Array | None = None,
    runtime_checks: bool = False,
    name: str = "ts",
) -> tuple[jax.Array, int | jax.Array | None]:
    """Casts a sampler's grid to the state's dtype and checks it.

    Returns:
        ``(ts, n)``: the grid in ``x0.dtype`` and the active step count (None
            for all steps, a Python int, or a traced int32 scalar). Only the active
            part ``ts[:n + 1]`` is value-checked; the padding after it may hold
            anything. A traced grid or count gets the opt-in ``checkify`` check
            when ``runtime_checks``.
    """
    shape = jnp.shape(ts)
    if len(shape) != 1 or shape[0] < 2:
        check_grid(ts, name)  # raises the shape error
    n = None
    if num_active_steps is not None:
        n = check_num_active_steps(num_active_steps, shape[0] - 1)
        if not isinstance(n, int):  # traced: clipped, and checked at run time if asked
            _checks.runtime_check(
                (num_active_steps >= 0) & (num_active_steps <= shape[0] - 1),
                f"num_active_steps: expected an int in [0, {shape[0] - 1}]",
                runtime_checks,
            )
    ts = check_grid(ts, name, dtype=x0.dtype, num_active_steps=n)
    if _checks.concrete_value(ts) is None or not (n is None or isinstance(n, int)):
        _checks.runtime_check(
            grid_is_valid(ts, n),
            f"{name}: expected times in [0, 1], strictly increasing over the active steps",
            runtime_checks,
        )
    return ts, n


_TUNING = ("TuneResult", "endpoint_error", "grid_from_logits", "logits_from_grid", "tune")


def __getattr__(name: str):
    """``schedules.tune`` etc.: schedule tuning lives in ``schedule_tuning`` (it imports
    ``flow``, which imports this module), re-exported here lazily."""
    if name in _TUNING:
        from inferax.sampling import schedule_tuning

        return getattr(schedule_tuning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
