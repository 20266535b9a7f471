"""Generic sequential Monte Carlo: move, reweight, adaptively resample.

A population of ``N`` weighted particles is pushed through a sequence of
Markov transitions ``M_t`` with log-potentials ``log G_t`` supplied together
by one ``transition_fn(key, particles, step_input) -> (new_particles,
log_weight_increment)`` (Del Moral, Doucet & Jasra 2006, "Sequential Monte
Carlo samplers"; Chopin & Papaspiliopoulos 2020, ch. 10). Each step

1. moves and reweights: ``x' = M_t(x)``, ``l' = l + log G_t(x, x')``;
2. updates the log normalising-constant estimate
   ``log Z += logsumexp(l') - logsumexp(l)`` (the estimate of ``Z`` is
   unbiased; its log is not);
3. resamples, if allowed and ``ESS(l') < ess_threshold * N``, with the chosen
   scheme of ``inferax.sampling.resampling``, and then resets the
   log-weights to zeros (uniform).

The API follows BlackJAX (``init``/``step`` with NamedTuple ``State``/``Info``)
and a whole run is a single ``lax.scan`` (``run``), so it can be ``jit``-ed,
``vmap``-ed over keys, or sharded over a particle mesh
(``inferax.sampling.distributed``).

On a device mesh: run the step inside a global-view ``jit`` with the particles
sharded over a mesh axis ``"particles"`` that is ambient (``jax.set_mesh`` or
``jax.sharding.use_abstract_mesh``; ``distributed.sharded_run`` does both
parts). The ``[N]`` weight computations are then gathered and run replicated,
so results do not depend on the number of devices (bit-identical on 1 and 4
CPU devices). Compared with a run outside any mesh, floats may differ in the
last bits, which can move an ancestor across a CDF boundary.

Weights are in log space. NaN log-weights count as ``-inf``. If every
log-weight is invalid after a reweighting, ``Info.all_invalid`` is set, no
resampling happens and ``log_Z`` becomes ``-inf`` (it stays so afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import resampling as resampling_lib

# Mesh axis name over which the particle axis is sharded (DESIGN.md, Multi-device).
PARTICLE_AXIS = "particles"

TransitionFn = Callable[[jax.Array, Any, Any], tuple[Any, jax.Array]]


class SMCState(NamedTuple):
    """State of an SMC population.

    Attributes:
        particles: pytree whose leaves have leading axis ``N``.
        log_weights: ``[N]`` unnormalised log-weights. ``step`` stores them
            shifted by their ``logsumexp`` (normalised) to keep float32
            precision over long runs, and as zeros right after resampling.
        log_Z: scalar running estimate of ``log(Z_t / Z_0)``: the normaliser of
            the current target relative to the initial weighted population.
    """

    particles: Any
    log_weights: jax.Array
    log_Z: jax.Array


class SMCInfo(NamedTuple):
    """What one SMC step did.

    Attributes:
        ess: effective sample size after reweighting, before resampling.
        resampled: bool, whether this step resampled.
        ancestors: ``int32 [N]`` ancestor indices (``arange(N)`` when not resampled).
        log_Z_increment: ``logsumexp(l + increment) - logsumexp(l)``.
        all_invalid: bool, every log-weight was ``-inf``/NaN after reweighting.
    """

    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array
    log_Z_increment: jax.Array
    all_invalid: jax.Array


class SMC(NamedTuple):
    """An SMC algorithm built by ``build``: ``init``, ``step`` and ``run``."""

    init: Callable[..., SMCState]
    step: Callable[..., tuple[SMCState, SMCInfo]]
    run: Callable[..., tuple[SMCState, SMCInfo]]


def num_particles(particles: Any, name: str = "particles") -> int:
    """Returns the common leading-axis size ``N`` of a particle pytree.

    Raises:
        ValueError: if the pytree has no leaves, a scalar leaf, or leaves with
            different leading sizes.
    """
    leaves = jax.tree_util.tree_leaves(particles)
    if not leaves:
        raise ValueError(
            f"{name}: expected a pytree with at least one array leaf, got {particles!r}"
        )
    sizes = []
    for leaf in leaves:
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(f"{name}: expected every leaf to have a leading axis N, got a scalar")
        sizes.append(shape[0])
    if len(set(sizes)) != 1:
        raise ValueError(f"{name}: expected every leaf to share the leading axis N, got {sizes}")
    return int(sizes[0])


def init(particles: Any, log_weights: jax.Array | None = None) -> SMCState:
    """Creates an SMC state; uniform log-weights (zeros) unless given; ``log_Z = 0``.

    Args:
        particles: pytree of arrays with leading axis ``N``.
        log_weights: optional ``[N]`` floating log-weights of the initial population
            (e.g. importance weights). Their overall level does not enter ``log_Z``.

    Returns:
        ``SMCState``.

    Raises:
        ValueError / TypeError: on a malformed pytree or ``log_weights`` that is
            not a floating ``[N]`` array.
    """
    n = num_particles(particles)
    if log_weights is None:
        log_weights = jnp.zeros((n,), jnp.result_type(float))
    else:
        log_weights = resampling_lib._check_log_weights(log_weights)
        if log_weights.shape[0] != n:
            raise ValueError(
                f"log_weights: expected shape ({n},) to match the {n} particles, "
                f"got {tuple(log_weights.shape)}"
            )
    return SMCState(particles, log_weights, jnp.zeros((), log_weights.dtype))


def _particle_axis_type():
    """Type of the ambient mesh's ``"particles"`` axis, or None without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or PARTICLE_AXIS not in mesh.axis_names:
        return None
    return dict(zip(mesh.axis_names, mesh.axis_types, strict=True))[PARTICLE_AXIS]


