"""Particle populations across processes: JAX's multi-controller runtime.

On a TPU pod slice or a cluster of GPU nodes, JAX runs one process per host
(``jax.distributed``); every process runs the same program, sees all devices
in ``jax.devices()`` but holds only its ``jax.local_devices()``, and a global
``jax.Array`` is a set of shards spread over the processes. The global-view
algorithms of ``inferax.sampling.distributed`` (``sharded_run``,
``island_smc_run``) run unchanged on a ``"particles"`` mesh that spans
processes; this module adds what crossing processes needs:

- ``initialize``: starts the runtime (explicit coordinator, or the variables
  that ``jax.distributed.initialize`` detects on TPU pods, SLURM and Open MPI),
  with bounded timeouts so that a dead peer ends the run with an error.
- ``population``: builds a population on the mesh, each device computing only
  its own rows, particle ``i`` drawn from ``fold_in(key, i)``: the population
  is the same whatever the number of processes and devices, and no host ever
  holds all of it. ``from_process_local`` assembles a global population from
  the rows each process loaded itself (``process_rows`` says which).
- ``fk_sample``: a Feynman-Kac corrector (``feynman_kac.sample``) with its
  particles sharded over the mesh.
- ``shard_model``: wraps a model callable so that any population algorithm
  built on it (a flow search of ``inferax.search``) runs sharded under ``jit``.
- ``gather``: brings a result to every host as NumPy, for reporting only.

Results do not depend on the process layout: the computation is one global
program whose cross-particle reductions run on gathered, replicated vectors
(``smc``'s weight computations), so 1 process x 4 devices and 2 processes x 2
devices give bit-identical results (tests/sampling/test_multiprocess.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, wraps
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.sampling import _checks, distributed
from inferax.sampling import feynman_kac as fk_lib
from inferax.sampling.smc import PARTICLE_AXIS


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """Starts JAX's multi-controller runtime (once per process, before any computation).

    With no arguments, ``jax.distributed.initialize`` reads the cluster from the
    environment (Cloud TPU pod slices, SLURM, Open MPI). On CPU the cross-process
    collectives run over gloo (``jax_cpu_collectives_implementation``). A process
    that does not join within ``initialization_timeout`` seconds, or stops
    answering heartbeats for ``heartbeat_timeout`` seconds, makes the others
    fail instead of waiting forever: the runtime ends each surviving process
    (abort, exit status 134) with "Terminating process because the JAX
    distributed service detected fatal errors. This most likely indicates that
    another task died" and the dead task named (tests: within the heartbeat
    timeout plus a second or two). A run restarts from its checkpoints.

    Does nothing when the runtime is already started.

    Args:
        coordinator_address: ``"host:port"`` of process 0's coordinator.
        num_processes: total number of processes.
        process_id: this process's index in ``[0, num_processes)``.
        local_device_ids: restricts this process to some local devices.
        initialization_timeout: seconds to wait for every process to join.
        heartbeat_timeout: seconds without a heartbeat after which a process
            counts as dead.

    Raises:
        ValueError: on a non-positive timeout or an inconsistent process id.
    """
    initialization_timeout = _checks.positive_int(initialization_timeout, "initialization_timeout")
    heartbeat_timeout = _checks.positive_int(heartbeat_timeout, "heartbeat_timeout")
    if num_processes is not None:
        num_processes = _checks.positive_int(num_processes, "num_processes")
        if (
            process_id is not None
            and not 0 <= _checks.non_negative_int(process_id, "process_id") < num_processes
        ):
            raise ValueError(
                f"process_id: expected an index in [0, {num_processes}), got {process_id}"
            )
    if jax.distributed.is_initialized():
        return
    if jax.config.jax_cpu_collectives_implementation is None:  # keep a user's "mpi"
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def is_main_process() -> bool:
    """True on process 0, the one that writes results, plots, logs and reports."""
    return jax.process_index() == 0


def _sharding(mesh, axis: int | None) -> NamedSharding:
    if axis is None:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*([None] * axis), PARTICLE_AXIS))


def process_rows(num_particles: int, mesh: jax.sharding.Mesh) -> slice:
    """The particle rows ``[start, stop)`` that this process holds on ``mesh``.

    A process's devices hold one contiguous block of the particle axis when the
    mesh lists each process's devices together (``particle_mesh`` does, as
    ``jax.devices()`` is ordered by process).

    Raises:
        ValueError: if ``num_particles`` is not divisible by the mesh size, or
            this process's rows are not contiguous.
    """
    num_particles = _checks.positive_int(num_particles, "num_particles")
    d = distributed._mesh_size(mesh)
    if num_particles % d:
        raise ValueError(
            f"num_particles: expected a multiple of the {d} devices of the mesh, "
            f"got {num_particles}"
        )
    index_map = _sharding(mesh, 0).addressable_devices_indices_map((num_particles,))
    bounds = sorted((idx[0].start or 0, idx[0].stop or num_particles) for idx in index_map.values())
    for (_, stop), (start, _) in zip(bounds[:-1], bounds[1:], strict=True):
        if start != stop:
            raise ValueError(
                f"mesh: expected this process's devices to hold contiguous rows, got {bounds}"
            )
    return slice(bounds[0][0], bounds[-1][1])


def population(
    key: jax.Array,
    sample_fn: Callable[[jax.Array], Any],
    num_particles: int,
    mesh: jax.sharding.Mesh,
) -> Any:
    """A population on ``mesh`` with particle ``i = sample_fn(fold_in(key, i))``.

    Each device computes only the rows it holds (one ``jit`` with sharded
    outputs), so no process materialises the whole population, and the values
    do not depend on the number of processes or devices.

    Args:
        key: typed PRNG key.
        sample_fn: ``key -> one particle`` (a pytree without the particle axis).
        num_particles: ``N``, a multiple of the mesh size.
        mesh: a ``"particles"`` mesh (``distributed.particle_mesh``).

    Returns:
        The population pytree, each leaf ``[N, ...]`` sharded over ``"particles"``.
    """
    if not callable(sample_fn):
        raise TypeError(f"sample_fn: expected a callable key -> particle, got {sample_fn!r}")
    process_rows(num_particles, mesh)  # checks N and the mesh
    return _population(key, sample_fn, num_particles, mesh)


@partial(jax.jit, static_argnames=("sample_fn", "num_particles", "mesh"))
def _population(key, sample_fn, num_particles, mesh):
    rows = _sharding(mesh, 0)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_particles))
    out = jax.vmap(sample_fn)(jax.lax.with_sharding_constraint(keys, rows))
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, _sharding(mesh, 0)), out
    )


def from_process_local(local: Any, mesh, num_particles: int, particle_axes: Any = 0) -> Any:
    """Assembles a global population from the rows each process holds.

    Each process passes the rows ``process_rows(num_particles, mesh)`` of every
    per-particle leaf (e.g. the prompts or data it read itself); leaves shared
    by all particles (``particle_axes`` None) are passed whole by every process.

    Returns:
        The population with each leaf sharded over ``"particles"`` on its
            particle axis (shared leaves replicated); ``N = num_particles``.

    Raises:
        ValueError: if a leaf's local size is not this process's row count.
    """
    from inferax.sampling import particles as particles_lib

    rows = process_rows(num_particles, mesh)
    axes = particles_lib.leaf_axes(particle_axes, local, "particle_axes")
    leaves, treedef = jax.tree_util.tree_flatten(local)
    out = []
    for x, ax in zip(leaves, axes, strict=True):
        x = np.asarray(x)
        shape = list(x.shape)
        if ax is not None:
            if x.ndim <= ax or x.shape[ax] != rows.stop - rows.start:
                raise ValueError(
                    f"local: expected {rows.stop - rows.start} rows (particles {rows.start}.."
                    f"{rows.stop - 1}) on axis {ax} of every per-particle leaf, got shape {x.shape}"
                )
            shape[ax] = num_particles
        sharding = _sharding(mesh, ax)
        out.append(jax.make_array_from_process_local_data(sharding, x, tuple(shape)))
    return jax.tree_util.tree_unflatten(treedef, out)


def gather(tree: Any) -> Any:
    """Every leaf as a whole NumPy array on every process (for reporting).

    Sharded leaves are all-gathered across processes
    (``multihost_utils.process_allgather``); in one process this is
    ``np.asarray``. Call it on what a report needs, not inside a run.
    """

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


def shard_model(fn: Callable, mesh: jax.sharding.Mesh, out_axis: int = 0) -> Callable:
    """Wraps a batched model callable so that it runs on each device's particles.

    ``fn(x [N, ...], *args)`` is called with ``x`` sharded over ``"particles"``
    on its leading axis, and its output is sharded on ``out_axis`` (0 for a
    velocity ``[N, *event]`` or a reward ``[N]``; 1 for stacked fields
    ``[M, N, *event]``). Inside a ``jit`` this pins the population to the mesh,
    so any population algorithm built on such callables (a flow search, a
    sampler) runs with its particles spread over the devices of all processes:
    ``jax.jit(partial(search.random_search, velocity_fn=shard_model(v, mesh),
    reward_fn=shard_model(r, mesh), ...))(key)``. The static cost of ``fn``
    (``cost.nfe_per_call``) is kept (``__wrapped__``).
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a batched callable (x, *args) -> array, got {fn!r}")
    _checks.non_negative_int(out_axis, "out_axis")
    distributed._mesh_size(mesh)

    @wraps(fn)
    def sharded(x, *args, **kwargs):
        x = jax.lax.with_sharding_constraint(x, _sharding(mesh, 0))
        out = fn(x, *args, **kwargs)
        return jax.lax.with_sharding_constraint(out, _sharding(mesh, out_axis))

    return sharded


