"""Populations of particles as pytrees, with a particle axis per leaf.

A population is any pytree. Each leaf has its own *particle axis*, given by a
``particle_axes`` pytree prefix in the style of ``jax.vmap``'s ``in_axes``:

- an int ``k``: the leaf's axis ``k`` indexes the particles (0 for token arrays
  ``[N, L]``; 1 for a layer-major KV cache ``[layers, N, heads, L, d]``);
- ``None``: the leaf is shared by all particles (a scalar cache index, a
  prompt's cache) — it is never resampled, never gathered, and its shape and
  dtype must not change from step to step.

``particle_axes=0`` (the default everywhere) means every leaf has the
particles on its leading axis, the layout of the rest of the library.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


def _is_none(x) -> bool:
    return x is None


@dataclasses.dataclass(frozen=True)
class ParticleAxes:
    """A hashable ``particle_axes`` (so an algorithm holding it can be a static jit argument)."""

    leaves: tuple
    treedef: Any

    @classmethod
    def of(cls, particle_axes: Any) -> ParticleAxes:
        if isinstance(particle_axes, ParticleAxes):
            return particle_axes
        leaves, treedef = jax.tree_util.tree_flatten(particle_axes, is_leaf=_is_none)
        for ax in leaves:
            if ax is not None and (isinstance(ax, bool) or not isinstance(ax, int)):
                raise TypeError(f"particle_axes: expected ints or None, got {ax!r}")
        return cls(tuple(leaves), treedef)

    def unfreeze(self) -> Any:
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    @property
    def is_leading(self) -> bool:
        """True when every leaf has its particles on axis 0."""
        return self.leaves == (0,)


def leaf_axes(particle_axes: Any, particles: Any, name: str = "particle_axes") -> list[int | None]:
    """The particle axis of every leaf of ``particles``, in ``tree_leaves`` order.

    Args:
        particle_axes: an int, None, or a pytree prefix of ``particles`` with
            int / None leaves.
        particles: the population pytree.
        name: the argument name for error messages.

    Raises:
        ValueError: if ``particle_axes`` is not a prefix of ``particles``, or an
            axis is out of range for its leaf.
        TypeError: if an entry is neither an int nor None.
    """
    if isinstance(particle_axes, ParticleAxes):
        particle_axes = particle_axes.unfreeze()
    prefix_leaves, prefix_def = jax.tree_util.tree_flatten(particle_axes, is_leaf=_is_none)
    try:
        subtrees = prefix_def.flatten_up_to(particles)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{name}: expected an int, None or a pytree prefix of the particles "
            f"{jax.tree_util.tree_structure(particles)}, got {particle_axes!r} ({e})"
        ) from None
    axes: list[int | None] = []
    for ax, sub in zip(prefix_leaves, subtrees, strict=True):
        if ax is not None and (isinstance(ax, bool) or not isinstance(ax, int)):
            raise TypeError(f"{name}: expected ints or None, got {ax!r}")
        for leaf in jax.tree_util.tree_leaves(sub):
            if ax is not None and not 0 <= ax < jnp.ndim(leaf):
                raise ValueError(
                    f"{name}: particle axis {ax} is out of range for a leaf of shape "
                    f"{jnp.shape(leaf)}"
                )
            axes.append(ax)
    return axes


def count(particles: Any, particle_axes: Any = 0, name: str = "particles") -> int:
    """The population size ``N``: the common size of every leaf's particle axis.

    Raises:
        ValueError: if there is no leaf with a particle axis, a leading-axis leaf
            is a scalar, or the leaves disagree on ``N``.
    """
    leaves = jax.tree_util.tree_leaves(particles)
    if not leaves:
        raise ValueError(
            f"{name}: expected a pytree with at least one array leaf, got {particles!r}"
        )
    if isinstance(particle_axes, int) and particle_axes == 0:
        for leaf in leaves:
            if jnp.ndim(leaf) == 0:
                raise ValueError(
                    f"{name}: expected every leaf to have a leading axis N, got a scalar "
                    "(pass particle_axes with None for leaves shared by all particles)"
                )
    axes = leaf_axes(particle_axes, particles)
    sizes = [jnp.shape(leaf)[ax] for leaf, ax in zip(leaves, axes, strict=True) if ax is not None]
    if not sizes:
        raise ValueError(f"{name}: expected at least one leaf with a particle axis, got none")
    if len(set(sizes)) != 1:
        raise ValueError(
            f"{name}: expected every leaf to share the leading axis N (the particle axis), "
            f"got {sizes}"
        )
    return int(sizes[0])


def take(particles: Any, indices: jax.Array, axes: list[int | None], out_sharding=None) -> Any:
    """Gathers the rows ``indices`` along each leaf's particle axis; shared leaves pass.

    ``out_sharding`` (only under an ``Explicit`` mesh): a callable
    ``leaf -> PartitionSpec`` giving each gathered leaf's sharding.
    """
    leaves, treedef = jax.tree_util.tree_flatten(particles)
    out = []
    for leaf, ax in zip(leaves, axes, strict=True):
        if ax is None:
            out.append(leaf)
        elif out_sharding is not None:
            idx = (slice(None),) * ax + (indices,)
            out.append(leaf.at[idx].get(out_sharding=out_sharding(leaf)))
        elif ax == 0:
            out.append(jnp.take(leaf, indices, axis=0))
        else:
            out.append(_take_per_slice(leaf, indices, ax))
    return jax.tree_util.tree_unflatten(treedef, out)


def _take_per_slice(leaf: jax.Array, indices: jax.Array, ax: int) -> jax.Array:
    """``jnp.take(leaf, indices, axis=ax)`` as one row gather per slice of the axes
    before ``ax`` (e.g. per layer of a ``[layers, N, ...]`` cache), when there are at
    most 64 such slices.

    A single gather on an axis ``ax > 0`` makes XLA:CPU give the leaf a
    particle-major layout, and a scan carrying it then transposes the whole
    leaf in and out at every step, resampled or not (2-3x the bare step of a
    layer-major KV cache; ``benchmarks/smc_cache.py``).
    """
    lead = 1
    for s in leaf.shape[:ax]:
        lead *= s
    if not 0 < lead <= 64:
        return jnp.take(leaf, indices, axis=ax)
    flat = leaf.reshape(lead, *leaf.shape[ax:])
    rows = jnp.stack([jnp.take(flat[i], indices, axis=0) for i in range(lead)])
    return rows.reshape(*leaf.shape[:ax], *rows.shape[1:])


def where(mask: jax.Array, a: Any, b: Any, axes: list[int | None]) -> Any:
    """Per particle, ``a`` where ``mask`` else ``b``; shared leaves are taken from ``b``."""
    leaves_a, treedef = jax.tree_util.tree_flatten(a)
    leaves_b = treedef.flatten_up_to(b)
    out = []
    for la, lb, ax in zip(leaves_a, leaves_b, axes, strict=True):
        if ax is None:
            out.append(lb)
            continue
        shape = [1] * jnp.ndim(la)
        shape[ax] = mask.shape[0]
        out.append(jnp.where(mask.reshape(shape), la, lb))
    return jax.tree_util.tree_unflatten(treedef, out)


def check_like(new: Any, old: Any, axes: list[int | None], sizes: tuple[int, ...], name: str):
    """Checks that ``new`` has ``old``'s structure, dtypes and shapes.

    The particle axis of ``new`` may have any size in ``sizes``; shared leaves
    must keep their shape exactly. Returns the size of ``new``'s particle axis.

    Raises:
        ValueError: naming ``name``, for a shape or particle-axis size that differs.
        TypeError: naming ``name``, for a structure or dtype that differs.
    """
    old_def = jax.tree_util.tree_structure(old)
    new_def = jax.tree_util.tree_structure(new)
    if new_def != old_def:
        raise ValueError(
            f"{name}: expected new particles with the same pytree structure as the input "
            f"{old_def}, got {new_def}"
        )
    found = set()
    for i, (ln, lo, ax) in enumerate(
        zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old), axes, strict=True)
    ):
        dn, do = jnp.result_type(ln), jnp.result_type(lo)
        if dn != do:
            raise TypeError(f"{name}: expected particle leaf {i} to keep its dtype {do}, got {dn}")
        sn, so = tuple(jnp.shape(ln)), tuple(jnp.shape(lo))
        if ax is None:
            if sn != so:
                raise ValueError(
                    f"{name}: expected shared leaf {i} (particle axis None) to keep its shape "
                    f"{so}, got {sn}"
                )
            continue
        rest_n, rest_o = sn[:ax] + sn[ax + 1 :], so[:ax] + so[ax + 1 :]
        if len(sn) != len(so) or rest_n != rest_o or sn[ax] not in sizes:
            raise ValueError(
                f"{name}: expected particle leaf {i} of shape {so} (particle axis {ax} of size "
                f"{' or '.join(map(str, sizes))}), got {sn}"
            )
        found.add(sn[ax])
    if len(found) > 1:
        raise ValueError(f"{name}: expected one population size across leaves, got {sorted(found)}")
    return found.pop() if found else sizes[0]