def _on_whole_vector(fn: Callable) -> Callable:
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
    axis_type = _particle_axis_type()
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


def _reweight(old_log_weights: jax.Array, inc: jax.Array):
    old = resampling_lib.sanitize(old_log_weights)
    new = resampling_lib.sanitize((old + inc).astype(old.dtype))
    lse_new = jax.nn.logsumexp(new)
    invalid = jnp.all(new == -jnp.inf)
    increment = jnp.where(invalid, -jnp.inf, lse_new - jax.nn.logsumexp(old)).astype(old.dtype)
    log_weights = jnp.where(invalid, new, new - lse_new).astype(old.dtype)
    return log_weights, increment, invalid, resampling_lib.ess(log_weights)


def _explicit_mesh() -> bool:
    return _particle_axis_type() == jax.sharding.AxisType.Explicit


def _take(particles: Any, ancestors: jax.Array) -> Any:
    if _explicit_mesh():  # sharding in types: each leaf keeps its sharding
        return jax.tree_util.tree_map(
            lambda x: x.at[ancestors].get(out_sharding=jax.typeof(x).sharding.spec), particles
        )
    return jax.tree_util.tree_map(lambda x: jnp.take(x, ancestors, axis=0), particles)


def build(
    transition_fn: TransitionFn,
    *,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> SMC:
    """Builds an adaptive-resampling SMC algorithm.

    Args:
        transition_fn: ``(key, particles, step_input) -> (new_particles, inc)``
            with ``inc`` the ``[N]`` log-weight increments ``log G_t``. It must
            keep the particle pytree's structure, shapes and dtypes.
        resampling: name of a scheme in ``resampling.RESAMPLERS``.
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1.0`` means at
            every step, ``0.0`` never.

    Returns:
        ``SMC(init, step, run)``:

        - ``step(key, state, step_input, may_resample=True) -> (state, info)``;
          ``may_resample`` may be a traced bool.
        - ``run(key, state, step_inputs, *, resample_last=True) -> (state, infos)``:
          one ``lax.scan`` over the leading axis of the ``step_inputs`` pytree,
          step ``i`` using ``jax.random.fold_in(key, i)``; ``infos`` are stacked
          over steps. ``resample_last=False`` never resamples after the final step.

    Raises:
        TypeError: if ``transition_fn`` is not callable or ``ess_threshold`` is
            not a real number.
        ValueError: for an unknown ``resampling`` name or a threshold outside [0, 1].
    """
    if not callable(transition_fn):
        raise TypeError(f"transition_fn: expected a callable, got {type(transition_fn).__name__}")
    resample_fn = resampling_lib.get(resampling)
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, int | float):
        raise TypeError(
            f"ess_threshold: expected a Python float in [0, 1], got {ess_threshold!r} "
            f"of type {type(ess_threshold).__name__}"
        )
    if not 0.0 <= float(ess_threshold) <= 1.0 or math.isnan(ess_threshold):
        raise ValueError(f"ess_threshold: expected a value in [0, 1], got {ess_threshold}")
    threshold = float(ess_threshold)

    def step(key, state: SMCState, step_input, may_resample=True):
        if not isinstance(state, SMCState):
            raise TypeError(f"state: expected an SMCState, got {type(state).__name__}")
        n = num_particles(state.particles, "state.particles")
        if jnp.shape(state.log_weights) != (n,):
            raise ValueError(
                f"state.log_weights: expected shape ({n},) to match the {n} particles, "
                f"got {jnp.shape(state.log_weights)}"
            )
        dtype = state.log_weights.dtype
        key_move, key_resample = jax.random.split(key)

        new_particles, inc = transition_fn(key_move, state.particles, step_input)
        if jax.tree_util.tree_structure(new_particles) != jax.tree_util.tree_structure(
            state.particles
        ):
            raise ValueError(
                "transition_fn: expected new particles with the same pytree structure as "
                f"the input, got {jax.tree_util.tree_structure(new_particles)}"
            )
        num_particles(new_particles, "transition_fn output particles")
        if jnp.shape(inc) != (n,):
            raise ValueError(
                f"transition_fn: expected log-weight increments of shape ({n},), "
                f"got {jnp.shape(inc)}"
            )

        log_weights, increment, invalid, ess = _on_whole_vector(_reweight)(
            state.log_weights, inc.astype(dtype)
        )

        if threshold >= 1.0:
            trigger = jnp.array(True)
        else:
            trigger = ess < threshold * n
        do_resample = jnp.asarray(may_resample, bool) & trigger & ~invalid

        def _resample(operand):
            particles, lw = operand
            ancestors = _on_whole_vector(resample_fn)(key_resample, lw)
            return _take(particles, ancestors), jnp.zeros_like(lw), ancestors

        def _keep(operand):
            particles, lw = operand
            return particles, lw, jnp.arange(n, dtype=jnp.int32)

        particles, log_weights, ancestors = jax.lax.cond(
            do_resample, _resample, _keep, (new_particles, log_weights)
        )
        if _explicit_mesh():  # the scan carry keeps the input's sharding
            log_weights = jax.sharding.reshard(
                log_weights, jax.typeof(state.log_weights).sharding.spec
            )
        new_state = SMCState(particles, log_weights, (state.log_Z + increment).astype(dtype))
        info = SMCInfo(ess, do_resample, ancestors, increment, invalid)
        return new_state, info

    def run(key, state: SMCState, step_inputs, *, resample_last: bool = True):
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
        if not isinstance(resample_last, bool):
            raise TypeError(f"resample_last: expected a Python bool, got {resample_last!r}")

        def body(carry, xs):
            i, step_input = xs
            may_resample = resample_last | (i < num_steps - 1)
            return step(jax.random.fold_in(key, i), carry, step_input, may_resample)

        return jax.lax.scan(body, state, (jnp.arange(num_steps), step_inputs))

    return SMC(init, step, run)
