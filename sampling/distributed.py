"""SMC over several devices: a sharded population, or independent islands.

Two schemes, both built on ``inferax.sampling.smc``:

- **Global view** (``particle_mesh``, ``shard_particles``, ``sharded_run``):
  the particle axis is sharded over a 1-D mesh axis named ``"particles"``
  (``NamedSharding(mesh, P("particles"))``) and one ``jit`` of ``smc.run``
  computes exactly the single-population algorithm. Moves and increments are
  local to each device; the weight reductions and the resampling gather use
  collectives inserted by the compiler. The ``[N]`` log-weights are small:
  with the mesh ambient, ``smc.step`` gathers them to every device and runs
  the reductions and the resampling CDF replicated (a ``shard_map`` with
  ``P()``), so the result does not depend on the number of devices
  (bit-identical on 1 and 4 CPU devices). Parameters and step inputs are
  replicated. A user's own ``jax.make_mesh`` (``Explicit`` axes) under
  ``jax.set_mesh`` and ``jit(smc.run)`` works the same way.
- **Islands** (``island_smc_run``): ``jax.shard_map`` runs an independent SMC
  on each block of ``N / num_islands`` particles, resampling within the block
  only; the islands' evidence estimates are averaged with a collective
  (Verge, Dubarry, Del Moral & Moulines 2015, "On parallel implementation of
  sequential Monte Carlo methods: the island particle model").

Both run unchanged on a mesh that spans several processes (JAX's
multi-controller runtime, one process per host): ``shard_particles`` and
``replicate`` place host values that every process holds, and
``inferax.sampling.multiprocess`` builds populations per device, gathers
results for reports and starts the runtime. ``jax.pmap`` is legacy; nothing
here uses it.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.sampling import _checks, resampling
from inferax.sampling import particles as particles_lib
from inferax.sampling.smc import PARTICLE_AXIS, SMC, SMCInfo, SMCState, num_particles


def particle_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"particles"`` over ``devices`` (default: all devices).

    The axis type is ``Auto``: shardings propagate through ``jit`` (global view).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got an empty sequence")
    return jax.make_mesh(
        (len(devices),), (PARTICLE_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def _mesh_size(mesh) -> int:
    if not isinstance(mesh, jax.sharding.Mesh) or PARTICLE_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: expected a jax.sharding.Mesh with an axis {PARTICLE_AXIS!r}, got {mesh!r}"
        )
    return mesh.shape[PARTICLE_AXIS]


def _leaf_specs(tree: Any, particle_axes: Any) -> Any:
    """A ``PartitionSpec`` per leaf: sharded on its particle axis, replicated if shared."""
    axes = particles_lib.leaf_axes(particle_axes, tree)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    specs = [P() if ax is None else P(*([None] * ax), PARTICLE_AXIS) for ax in axes]
    return jax.tree_util.tree_unflatten(treedef, specs)


def shard_particles(tree: Any, mesh: jax.sharding.Mesh, particle_axes: Any = 0) -> Any:
    """Places a population pytree on ``mesh``, sharded along each leaf's particle axis.

    Leaves shared by all particles (``particle_axes`` None) are replicated.

    Raises:
        ValueError: if ``N`` is not divisible by the mesh size.
    """
    n, d = num_particles(tree, "particles", particle_axes), _mesh_size(mesh)
    if n % d:
        raise ValueError(
            f"particles: expected the number of particles to be divisible by the {d} "
            f"devices of the mesh, got N = {n}"
        )
    specs = _leaf_specs(tree, particle_axes)
    return jax.tree_util.tree_map(lambda x, spec: _put(x, NamedSharding(mesh, spec)), tree, specs)


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    """``device_put`` that also works when ``sharding`` spans several processes.

    In one process, or for a global array already spread over the processes,
    this is ``jax.device_put``. Otherwise ``x`` is a host-local value that every
    process holds whole (the same on each, as the multi-controller model
    assumes): each process places only the shards of its own devices. To build
    a population without holding all of it on every host, use
    ``multiprocess.population`` or ``multiprocess.from_process_local``.
    """
    if isinstance(x, jax.core.Tracer):  # inside a jit: a sharding constraint
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
        data = _put(jax.random.key_data(x), sharding)  # typed PRNG keys
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places every leaf of ``tree`` (parameters, step inputs, keys) on all devices.

    Across processes every process passes the same value (multi-controller).
    """
    _mesh_size(mesh)
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: _put(x, replicated), tree)


