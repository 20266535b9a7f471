"""Pieces of the SMC core (``inferax.sampling.smc``) that do not depend on its state
types: reweighting with the log-Z increment, resampler lookup, transition-output
unpacking, step counting, and the lineage diagnostics."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from inferax.sampling import resampling as resampling_lib

Resampler = Callable[[jax.Array, jax.Array, int], jax.Array]


def _reweight(old_log_weights: jax.Array, inc: jax.Array, expand: int):
    old = resampling_lib.sanitize(old_log_weights)
    if expand > 1:  # K children share each parent's mass
        old = jnp.repeat(old, expand) - jnp.asarray(math.log(expand), old.dtype)
    raw = (old + inc).astype(old.dtype)
    num_nan = jnp.sum(jnp.isnan(inc)).astype(jnp.int32)
    num_posinf = jnp.sum(raw == jnp.inf).astype(jnp.int32)
    new = resampling_lib.sanitize(raw)
    lse_new = jax.nn.logsumexp(new)
    invalid = jnp.all(new == -jnp.inf)
    increment = lse_new - jax.nn.logsumexp(old)
    increment = jnp.where(num_posinf > 0, jnp.inf, increment)
    increment = jnp.where(invalid, -jnp.inf, increment).astype(old.dtype)
    log_weights = jnp.where(invalid, new, new - lse_new).astype(old.dtype)
    ess = resampling_lib.ess(log_weights)
    return log_weights, increment, invalid, ess, num_nan, num_posinf


def _finite_flags(check_finite, tree, name: str = "check_finite") -> list[bool]:
    """Whether the non-finite pass looks at each leaf of ``tree`` (``tree_leaves`` order).

    ``check_finite``: a bool, or a pytree prefix of ``tree`` with bool leaves (like
    ``particle_axes``), e.g. ``{"x": True, "cache": False}``.

    Raises:
        ValueError: if ``check_finite`` is not a prefix of ``tree``.
        TypeError: if an entry is not a Python bool.
    """
    prefix_leaves, prefix_def = jax.tree_util.tree_flatten(check_finite)
    try:
        subtrees = prefix_def.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{name}: expected a bool or a pytree prefix of the particles "
            f"{jax.tree_util.tree_structure(tree)} with bool leaves, got {check_finite!r} ({e})"
        ) from None
    flags: list[bool] = []
    for flag, sub in zip(prefix_leaves, subtrees, strict=True):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected Python bools, got {flag!r}")
        flags += [flag] * len(jax.tree_util.tree_leaves(sub))
    return flags


def _non_finite_rows(tree, axes, m: int, flags: list[bool] | None = None) -> jax.Array:
    """``bool [m]``: particles with a NaN/inf entry in a floating leaf of ``tree``
    (``axes``: each leaf's particle axis, None for a shared leaf, which flags every
    particle when it is non-finite). Integer and bool leaves are skipped, and so are
    leaves whose entry of ``flags`` (``_finite_flags``; default: every leaf) is False."""
    out = jnp.zeros((m,), bool)
    leaves = jax.tree_util.tree_leaves(tree)
    flags = [True] * len(leaves) if flags is None else flags
    for leaf, ax, look in zip(leaves, axes, flags, strict=True):
        if not look or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        bad = ~jnp.isfinite(leaf)
        if ax is None or jnp.ndim(leaf) == 0:
            out = out | jnp.any(bad)
        else:
            other = tuple(d for d in range(jnp.ndim(leaf)) if d != ax)
            out = out | jnp.any(bad, axis=other)
    return out


def _resolve_resampler(resampling) -> Resampler:
    if callable(resampling):
        return resampling
    return resampling_lib.get(resampling)


def _unpack(out, name="transition_fn"):
    if not isinstance(out, tuple | list) or len(out) not in (2, 3):
        raise ValueError(
            f"{name}: expected (new_particles, log_weight_increments) or "
            f"(new_particles, log_weight_increments, aux), got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple | list) else "")
        )
    return (out[0], out[1], out[2] if len(out) == 3 else None)


def _num_steps(step_inputs) -> int:
    leaves = jax.tree_util.tree_leaves(step_inputs)
    if not leaves:
        raise ValueError(
            "step_inputs: expected a pytree with at least one array leaf whose "
            f"leading axis indexes the steps, got {step_inputs!r}"
        )
    lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if None in lengths or len(lengths) != 1:
        raise ValueError(
            "step_inputs: expected every leaf to share a leading (step) axis, "
            f"got shapes {[jnp.shape(leaf) for leaf in leaves]}"
        )
    num_steps = lengths.pop()
    if num_steps < 1:
        raise ValueError("step_inputs: expected at least one step, got 0")
    return num_steps


def lineage(ancestors: jax.Array) -> jax.Array:
    """The initial particle each final particle descends from.

    Args:
        ancestors: ``int32 [T, N]`` stacked ``SMCInfo.ancestors`` of a run
            (non-expanding steps).

    Returns:
        ``int32 [N]``: ``a_0[a_1[... a_{T-1}[i]]]`` for final particle ``i``.
    """
    ancestors = jnp.asarray(ancestors)
    if ancestors.ndim != 2:
        raise ValueError(f"ancestors: expected shape [T, N], got {ancestors.shape}")
    n = ancestors.shape[1]

    def back(origin, a):
        return a[origin], None

    origin, _ = jax.lax.scan(back, jnp.arange(n, dtype=jnp.int32), ancestors, reverse=True)
    return origin


def num_distinct_ancestors(ancestors: jax.Array) -> jax.Array:
    """How many initial particles still have descendants at the end (path degeneracy).

    ``N`` when nothing was resampled; 1 when the whole population descends from
    one initial particle.
    """
    origin = lineage(ancestors)
    n = origin.shape[0]
    return jnp.sum(jnp.zeros((n,), jnp.int32).at[origin].set(1))
