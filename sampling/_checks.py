"""Argument checks shared by the samplers (private: not part of the public API).

Every check raises ``ValueError``/``TypeError`` with a message that names the
argument, what was expected and what was given. Value checks on arrays run at
trace time when the value is known then (a constant, even inside ``jit``:
``concrete_value`` evaluates it under ``jax.ensure_compile_time_eval``); for a
value that is only known at run time (a traced argument, or an array built
from jnp calls inside ``jit``, which JAX 0.10 traces: build constants such as
grids under ``jax.ensure_compile_time_eval``, as ``schedules`` does),
``runtime_check`` adds an opt-in
``checkify`` check (the caller wraps its function in
``jax.experimental.checkify.checkify`` to turn it into an error).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def positive_int(value, name: str) -> int:
    """A positive integer: a Python int or a NumPy / JAX integer scalar (not a bool).

    Raises:
        TypeError: for a non-integer (a float, a bool, a traced array, ...).
        ValueError: for an integer < 1.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}: expected a positive int, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, np.ndarray | jax.Array) and jnp.ndim(value) == 0:
        if not jnp.issubdtype(value.dtype, jnp.integer):
            raise TypeError(f"{name}: expected a positive int, got {value!r}")
        concrete = concrete_value(value)
        if concrete is None:
            raise TypeError(
                f"{name}: expected a static positive int (known before tracing), got a traced value"
            )
        out = int(concrete)
    else:
        raise TypeError(
            f"{name}: expected a positive int, got {value!r} of type {type(value).__name__}"
        )
    if out < 1:
        raise ValueError(f"{name}: expected a positive int, got {out}")
    return out


def non_negative_int(value, name: str) -> int:
    """Like ``positive_int`` but 0 is allowed."""
    try:
        return positive_int(value, name)
    except ValueError:
        concrete = concrete_value(value)
        if concrete is not None and int(concrete) == 0:
            return 0
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}") from None


def concrete_value(x) -> np.ndarray | None:
    """The value of ``x`` as a NumPy array when it is known at trace time, else None.

    Known: NumPy values, concrete JAX arrays (also when closed over inside a
    ``jit``), and arrays built under ``jax.ensure_compile_time_eval``. None for
    tracers (function arguments under ``jit``, and ``jnp`` results computed
    inside a ``jit`` outside ``ensure_compile_time_eval``).
    """
    if isinstance(x, np.ndarray | np.generic | numbers.Number):
        return np.asarray(x)
    try:
        with jax.ensure_compile_time_eval():
            return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def runtime_check(pred: jax.Array, message: str, enabled: bool, *fmt_args) -> None:
    """An opt-in run-time check of a traced condition (``checkify``).

    With ``enabled`` the caller must run under ``checkify.checkify``; the error
    is then raised with ``message`` (``{}`` fields filled from ``fmt_args``, traced
    values) by ``err.throw()``. Without it, nothing is added to the program.
    """
    if enabled:
        checkify.check(pred, message, *fmt_args)


def floating_array(x, name: str):
    """An array with a floating dtype (else TypeError naming ``name``)."""
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    return x


def unit_interval(value, name: str, *, closed_right: bool = True) -> float:
    """A real number in [0, 1] (or [0, 1)), not NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}: expected a real number in [0, 1], got {value!r} of type "
            f"{type(value).__name__}"
        )
    v = float(value)
    ok = 0.0 <= v <= 1.0 if closed_right else 0.0 <= v < 1.0
    if not ok:
        raise ValueError(
            f"{name}: expected a value in [0, 1{']' if closed_right else ')'}, got {v}"
        )
    return v