def shard_state(state: SMCState, mesh: jax.sharding.Mesh, particle_axes: Any = 0) -> SMCState:
    """Shards an ``SMCState``: particles and log-weights split, ``log_Z`` replicated."""
    particles = shard_particles(state.particles, mesh, particle_axes)
    log_weights = shard_particles(state.log_weights, mesh)
    return SMCState(particles, log_weights, replicate(state.log_Z, mesh))


@partial(jax.jit, static_argnames=("smc", "mesh", "resample_last"))
def _sharded_run(smc, key, state, step_inputs, mesh, resample_last):
    sharded = NamedSharding(mesh, P(PARTICLE_AXIS))
    replicated = NamedSharding(mesh, P())
    specs = _leaf_specs(state.particles, smc.particle_axes)

    def constrain(tree):
        return jax.tree_util.tree_map(
            lambda x, spec: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)),
            tree,
            specs,
        )

    state = SMCState(
        constrain(state.particles),
        jax.lax.with_sharding_constraint(state.log_weights, replicated),
        state.log_Z,
    )
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # smc.step replicates weights
        final, infos = smc.run(key, state, step_inputs, resample_last=resample_last)
    final = SMCState(
        constrain(final.particles),
        jax.lax.with_sharding_constraint(final.log_weights, sharded),
        final.log_Z,
    )
    return final, infos


def sharded_run(
    smc: SMC,
    key: jax.Array,
    state: SMCState,
    step_inputs: Any,
    mesh: jax.sharding.Mesh,
    *,
    resample_last: bool = True,
) -> tuple[SMCState, SMCInfo]:
    """``smc.run`` under one global-view ``jit`` with the particles sharded over ``mesh``.

    Computes the same algorithm as ``smc.run`` on one device (one population of
    ``N``, resampled globally). The ``[N]`` log-weights are kept replicated
    inside the run, so reductions over them do not depend on the device count.

    Args:
        smc: an algorithm from ``smc.build`` (hashable; a static argument).
        key: PRNG key.
        state: ``SMCState`` with ``N`` divisible by the mesh size.
        step_inputs: pytree with a leading step axis (replicated).
        mesh: a mesh from ``particle_mesh``.
        resample_last: as in ``smc.run``.

    Returns:
        ``(final_state, infos)``; the final particles and log-weights are
            sharded over ``"particles"``.
    """
    state = shard_state(state, mesh, smc.particle_axes)
    return _sharded_run(smc, key, state, replicate(step_inputs, mesh), mesh, resample_last)


def _island_program(smc, mesh, num_islands, resample_last):
    local = num_islands // _mesh_size(mesh)

    def per_device(key, particles, log_weights, log_z, step_inputs):
        first = jax.lax.axis_index(PARTICLE_AXIS) * local
        ids = first + jnp.arange(local)

        def one(island, p, lw, lz):
            state = SMCState(p, lw, lz)
            island_key = jax.random.fold_in(key, island)
            return smc.run(island_key, state, step_inputs, resample_last=resample_last)

        final, infos = jax.lax.map(lambda a: one(*a), (ids, particles, log_weights, log_z))
        island_log_z = jax.lax.all_gather(final.log_Z, PARTICLE_AXIS, tiled=True)
        log_z = jax.nn.logsumexp(island_log_z) - math.log(num_islands)
        return final, infos, log_z

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(PARTICLE_AXIS), P(PARTICLE_AXIS), P(PARTICLE_AXIS), P()),
        out_specs=(P(PARTICLE_AXIS), P(PARTICLE_AXIS), P()),
        check_vma=False,
    )


@partial(jax.jit, static_argnames=("smc", "mesh", "num_islands", "resample_last"))
def _island_run(smc, key, state, step_inputs, mesh, num_islands, resample_last):
    n = num_particles(state.particles)
    size = n // num_islands

    def blocks(x):
        return x.reshape((num_islands, size) + x.shape[1:])

    particles = jax.tree_util.tree_map(blocks, state.particles)
    lw = blocks(resampling.sanitize(state.log_weights))
    # Each island starts with its share of the input mass: for uniform weights
    # the offset is 0, and the combined estimate then starts at state.log_Z.
    lse_blocks = jax.nn.logsumexp(lw, axis=1)
    lse_all = jax.nn.logsumexp(lse_blocks)
    offset = jnp.where(
        jnp.isfinite(lse_all), lse_blocks - lse_all + math.log(num_islands), -jnp.inf
    )
    log_z0 = (state.log_Z + offset).astype(state.log_weights.dtype)

    program = _island_program(smc, mesh, num_islands, resample_last)
    final, infos, log_z = program(key, particles, lw, log_z0, step_inputs)

    # Global weights: particle i of island k carries Z_k w_ik / sum_j w_jk.
    within = jax.vmap(lambda l: resampling.log_normalize(l)[0])(final.log_weights)
    rel = jnp.where(jnp.isfinite(log_z), final.log_Z - log_z, -jnp.inf)
    log_weights = (within + rel[:, None]).reshape(n).astype(state.log_weights.dtype)
    particles = jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), final.particles)

    ancestors = infos.ancestors + (jnp.arange(num_islands) * size)[:, None, None]
    num_steps = ancestors.shape[1]
    # Per-island fields [islands, T, ...] -> [T, islands, ...]; ancestors global [T, N].
    swap = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), infos._replace(ancestors=None))
    infos = swap._replace(ancestors=jnp.swapaxes(ancestors, 0, 1).reshape(num_steps, n))
    return SMCState(particles, log_weights, log_z), infos


