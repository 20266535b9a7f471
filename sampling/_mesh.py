"""The ambient ``"particles"`` mesh as the SMC core sees it (private helpers).

Under a global-view ``jit`` with a mesh whose ``"particles"`` axis is ambient,
the ``[N]`` weight computations run on whole, replicated vectors so that
results do not depend on the number of devices; gathers keep each leaf's
sharding under ``Explicit`` axes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

# Mesh axis name over which the particle axis is sharded (DESIGN.md, Multi-device).
PARTICLE_AXIS = "particles"


def particle_axis_type():
    """Type of the ambient mesh's ``"particles"`` axis, or None without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or PARTICLE_AXIS not in mesh.axis_names:
        return None
    return dict(zip(mesh.axis_names, mesh.axis_types, strict=True))[PARTICLE_AXIS]


def on_whole_vector(fn: Callable) -> Callable:
    """Runs ``fn`` on whole, replicated ``[N]`` vectors when a particle mesh is ambient.

    Under a global-view ``jit`` inside ``jax.sharding.use_abstract_mesh`` (or
    ``jax.set_mesh``) with a ``"particles"`` axis of type ``Auto``/``Explicit``
    (``distributed.sharded_run`` sets this up), the weight computations
    (logsumexp, ESS, the resampling CDF) are wrapped in a ``shard_map`` with
    replicated inputs and outputs: the ``[N]`` weights are gathered explicitly
    and every device computes the same reductions in the same order, whatever
    the number of devices. Otherwise (no mesh, or inside a ``shard_map`` where
    the axis is manual) ``fn`` runs as it is.
    """
    axis_type = particle_axis_type()
    if axis_type is None or axis_type == jax.sharding.AxisType.Manual:
        return fn
    spec = jax.sharding.PartitionSpec()
    mapped = jax.shard_map(
        fn, mesh=jax.sharding.get_abstract_mesh(), in_specs=spec, out_specs=spec, check_vma=False
    )
    if axis_type == jax.sharding.AxisType.Auto:
        return mapped

    def resharded(*args):  # Explicit axes: reshard to replicated in the open.
        return mapped(*jax.tree_util.tree_map(lambda a: jax.sharding.reshard(a, spec), args))

    return resharded


def explicit_mesh() -> bool:
    return particle_axis_type() == jax.sharding.AxisType.Explicit
