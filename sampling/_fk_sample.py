"""Running a Feynman-Kac corrector: ``feynman_kac.sample``, its ``FKInfo`` and the
resample-move Langevin kernel (re-exported by ``inferax.sampling.feynman_kac``).

Diagnostics (``FKInfo``) that tell a collapsed population from a healthy one:

- ``ess``: per step, the ESS of the weights accumulated since the last
  resampling (after the step's reweighting, before resampling). With
  resampling at every step (the default) this is one step's increments and
  reads ~N even when the run is in trouble; it is not the only number to read.
- ``lineage_ess``: per step, the ESS of each particle's log-weight summed over
  its whole ancestral line since t = 0 — the weight its path would carry had
  nothing been resampled. Low values mean the weights, not the moves, carried
  the population to the target (high weight variance along the path).
- ``num_distinct_ancestors``: how many of the N initial particles still have
  descendants at the end. Few means path degeneracy: resampling without enough
  noise in between (e.g. a noise schedule g that vanishes near the data)
  copies a few particles over and over, and the weighted population
  underestimates the target's spread even though every step's ESS is high.
- ``num_nan`` / ``num_posinf``: log-weight increments that were NaN (counted as
  zero weight) or ``+inf``; ``all_invalid``: some step lost every weight.

The classic remedy for degeneracy is resample-move (Gilks & Berzuini 2001;
Chopin & Papaspiliopoulos 2020, ch. 9; REFERENCES section 8): after each
resampling, ``langevin_steps`` MCMC steps on the current intermediate target
q_t = prod_i p_{i,t}^beta_i, whose score S = sum_i beta_i s_i comes from the
velocities (one ``fields_fn`` call, ``nfe_per_eval`` NFE, per score).

- ``adjusted=True`` (default): MALA (``inferax.sampling.mala``), which leaves
  q_t invariant, so the SMC estimate of Z stays unbiased and log Z converges
  as the grid is refined. The velocities give S but not log q_t, so the
  Metropolis ratio uses the line integral of S along the proposal segment
  (``quadrature``: Simpson by default, exact for Gaussian q_t, error
  O(|y - x|^5) otherwise). The step is eps = h / F with F the previous
  step's population Fisher information per coordinate (mean |S|^2 / d, 1 / v
  for a Gaussian of variance v; F = sum(beta) / b(t0)^2, that of q_0, before
  the first move) and h adapted between steps toward ``target_acceptance``
  (0.574) from the previous move's population-mean acceptance
  (log h += rate (acceptance - target)): fixed during a move, chosen without
  looking at the particles it moves. One move costs 1 + K (1 + interior
  quadrature nodes) scores (1 + 2K with Simpson); ``FKInfo.acceptance_rate``
  is the mean acceptance over all moves.
- ``adjusted=False``: unadjusted Langevin x <- x + eps S + sqrt(2 eps) xi
  (K scores per move), eps = eta / F with F from the current population and
  eta = ``langevin_step_size``. BIASED: it does not leave q_t invariant; for
  a Gaussian q_t of variance v its stationary variance is v / (1 - eps / (2 v)),
  a relative bias ~ eta / 2, and the log Z bias does not vanish as the grid is
  refined (annealing beta = 2 of an off-centre 2-D Gaussian, 4096 particles:
  log Z 0.69 at 200 steps and 0.65 at 800 against the exact 0.51).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, flow, mala, sde, smc
from inferax.sampling import resampling as resampling_lib


class FKInfo(NamedTuple):
    """What a Feynman-Kac corrector run did (see the module docstring).

    Attributes:
        num_steps: grid intervals.
        nfe: network evaluations per particle actually spent (steps x models,
            CFG counts 2, plus the Langevin moves of the steps that resampled).
        ess: ``[num_steps]`` ESS of the weights since the last resampling, before
            resampling (N throughout when unweighted).
        lineage_ess: ``[num_steps]`` ESS of the weights accumulated along each
            particle's ancestral line since t = 0.
        resampled: ``[num_steps]`` whether each step resampled.
        num_distinct_ancestors: initial particles with descendants at the end.
        num_nan: NaN log-weight increments over the run.
        num_posinf: ``+inf`` log-weights over the run.
        log_Z: estimate of log(Z_1 / Z_0), Z_t = int prod_i p_{i,t}^beta_i dx
            (0 when unweighted; offset when ``center=True``).
        all_invalid: whether any step lost every weight.
        acceptance_rate: mean Metropolis acceptance probability over all adjusted
            resample-move steps (NaN when none ran: no moves, unadjusted moves or
            no resampling).
    """

    num_steps: jax.Array
    nfe: jax.Array
    ess: jax.Array
    lineage_ess: jax.Array
    resampled: jax.Array
    num_distinct_ancestors: jax.Array
    num_nan: jax.Array
    num_posinf: jax.Array
    log_Z: jax.Array
    all_invalid: jax.Array
    acceptance_rate: jax.Array | float = float("nan")


class MoveState(NamedTuple):
    """The adjusted move's adaptation, a leaf shared by all particles (never resampled).

    Attributes:
        log_h: log of the dimensionless step h (eps = h / F).
        inv_fisher: 1 / F from the previous move's population (that of q_0 at first).
        acceptance_sum: sum of the moves' population-mean acceptances.
        num_moves: moves run so far.
    """

    log_h: jax.Array
    inv_fisher: jax.Array
    acceptance_sum: jax.Array
    num_moves: jax.Array


def move_evals(langevin_steps: int, adjusted: bool = True, quadrature: str = "simpson") -> int:
    """Score evaluations (``fields_fn`` calls) of one resample-move, known statically.

    Adjusted: one score at the start, then ``mala.evals_per_step(quadrature)`` per
    MALA step (S at the proposal and the quadrature's interior nodes). Unadjusted:
    one per Langevin step. 0 when ``langevin_steps`` is 0.
    """
    langevin_steps = _checks.non_negative_int(langevin_steps, "langevin_steps")
    if not isinstance(adjusted, bool):
        raise TypeError(f"adjusted: expected a bool, got {adjusted!r}")
    per_step = mala.evals_per_step(quadrature)  # validates the name either way
    if langevin_steps == 0:
        return 0
    return 1 + langevin_steps * per_step if adjusted else langevin_steps


def mala_move(transition, num_steps: int, quadrature: str = "simpson"):
    """The adjusted resample-move kernel ``(key, x, t, eps) -> (x, acceptance, 1 / F)``.

    ``num_steps`` MALA steps (``inferax.sampling.mala``) on q_t with step ``eps``;
    ``acceptance`` is the mean acceptance probability over particles and steps;
    1 / F = d / mean |S|^2 of the moved population (the next move's scale).

    Args:
        transition: an ``FKTransition`` (its ``score`` gives S = sum_i beta_i s_i).
        num_steps: MALA steps per move (``move_evals`` scores in all).
        quadrature: the line-integral rule of the Metropolis ratio (``mala.QUADRATURES``).
    """
    mala.evals_per_step(quadrature)

    def move(key, x, t, eps):
        t = jnp.asarray(t, x.dtype)
        eps = jnp.asarray(eps, x.dtype)

        def score_fn(y):
            return transition.score(y, t)[0]

        def body(i, carry):
            state, acc = carry
            state, info = mala.step(
                jax.random.fold_in(key, i), state, score_fn, eps, quadrature=quadrature
            )
            return state, acc + jnp.mean(info.acceptance_rate.astype(acc.dtype))

        acc0 = jnp.zeros((), jnp.promote_types(x.dtype, jnp.float32))
        state, acc = jax.lax.fori_loop(0, num_steps, body, (mala.init(x, score_fn), acc0))
        d = int(np.prod(x.shape[1:]))
        fisher = jnp.mean(jnp.sum(state.score.reshape(x.shape[0], -1) ** 2, -1)) / d
        inv_fisher = 1.0 / jnp.maximum(fisher.astype(acc.dtype), jnp.finfo(acc.dtype).tiny)
        return state.x, acc / num_steps, inv_fisher

    return move


def langevin_move(transition, num_steps: int, step_size: float):
    """A resample-move kernel ``(key, x, (t0, t1)) -> x``: unadjusted Langevin on q_{t1}.

    Biased (it does not leave q_{t1} invariant; see the module docstring): prefer
    ``mala_move`` (``sample(..., adjusted=True)``).

    Args:
        transition: an ``FKTransition`` (its ``score`` gives S = sum_i beta_i s_i).
        num_steps: Langevin steps per move (each costs ``transition.nfe_per_step``).
        step_size: eta; the step is eta / F with F = mean |S|^2 / d, the population's
            Fisher information per coordinate (eta times the variance for a Gaussian).
    """

    def move(key, x, step_input):
        t = jnp.asarray(step_input[1], x.dtype)
        d = int(np.prod(x.shape[1:]))
        s0, _ = transition.score(x, t)
        # eps = eta / (mean |S|^2 / d): for a Gaussian target E|S|^2 = d / v, so eps = eta v;
        # the score is local, so a multimodal population does not inflate the step.
        fisher = jnp.mean(jnp.sum(s0.reshape(x.shape[0], -1) ** 2, axis=-1)) / d
        eps = jnp.asarray(step_size, x.dtype) / jnp.maximum(fisher, jnp.finfo(x.dtype).tiny)

        def langevin(i, x, s):
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
            return x + eps * s + jnp.sqrt(2.0 * eps) * noise

        # num_steps score evaluations in all: s0 above, then one per further step.
        x = langevin(0, x, s0)
        return jax.lax.fori_loop(
            1, num_steps, lambda i, x: langevin(i, x, transition.score(x, t)[0]), x
        )

    return move


def sample(
    key: jax.Array,
    transition,
    num_particles: int,
    ts: jax.Array,
    *,
    event_shape: Sequence[int],
    resampling: str = "systematic",
    ess_threshold: float = 1.0,
    weighted: bool = True,
    dtype=None,
    langevin_steps: int = 0,
    langevin_step_size: float = 0.1,
    adjusted: bool = True,
    quadrature: str = "simpson",
    target_acceptance: float = mala.TARGET_ACCEPTANCE,
    adaptation_rate: float = 1.0,
):
    """Runs a Feynman-Kac corrector from q_0 = N(0, I / sum beta) along ``ts``.

    Args:
        key: typed PRNG key.
        transition: from ``geometric_transition``, ``anneal``, ``product`` or ``cfg``.
        num_particles: N.
        ts: strictly increasing grid in [0, 1]; start at 0 for an exact q_0.
        event_shape: shape of one particle.
        resampling: scheme name (``inferax.sampling.resampling``) or a callable.
        ess_threshold: resample when ESS < threshold N; 1.0 (default) resamples
            every step but the last, as the reference code.
        weighted: False runs the same SDE with no weights and no resampling (the
            "unweighted SDE" baseline, which does not sample the target).
        dtype: particle dtype (float64, float32 or bfloat16); default: the default
            float dtype. Log-weights are kept in at least float32.
        langevin_steps: resample-move: K MCMC steps on the current target after
            each resampling (0: none). Costs ``move_evals(K, adjusted, quadrature)``
            scores of ``nfe_per_eval`` NFE each per resampling step.
        langevin_step_size: unadjusted: eta, the fixed step relative to the
            population's scale; adjusted: the initial h, adapted from then on
            (see the module docstring).
        adjusted: True (default): MALA moves that leave each intermediate target
            invariant (log Z consistent); False: unadjusted Langevin, BIASED (its
            log Z error does not vanish as the grid is refined).
        quadrature: the line-integral rule of the adjusted moves' Metropolis ratio
            (``mala.QUADRATURES``: "simpson", default, or "trapezoid").
        target_acceptance: the acceptance rate the adjusted step size is adapted to.
        adaptation_rate: gain of that adaptation (log h += rate (acceptance - target)).

    Returns:
        ``(particles [N, *event], log_weights [N] (normalised), FKInfo)``. Estimate
            expectations with ``softmax(log_weights)``; the final interval is not resampled.

    Example:
        With ``target`` and ``key`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import feynman_kac, schedules
        >>> transition = feynman_kac.anneal(target.velocity, 2.0)  # samples p^2 / Z
        >>> x, log_weights, info = feynman_kac.sample(
        ...     key, transition, 16, schedules.uniform(4), event_shape=(2,))
        >>> x.shape, log_weights.shape, int(info.nfe), info.resampled.tolist()
        ((16, 2), (16,), 4, [True, True, True, False])
    """
    from inferax.sampling.feynman_kac import FKTransition  # the module re-exports this one

    if not isinstance(transition, FKTransition):
        raise TypeError(
            f"transition: expected an FKTransition (from geometric_transition, anneal, "
            f"product or cfg), got {type(transition).__name__}"
        )
    num_particles = _checks.positive_int(num_particles, "num_particles")
    if not isinstance(weighted, bool):
        raise TypeError(f"weighted: expected a bool, got {weighted!r}")
    evals_per_move = move_evals(langevin_steps, adjusted, quadrature)
    if isinstance(langevin_step_size, bool) or not (
        isinstance(langevin_step_size, int | float) and 0 < langevin_step_size < 1
    ):
        raise ValueError(
            f"langevin_step_size: expected a number in (0, 1), got {langevin_step_size!r}"
        )
    for name, value, upper in (("target_acceptance", target_acceptance, 1.0),
                               ("adaptation_rate", adaptation_rate, np.inf)):  # fmt: skip
        if isinstance(value, bool) or not (isinstance(value, int | float) and 0 < value < upper):
            raise ValueError(f"{name}: expected a number in (0, {upper}), got {value!r}")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    ts = flow.check_grid(ts)
    sde.check_g_on_grid(transition.g_fn, ts, "g")
    try:
        event_shape = tuple(int(d) for d in event_shape)
    except TypeError:
        raise TypeError(f"event_shape: expected a tuple of ints, got {event_shape!r}") from None
    k_init, k_run = jax.random.split(key)
    x0 = transition.init(k_init, num_particles, event_shape, ts[0], dtype)
    num_steps = ts.shape[0] - 1
    t_start = ts[0]
    ts = ts.astype(dtype)
    step_inputs = (ts[:-1], ts[1:])
    weight_dtype = jnp.promote_types(dtype, jnp.float32)
    move = None
    if evals_per_move and weighted and adjusted:
        kernel = mala_move(transition, langevin_steps, quadrature)

        def move(k, p, inp):
            x, lineage, ms = p
            eps = jnp.exp(ms.log_h) * ms.inv_fisher  # fixed before looking at x
            x, acc, inv_fisher = kernel(k, x, inp[1], eps)
            acc = acc.astype(weight_dtype)
            log_h = mala.adapt_log_step_size(ms.log_h, acc, target_acceptance, adaptation_rate)
            return x, lineage, MoveState(log_h, inv_fisher.astype(weight_dtype),
                                         ms.acceptance_sum + acc, ms.num_moves + 1)  # fmt: skip

    elif evals_per_move and weighted:
        inner = langevin_move(transition, langevin_steps, float(langevin_step_size))
        move = lambda k, p, inp: (inner(k, p[0], inp), *p[1:])  # noqa: E731

    def tracked(k, particles, inp):
        x, lineage, ms = particles
        x_next, inc = transition(k, x, inp)
        inc = inc.astype(weight_dtype)
        lineage = lineage + resampling_lib.sanitize(inc)
        return (x_next, lineage, ms), inc, resampling_lib.ess(lineage)

    # Built (and its arguments validated) for both paths; the unweighted one does not run it.
    algo = smc.build(tracked, resampling=resampling, ess_threshold=ess_threshold, move_fn=move,
                     particle_axes=(0, 0, None))  # fmt: skip
    if not weighted:  # the same moves, no weights, no resampling: one plain scan

        def body(x, xs):
            i, inp = xs
            return transition(jax.random.fold_in(k_run, i), x, inp)[0], None

        x1, _ = jax.lax.scan(body, x0, (jnp.arange(num_steps), step_inputs))
        n = jnp.asarray(num_particles, weight_dtype)
        info = FKInfo(
            num_steps=jnp.asarray(num_steps, jnp.int32),
            nfe=jnp.asarray(num_steps * transition.nfe_per_step, jnp.int32),
            ess=jnp.full((num_steps,), n),
            lineage_ess=jnp.full((num_steps,), n),
            resampled=jnp.zeros((num_steps,), bool),
            num_distinct_ancestors=jnp.asarray(num_particles, jnp.int32),
            num_nan=jnp.zeros((), jnp.int32),
            num_posinf=jnp.zeros((), jnp.int32),
            log_Z=jnp.zeros((), weight_dtype),
            all_invalid=jnp.asarray(False),
            acceptance_rate=jnp.asarray(jnp.nan, weight_dtype),
        )
        log_w = jnp.full((num_particles,), -np.log(num_particles), weight_dtype)
        return x1, log_w, info

    lineage0 = jnp.zeros((num_particles,), weight_dtype)
    # q_0 = N(0, b(t0)^2 / sum(beta) I): Fisher information sum(beta) / b(t0)^2 per coordinate.
    inv_fisher0 = transition.interpolant.b(jnp.asarray(t_start, weight_dtype)) ** 2 / (
        transition.beta_sum
    )
    ms0 = MoveState(
        log_h=jnp.log(jnp.asarray(langevin_step_size, weight_dtype)),
        inv_fisher=jnp.asarray(inv_fisher0, weight_dtype),
        acceptance_sum=jnp.zeros((), weight_dtype),
        num_moves=jnp.zeros((), jnp.int32),
    )
    state, infos = algo.run(
        k_run, algo.init((x0, lineage0, ms0), jnp.zeros((num_particles,), weight_dtype)),
        step_inputs, resample_last=False,
    )  # fmt: skip
    moves = jnp.sum(infos.resampled.astype(jnp.int32)) if move else 0
    ms = state.particles[2]
    info = FKInfo(
        num_steps=jnp.asarray(num_steps, jnp.int32),
        nfe=jnp.asarray(
            transition.nfe_per_step * num_steps + transition.nfe_per_eval * evals_per_move * moves,
            jnp.int32,
        ),
        ess=infos.ess,
        lineage_ess=infos.aux,
        resampled=infos.resampled,
        num_distinct_ancestors=smc.num_distinct_ancestors(infos.ancestors),
        num_nan=jnp.sum(infos.num_nan),
        num_posinf=jnp.sum(infos.num_posinf),
        log_Z=state.log_Z,
        all_invalid=jnp.any(infos.all_invalid),
        acceptance_rate=jnp.where(
            ms.num_moves > 0,
            ms.acceptance_sum / jnp.maximum(ms.num_moves, 1).astype(weight_dtype),
            jnp.nan,
        ),
    )
    return state.particles[0], state.log_weights, info
