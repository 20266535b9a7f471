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
   scheme, and then resets the log-weights to zeros (uniform).

The API follows BlackJAX (``init``/``step`` with NamedTuple ``State``/``Info``);
a whole run is one ``lax.scan`` (``run``) or one ``lax.while_loop`` that stops
when every particle is done (``run_until_done``), so it can be ``jit``-ed,
``vmap``-ed over keys, or sharded over a particle mesh
(``inferax.sampling.distributed``).

**Any population.** Particles are a pytree; ``particle_axes`` (a pytree prefix
of ints / None, like ``jax.vmap``'s ``in_axes``; see
``inferax.sampling.particles``) says where each leaf keeps its particles: a
language model's tokens ``[N, L]`` (axis 0), a layer-major KV cache
``[layers, N, ...]`` (axis 1), a decode index shared by all particles
(``None``: never resampled). Resampling gathers the ancestors' rows of every
per-particle leaf; nothing is recomputed. When a step does not resample, no
gather runs — also under ``vmap``, where a ``lax.cond`` would turn into a
select that gathers every step: the gather sits in a ``lax.while_loop`` of at
most one iteration, which a batched predicate runs only when some member of
the batch resamples.

**Transitions.** ``transition_fn`` may return a third item, ``aux`` (any
pytree: rewards, tokens generated, NFE), which lands in ``SMCInfo.aux``. It may
also *expand* the population: returning ``K * N`` particles (children of
particle ``i`` at rows ``i K .. i K + K - 1``, e.g. ``jnp.repeat(x, K, axis)``)
and ``K * N`` increments. A child starts from its parent's log-weight minus
``log K`` (the K children share the parent's mass), and the step always
resamples back to ``N`` (SMC steering's expand-then-resample; Lew et al. 2023).

**Groups.** A state whose log-weights are ``[G, n]`` (``init`` with 2-D
``log_weights``) holds ``G`` independent populations of ``n`` particles each,
stored group-major on the particle axis (rows ``g n .. g n + n - 1``; e.g. the
particles of ``G`` prompts of a language-model search). Each group is
normalised, tested for ESS, resampled (within the group, key
``fold_in(key, g)``) and carries its own ``log_Z``: every per-step quantity of
``SMCInfo`` gets a leading ``[G]`` axis and ``ancestors`` are ``[G, n]`` rows
within the group. The transition still sees the whole population at once (one
batched model call for all groups); an expanding transition returns ``K``
children per particle, so group ``g`` owns rows ``g K n .. (g + 1) K n - 1``.

**Resamplers.** ``resampling`` is a name of ``inferax.sampling.resampling``
or any callable ``(key, log_weights [M], num_samples) -> int32 [num_samples]``.

On a device mesh: run the step inside a global-view ``jit`` with the particles
sharded over a mesh axis ``"particles"`` that is ambient (``jax.set_mesh`` or
``jax.sharding.use_abstract_mesh``; ``distributed.sharded_run`` does both
parts). The ``[N]`` weight computations are then gathered and run replicated,
so results do not depend on the number of devices (bit-identical on 1 and 4
CPU devices).

**Numerical failure is reported.** NaN log-weights count as ``-inf`` and are
counted in ``SMCInfo.num_nan``; ``+inf`` log-weights are counted in
``SMCInfo.num_posinf`` and make ``log_Z`` ``+inf`` (the ``+inf`` particles
share the mass when resampling). If every log-weight is invalid after a
reweighting, ``SMCInfo.all_invalid`` is set, no resampling happens and
``log_Z`` becomes ``-inf`` (it stays so afterwards). Particles the transition
left with a NaN/``inf`` entry in a floating leaf are counted in
``SMCInfo.num_non_finite_particles``: by default every floating leaf is looked
at (for a sampler's state, e.g. flow particles, that is what can go bad, and
the pass is small beside the transition's network evaluations);
``build(..., check_finite=prefix)`` restricts the pass to the leaves that can
go bad and matter. A language-model population is the example: its KV cache
is by far its largest leaf, and a pass over it every step would read the whole
cache once more per round, while a non-finite key or value that can affect
generation reaches the row's logits in the same decode step that wrote it
(the new token attends to itself), so the LM searches look at the logits only
(``inferax.search.lm.particle.FINITE_LEAVES``). ``build(..., runtime_checks=True)`` turns
both (any non-finite particle, every log-weight invalid) into ``checkify``
errors: the caller runs under ``jax.experimental.checkify.checkify`` and calls
``err.throw()``; without it nothing is added and the outputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks
from inferax.sampling import particles as particles_lib
from inferax.sampling import resampling as resampling_lib
from inferax.sampling._mesh import PARTICLE_AXIS  # noqa: F401 (the mesh axis name, re-exported)
from inferax.sampling._mesh import explicit_mesh as _explicit_mesh
from inferax.sampling._mesh import on_whole_vector as _on_whole_vector
from inferax.sampling._smc_parts import (
    Resampler,
    _finite_flags,
    _non_finite_rows,
    _num_steps,
    _resolve_resampler,
    _reweight,
    _unpack,
    lineage,
    num_distinct_ancestors,
)

TransitionFn = Callable[..., tuple]


class SMCState(NamedTuple):
    """State of an SMC population.

    Attributes:
        particles: pytree; each leaf carries the ``N`` particles on its particle
            axis (``particle_axes``), or is shared by all of them.
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
        ess: effective sample size of the weights accumulated since the last
            resampling, after this step's reweighting and before resampling.
        resampled: bool, whether this step resampled.
        ancestors: ``int32 [N]`` ancestor indices (``arange(N)`` when not
            resampled; indices into the ``K N`` children when the step expanded).
        log_Z_increment: ``logsumexp(l + increment) - logsumexp(l)``.
        all_invalid: bool, every log-weight was ``-inf``/NaN after reweighting.
        num_nan: int32, increments that were NaN (counted as ``-inf``).
        num_posinf: int32, log-weights that were ``+inf`` after reweighting.
        aux: the transition's auxiliary output, or None.
        num_non_finite_particles: int32, particles (of the ``N``, or ``K N`` when
            expanding, after the transition) with a NaN/``±inf`` entry in a
            floating per-particle leaf that ``build``'s ``check_finite`` selects
            (default: all); a non-finite shared leaf counts every particle.
            Integer leaves are not looked at.
    """

    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array
    log_Z_increment: jax.Array
    all_invalid: jax.Array
    num_nan: jax.Array | None = None
    num_posinf: jax.Array | None = None
    aux: Any = None
    num_non_finite_particles: jax.Array | None = None


class SMC(NamedTuple):
    """An SMC algorithm built by ``build``: ``init``, ``step``, ``run``, ``run_until_done``."""

    init: Callable[..., SMCState]
    step: Callable[..., tuple[SMCState, SMCInfo]]
    run: Callable[..., tuple[SMCState, SMCInfo]]
    run_until_done: Callable[..., tuple[SMCState, SMCInfo, jax.Array]]
    particle_axes: particles_lib.ParticleAxes = particles_lib.ParticleAxes.of(0)


def num_particles(particles: Any, name: str = "particles", particle_axes: Any = 0) -> int:
    """Returns the common particle-axis size ``N`` of a population pytree.

    Raises:
        ValueError: if the pytree has no leaves, a scalar leaf on axis 0, or
            leaves with different sizes.
    """
    return particles_lib.count(particles, particle_axes, name)


def init(
    particles: Any, log_weights: jax.Array | None = None, *, particle_axes: Any = 0
) -> SMCState:
    """Creates an SMC state; uniform log-weights (zeros) unless given; ``log_Z = 0``.

    Args:
        particles: population pytree (``N`` particles on each leaf's particle axis).
        log_weights: optional ``[N]`` floating log-weights of the initial population
            (e.g. importance weights). Their overall level does not enter ``log_Z``.
            A ``[G, n]`` array (``G n = N``) makes ``G`` independent groups of ``n``
            particles (module docstring, Groups); ``log_Z`` is then ``[G]``.
        particle_axes: see ``inferax.sampling.particles`` (default 0: leading axis).

    Returns:
        ``SMCState``.

    Raises:
        ValueError: on a malformed pytree (particle axes that disagree) or
            ``log_weights`` that is not ``[N]`` (or ``[G, n]``).
        TypeError: for ``log_weights`` that is not a floating array.

    Example:
        >>> import jax.numpy as jnp
        >>> from inferax.sampling import smc
        >>> state = smc.init(jnp.zeros((6, 2)), jnp.zeros((2, 3)))  # 2 groups of 3
        >>> state.log_weights.shape, state.log_Z.shape
        ((2, 3), (2,))
    """
    n = num_particles(particles, "particles", particle_axes)
    if log_weights is None:
        log_weights = jnp.zeros((n,), jnp.result_type(float))
    elif jnp.ndim(log_weights) == 2:
        g, n_g = jnp.shape(log_weights)
        flat = resampling_lib.check_log_weights(jnp.reshape(log_weights, (-1,)))
        if g * n_g != n or g < 1:
            raise ValueError(
                f"log_weights: expected shape (G, n) with G * n = {n} particles, "
                f"got {tuple(jnp.shape(log_weights))}"
            )
        return SMCState(particles, flat.reshape(g, n_g), jnp.zeros((g,), flat.dtype))
    else:
        log_weights = resampling_lib.check_log_weights(log_weights)
        if log_weights.shape[0] != n:
            raise ValueError(
                f"log_weights: expected shape ({n},) to match the {n} particles, "
                f"got {tuple(log_weights.shape)}"
            )
    return SMCState(particles, log_weights, jnp.zeros((), log_weights.dtype))


def build(
    transition_fn: TransitionFn,
    *,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    particle_axes: Any = 0,
    move_fn: Callable[..., Any] | None = None,
    runtime_checks: bool = False,
    check_finite: Any = True,
) -> SMC:
    """Builds an adaptive-resampling SMC algorithm.

    Args:
        transition_fn: ``(key, particles, step_input) -> (new_particles, inc)`` or
            ``(new_particles, inc, aux)``, ``inc`` the ``[N]`` (or ``[K N]`` when
            expanding) log-weight increments ``log G_t``. It must keep the
            pytree structure, dtypes and shapes (a particle axis may grow to
            ``K N``; shared leaves keep their shape).
        resampling: a name in ``resampling.RESAMPLERS`` or a callable
            ``(key, log_weights [M], num_samples) -> int32 [num_samples]``.
        ess_threshold: resample when ``ESS < ess_threshold * N``; ``1.0`` means at
            every step, ``0.0`` never (an expanding step always resamples).
        particle_axes: each leaf's particle axis (int) or None for leaves shared
            by all particles; a pytree prefix of the particles
            (``inferax.sampling.particles``).
        move_fn: optional resample-move kernel ``(key, particles, step_input) ->
            particles``, applied right after a resampling (and only then), e.g.
            MCMC or Langevin steps that leave the current target invariant and
            restore the diversity resampling removed (Gilks & Berzuini 2001). Like
            the gather, it sits in a loop of at most one iteration, so a
            ``vmap``-ed run only pays for it when some member resampled.
        runtime_checks: add ``checkify`` checks (module docstring, Numerical
            failure): a non-finite particle or every log-weight invalid becomes an
            error when the caller runs under ``checkify.checkify``.
        check_finite: the leaves counted in ``SMCInfo.num_non_finite_particles``: a
            bool, or a pytree prefix of the particles with bool leaves (like
            ``particle_axes``), e.g. ``{"x": True, "cache": False}``. Default True:
            every floating leaf. Leave out what is large and cannot matter on its
            own (a language model's KV cache: module docstring).

    Returns:
        ``SMC(init, step, run, run_until_done)``:

            - ``init(particles, log_weights=None)``;
            - ``step(key, state, step_input, may_resample=True) -> (state, info)``;
              ``may_resample`` may be a traced bool.
            - ``run(key, state, step_inputs, *, resample_last=True) -> (state, infos)``:
              one ``lax.scan`` over the leading axis of the ``step_inputs`` pytree,
              step ``i`` using ``jax.random.fold_in(key, i)``; ``infos`` are stacked
              over steps. ``resample_last=False`` never resamples after the final step.
            - ``run_until_done(key, state, done_fn, *, max_steps, step_inputs=None,
              resample_last=True) -> (state, infos, num_steps)``: one
              ``lax.while_loop`` that stops after ``max_steps`` steps or as soon as
              ``done_fn(particles) -> bool [N]`` holds for every particle. Step ``i``
              gets ``step_inputs[i]`` (default: ``i`` itself) and the key
              ``fold_in(key, i)``, as in ``run``; a particle that is done before a
              step keeps its state and weight through it (not for expanding
              transitions, which see ``done`` themselves). ``infos`` have
              ``max_steps`` rows, the first ``num_steps`` filled (the rest zeros).

    Raises:
        TypeError: if ``transition_fn`` is not callable, ``ess_threshold`` is
            not a real number, or ``check_finite`` has a non-bool entry (a
            ``check_finite`` that is no prefix of the particles is a ValueError
            when ``step`` is traced).
        ValueError: for an unknown ``resampling`` name or a threshold outside [0, 1].

    Example:
        A random walk reweighted by a Gaussian potential, resampling at every step:

        >>> import jax, jax.numpy as jnp
        >>> from inferax.sampling import smc
        >>> def transition(key, x, t):
        ...     x = x + 0.1 * jax.random.normal(key, x.shape)
        ...     return x, -0.5 * jnp.sum(x**2, axis=-1)
        >>> alg = smc.build(transition, ess_threshold=1.0)
        >>> state, infos = alg.run(jax.random.key(0), alg.init(jnp.zeros((8, 2))), jnp.arange(3))
        >>> state.particles.shape, state.log_weights.shape, infos.resampled.tolist()
        ((8, 2), (8,), [True, True, True])
    """
    if not callable(transition_fn):
        raise TypeError(f"transition_fn: expected a callable, got {type(transition_fn).__name__}")
    if move_fn is not None and not callable(move_fn):
        raise TypeError(f"move_fn: expected None or a callable, got {type(move_fn).__name__}")
    resample_fn = _resolve_resampler(resampling)
    threshold = _checks.unit_interval(ess_threshold, "ess_threshold")
    if not isinstance(runtime_checks, bool):
        raise TypeError(f"runtime_checks: expected a Python bool, got {runtime_checks!r}")
    particle_axes = particles_lib.ParticleAxes.of(particle_axes)
    for flag in jax.tree_util.tree_leaves(check_finite):
        if not isinstance(flag, bool):
            raise TypeError(f"check_finite: expected Python bools, got {flag!r}")

    def init_fn(particles, log_weights=None):
        return init(particles, log_weights, particle_axes=particle_axes)

    def _step(key, state, step_input, may_resample, done):
        if not isinstance(state, SMCState):
            raise TypeError(f"state: expected an SMCState, got {type(state).__name__}")
        axes = particles_lib.leaf_axes(particle_axes, state.particles)
        n = num_particles(state.particles, "state.particles", particle_axes)
        lw_shape = tuple(jnp.shape(state.log_weights))
        grouped = len(lw_shape) == 2  # G independent groups of n // G particles
        groups = lw_shape[0] if grouped else 1
        if lw_shape != (n,) and not (grouped and lw_shape[0] * lw_shape[1] == n):
            raise ValueError(
                f"state.log_weights: expected shape ({n},) (or (G, n) groups with G * n = {n}) "
                f"to match the {n} particles, got {lw_shape}"
            )
        n_g = n // groups
        dtype = state.log_weights.dtype
        key_move, key_resample, key_rejuvenate = jax.random.split(key, 3)

        new_particles, inc, aux = _unpack(transition_fn(key_move, state.particles, step_input))
        m = jnp.shape(inc)[0] if jnp.ndim(inc) == 1 else None
        expand = m // n if (m is not None and m % n == 0) else 0
        if m is None or expand < 1:
            raise ValueError(
                f"transition_fn: expected log-weight increments of shape ({n},) "
                f"(or (K * {n},) when expanding), got {jnp.shape(inc)}"
            )
        particles_lib.check_like(new_particles, state.particles, axes, (m,), "transition_fn")
        if not jnp.issubdtype(jnp.result_type(inc), jnp.floating):
            raise TypeError(
                "transition_fn: expected floating log-weight increments, got "
                f"{jnp.result_type(inc)}"
            )
        inc = inc.astype(dtype)
        if done is not None and expand == 1:  # finished particles stand still
            new_particles = particles_lib.where(done, state.particles, new_particles, axes)
            inc = jnp.where(done, jnp.zeros((), dtype), inc)
        m_g = m // groups
        flags = _finite_flags(check_finite, new_particles)
        non_finite = _non_finite_rows(new_particles, axes, m, flags)
        num_non_finite = (
            jnp.sum(non_finite.reshape(groups, m_g), axis=1, dtype=jnp.int32)
            if grouped
            else jnp.sum(non_finite, dtype=jnp.int32)
        )
        _checks.runtime_check(
            ~jnp.any(non_finite),
            "transition_fn: expected finite particles, got {} particles with NaN/inf entries",
            runtime_checks,
            jnp.sum(non_finite, dtype=jnp.int32),
        )

        def per_group(fn):  # groups: the [n] weight algebra on every row of [G, n]
            return jax.vmap(fn) if grouped else fn

        log_weights, increment, invalid, ess, num_nan, num_posinf = _on_whole_vector(
            per_group(lambda lw, i: _reweight(lw, i, expand))
        )(state.log_weights, inc.reshape(groups, m_g) if grouped else inc)

        _checks.runtime_check(
            ~jnp.any(invalid),
            "log_weights: expected some finite log-weight after reweighting, got every "
            "log-weight -inf/NaN (all_invalid) in {} group(s)",
            runtime_checks,
            jnp.sum(invalid, dtype=jnp.int32),
        )
        trigger = jnp.array(True) if threshold >= 1.0 else ess < threshold * m_g
        if expand > 1:
            trigger = jnp.array(True)
        if callable(may_resample):
            may_resample = may_resample(new_particles)
        do_resample = jnp.asarray(may_resample, bool) & trigger & ~invalid
        if expand > 1:  # the population must come back to N
            do_resample = do_resample | jnp.array(True)
        if grouped:
            do_resample = jnp.broadcast_to(do_resample, (groups,))

        def ancestors_fn(k, lw):
            a = resample_fn(k, lw, n_g)
            if jnp.shape(a) != (n_g,) or not jnp.issubdtype(jnp.result_type(a), jnp.integer):
                raise ValueError(
                    f"resampling: expected int ancestors of shape ({n_g},), got "
                    f"{jnp.result_type(a)}{list(jnp.shape(a))}"
                )
            return a.astype(jnp.int32)

        if grouped:  # group g resamples with fold_in(key, g), within its own rows

            def draw(k, lw):
                keys = jax.vmap(lambda g: jax.random.fold_in(k, g))(jnp.arange(groups))
                return jax.vmap(ancestors_fn)(keys, lw)

            def rows_of(local):
                return (local + jnp.arange(groups, dtype=jnp.int32)[:, None] * m_g).reshape(-1)

            identity = jnp.broadcast_to(jnp.arange(n_g, dtype=jnp.int32), (groups, n_g))
        else:
            draw, rows_of = ancestors_fn, (lambda a: a)
            identity = jnp.arange(n, dtype=jnp.int32)

        sharding = None
        if _explicit_mesh():  # sharding in types: each leaf keeps its sharding
            sharding = lambda leaf: jax.typeof(leaf).sharding.spec  # noqa: E731
        if expand > 1:
            ancestors = _on_whole_vector(draw)(key_resample, log_weights)
            particles = particles_lib.take(new_particles, rows_of(ancestors), axes, sharding)
        else:
            # At most one iteration: under vmap a batched predicate runs the
            # gather only when some member resamples (a cond would always gather).
            def body(carry):
                _, tree, _ = carry
                anc = _on_whole_vector(draw)(key_resample, log_weights)
                if grouped:  # groups that do not resample keep their rows
                    anc = jnp.where(do_resample[:, None], anc, identity)
                return (
                    jnp.zeros((), bool),
                    particles_lib.take(tree, rows_of(anc), axes, sharding),
                    anc,
                )

            _, particles, ancestors = jax.lax.while_loop(
                lambda c: c[0], body, (jnp.any(do_resample), new_particles, identity)
            )
        if move_fn is not None:

            def rejuvenate(carry):
                _, tree = carry
                moved = move_fn(key_rejuvenate, tree, step_input)
                particles_lib.check_like(moved, tree, axes, (n,), "move_fn")
                if grouped:  # only the groups that resampled move
                    moved = particles_lib.where(jnp.repeat(do_resample, n_g), moved, tree, axes)
                return jnp.zeros((), bool), moved

            _, particles = jax.lax.while_loop(
                lambda c: c[0], rejuvenate, (jnp.any(do_resample), particles)
            )
        reset = do_resample[:, None] if grouped else do_resample
        log_weights = jnp.where(reset, jnp.zeros_like(log_weights), log_weights)
        if expand > 1:
            log_weights = log_weights[..., :n_g]
        if _explicit_mesh():  # the scan carry keeps the input's sharding
            log_weights = jax.sharding.reshard(
                log_weights, jax.typeof(state.log_weights).sharding.spec
            )
        new_state = SMCState(particles, log_weights, (state.log_Z + increment).astype(dtype))
        info = SMCInfo(
            ess, do_resample, ancestors, increment, invalid, num_nan, num_posinf, aux,
            num_non_finite,
        )  # fmt: skip
        return new_state, info

    def step(key, state: SMCState, step_input, may_resample=True):
        return _step(key, state, step_input, may_resample, None)

    def run(key, state: SMCState, step_inputs, *, resample_last: bool = True):
        num_steps = _num_steps(step_inputs)
        if not isinstance(resample_last, bool):
            raise TypeError(f"resample_last: expected a Python bool, got {resample_last!r}")

        def body(carry, xs):
            i, step_input = xs
            may_resample = resample_last | (i < num_steps - 1)
            return step(jax.random.fold_in(key, i), carry, step_input, may_resample)

        return jax.lax.scan(body, state, (jnp.arange(num_steps), step_inputs))

    def run_until_done(
        key, state: SMCState, done_fn, *, max_steps: int, step_inputs=None, resample_last=True
    ):
        max_steps = _checks.positive_int(max_steps, "max_steps")
        if not callable(done_fn):
            raise TypeError(f"done_fn: expected a callable particles -> bool [N], got {done_fn!r}")
        if not isinstance(resample_last, bool):
            raise TypeError(f"resample_last: expected a Python bool, got {resample_last!r}")
        if step_inputs is not None and _num_steps(step_inputs) < max_steps:
            raise ValueError(
                f"step_inputs: expected at least max_steps = {max_steps} rows, got "
                f"{_num_steps(step_inputs)}"
            )
        n = num_particles(state.particles, "state.particles", particle_axes)

        def done_of(particles):
            d = done_fn(particles)
            if jnp.shape(d) != (n,):
                raise ValueError(
                    f"done_fn: expected a bool array of shape ({n},), got {jnp.shape(d)}"
                )
            return jnp.asarray(d, bool)

        def input_at(i):
            if step_inputs is None:
                return i
            return jax.tree_util.tree_map(lambda a: a[i], step_inputs)

        def one(i, st, may_resample, done):
            return _step(jax.random.fold_in(key, i), st, input_at(i), may_resample, done)

        # The info buffers need one step's output shapes (an abstract trace only).
        info_shape = jax.eval_shape(
            lambda s: one(jnp.int32(0), s, True, done_of(s.particles))[1], state
        )
        infos0 = jax.tree_util.tree_map(
            lambda a: jnp.zeros((max_steps, *a.shape), a.dtype), info_shape
        )

        def cond(carry):
            i, _, _, all_done = carry
            return (i < max_steps) & ~all_done

        def body(carry):
            i, st, infos, _ = carry
            done = done_of(st.particles)
            if resample_last:
                may = True
            else:  # decided after the move, once the new done mask is known

                def may(new_particles):
                    return ~(jnp.all(done_of(new_particles)) | (i >= max_steps - 1))

            new, info = one(i, st, may, done)
            infos = jax.tree_util.tree_map(lambda buf, v: buf.at[i].set(v), infos, info)
            return i + 1, new, infos, jnp.all(done_of(new.particles))

        start = (jnp.int32(0), state, infos0, jnp.all(done_of(state.particles)))
        num, final, infos, _ = jax.lax.while_loop(cond, body, start)
        return final, infos, num

    return SMC(init_fn, step, run, run_until_done, particle_axes)


__all__ = [
    "PARTICLE_AXIS", "SMC", "SMCInfo", "SMCState", "Resampler", "TransitionFn", "build", "init",
    "lineage", "num_distinct_ancestors", "num_particles",
]  # fmt: skip