def island_smc_run(
    smc: SMC,
    key: jax.Array,
    state: SMCState,
    step_inputs: Any,
    mesh: jax.sharding.Mesh,
    *,
    num_islands: int | None = None,
    resample_last: bool = True,
) -> tuple[SMCState, SMCInfo]:
    """Island SMC: independent SMC runs on blocks of particles, one ``shard_map``.

    The ``N`` particles are cut into ``num_islands`` contiguous blocks of
    ``N / num_islands``; island ``k`` runs ``smc.run`` with key
    ``fold_in(key, k)`` and resamples only within its block. The combined
    evidence is ``log Z = logsumexp_k(log Z_k) - log(num_islands)`` (an average
    of unbiased estimates of ``Z``, so unbiased), and particle ``i`` of island
    ``k`` gets the global log-weight ``log Z_k + log w_ik - log sum_j w_jk -
    log Z``, so the returned population targets the same distribution.

    When to prefer it over ``sharded_run``: when the population is too large to
    gather the weights and particles for a global resampling, or the run is
    communication-bound (slow interconnect, many steps): the only collective is
    one all-gather of ``num_islands`` scalars at the end. Its cost: islands
    never exchange particles, so the estimate has more variance than one
    population of ``N`` (each island degenerates on its own; the island weights
    ``Z_k`` can be very unequal), and the result differs from ``smc.run``.

    The result depends on ``key``, ``num_islands`` and the inputs, not on the
    number of devices: for a fixed ``num_islands``, each device runs its
    ``num_islands / num_devices`` islands one after the other (``lax.map``,
    the same per-island program everywhere), which gives bit-identical results
    on 1 and 4 CPU devices. (``vmap`` over local islands would batch better but
    changes float reductions in the last bits.)

    Args:
        smc: an algorithm from ``smc.build``.
        key: PRNG key.
        state: ``SMCState`` with ``N`` divisible by ``num_islands``.
        step_inputs: pytree with a leading step axis, shared by all islands.
        mesh: a mesh from ``particle_mesh``.
        num_islands: number of islands (default: the mesh size); a multiple of
            the mesh size.
        resample_last: as in ``smc.run``.

    Returns:
        ``(state, infos)``: the state holds all ``N`` particles, their global
            log-weights and the combined ``log_Z``; ``infos`` fields carry a
            trailing island axis ``[T, num_islands]``, except ``ancestors`` which
            are global indices ``[T, N]``.

    Raises:
        ValueError: if ``num_islands`` is not a positive multiple of the mesh
            size or does not divide ``N``.
    """
    d = _mesh_size(mesh)
    if not smc.particle_axes.is_leading:
        raise ValueError(
            "smc: island_smc_run cuts the leading axis into islands; expected an SMC built "
            f"with particle_axes=0, got {smc.particle_axes.unfreeze()!r}"
        )
    n = num_particles(state.particles, "state.particles")
    num_islands = _checks.positive_int(d if num_islands is None else num_islands, "num_islands")
    if num_islands % d:
        raise ValueError(
            f"num_islands: expected a multiple of the {d} devices of the mesh, got {num_islands}"
        )
    if n % num_islands:
        raise ValueError(
            f"num_islands: expected a divisor of the N = {n} particles, got {num_islands}"
        )
    if jax.process_count() > 1:  # host values -> global arrays (one process: jit places them)
        state = shard_state(state, mesh)
        step_inputs = replicate(step_inputs, mesh)
    return _island_run(smc, key, state, step_inputs, mesh, num_islands, resample_last)