def fk_sample(
    key: jax.Array,
    transition: fk_lib.FKTransition,
    num_particles: int,
    ts: jax.Array,
    mesh: jax.sharding.Mesh,
    **kwargs: Any,
) -> tuple[Any, jax.Array, fk_lib.FKInfo]:
    """``feynman_kac.sample`` with the particles sharded over ``mesh``.

    One global-view ``jit``: the model evaluations and moves run on each
    device's particles, the weight computations on replicated ``[N]`` vectors
    (as in ``distributed.sharded_run``), so the result is the one of
    ``feynman_kac.sample`` whatever the layout of processes and devices.

    Args:
        key: typed PRNG key, as in ``feynman_kac.sample``.
        transition: the ``FKTransition``, as in ``feynman_kac.sample``.
        num_particles: N, as in ``feynman_kac.sample``.
        ts: the time grid, as in ``feynman_kac.sample``.
        mesh: a ``"particles"`` mesh; ``num_particles`` a multiple of its size.
        **kwargs: the keyword options of ``feynman_kac.sample`` (static).

    Returns:
        ``(particles, log_weights, FKInfo)``; particles and log-weights sharded.
    """
    if not isinstance(transition, fk_lib.FKTransition):
        raise TypeError(f"transition: expected an FKTransition, got {type(transition).__name__}")
    process_rows(num_particles, mesh)
    if "event_shape" in kwargs:
        kwargs["event_shape"] = tuple(int(d) for d in kwargs["event_shape"])
    return _fk_sample(key, transition, int(num_particles), ts, mesh, tuple(sorted(kwargs.items())))


@partial(jax.jit, static_argnames=("transition", "num_particles", "mesh", "options"))
def _fk_sample(key, transition, num_particles, ts, mesh, options):
    sharded = NamedSharding(mesh, P(PARTICLE_AXIS))
    constrained = shard_model(transition.fields_fn, mesh, out_axis=1)  # [M, N, *event]
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        x, log_w, info = fk_lib.sample(
            key, transition._replace(fields_fn=constrained), num_particles, ts, **dict(options)
        )
    x = jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, P(PARTICLE_AXIS, *([None] * (x.ndim - 1))))
    )
    return x, jax.lax.with_sharding_constraint(log_w, sharded), info
