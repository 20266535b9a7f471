"""Per-model time grids: tune a sampler's grid against a reference solve.

F5-TTS fixes the sway coefficient (s = -1) for every model; Align Your Steps
(Sabour et al. 2024) instead optimises the diffusion time steps of each model.
``tune`` does the latter for a flow ODE at a given NFE: it measures the
discretisation error of a grid on a batch of source samples as the mean
squared distance of the solver's endpoints to a reference solve (many small
steps of a higher-order solver; its NFE counted), and minimises it over

(a) the sway coefficient (F5-TTS eq. 7): a grid search in [SWAY_MIN, SWAY_MAX]
    that always contains s = 0 (the uniform grid), then
(b) a general monotone grid: increments ``d = h / n + (1 - h) softmax(z)``
    (``h`` = ``min_step_fraction``), ``t_i = t_start + (t_end - t_start)
    cumsum(d)_i``, so every logit vector ``z`` gives a strictly increasing grid
    from ``t_start`` to ``t_end`` with no interval below ``h / n`` of the span.
    ``z`` starts at the best sway grid and is optimised with optax Adam through
    the solver (``method="adam"``) or by a (1+1) evolution strategy
    (``method="es"``, derivative-free). The best grid seen is kept, so on the
    tuning batch the tuned error is never above the best sway error, which is
    never above the uniform one.

Cost is counted in NFE per sample of the tuning batch (one network evaluation
of one sample = 1, times ``nfe_per_call`` for a guided velocity): the
reference solve, one solve per sway coefficient and for the uniform grid, and
per optimisation iteration one solve (``"es"``) or one solve plus its
reverse-mode pass, counted as 2 solves (``"adam"``). The plan is known before
anything runs; ``max_nfe`` caps it (iterations are dropped to fit, and a budget
below the fixed part raises). Conditions (labels, masks, observed pixels)
enter through the ``velocity_fn`` closure, aligned with ``x0``'s rows.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.sampling import _checks, flow, schedules
from inferax.sampling import cost as cost_lib

__all__ = ["METHODS", "TuneResult", "endpoint_error", "grid_from_logits", "logits_from_grid",
           "tune"]  # fmt: skip

METHODS = ("adam", "es")


class TuneResult(NamedTuple):
    """What ``tune`` found, its errors side by side, and what it spent.

    Attributes:
        ts: the tuned grid ``[num_steps + 1]`` (default float dtype), a plain
            array ``flow.sample`` / ``sde.sample`` accept.
        num_steps: intervals of every compared grid.
        nfe: NFE per sample of one solve on these grids.
        sway_coef: the best sway coefficient on the tuning batch.
        sway_ts: the best sway grid.
        error_uniform / error_sway / error_tuned: mean squared endpoint
            distance to the reference (or ``metric``) on the tuning batch.
        coefs / sway_errors: every sway coefficient tried and its error.
        history: ``[num_iters]`` error of the grid evaluated at each iteration.
        num_iters: optimisation iterations run (fewer than asked if
            ``max_nfe`` cut them).
        reference_nfe: NFE per sample of the reference solve.
        tuning_nfe: NFE per sample the whole tuning spent (reference included).
        tuning_nfe_total: ``tuning_nfe`` times the batch size.
    """

    ts: jax.Array
    num_steps: int
    nfe: int
    sway_coef: float
    sway_ts: jax.Array
    error_uniform: float
    error_sway: float
    error_tuned: float
    coefs: np.ndarray
    sway_errors: np.ndarray
    history: np.ndarray
    num_iters: int
    reference_nfe: int
    tuning_nfe: int
    tuning_nfe_total: int


def grid_from_logits(logits: jax.Array, t_start=0.0, t_end=1.0, min_step_fraction=1e-3):
    """The strictly increasing grid ``t_start < ... < t_end`` of free logits ``[n]``.

    Increments ``h / n + (1 - h) softmax(logits)`` of the span (h =
    ``min_step_fraction``) cumulated from ``t_start``; the last point is set to
    ``t_end`` exactly. Differentiable in ``logits``.
    """
    n = logits.shape[0]
    inc = min_step_fraction / n + (1.0 - min_step_fraction) * jax.nn.softmax(logits)
    u = jnp.concatenate([jnp.zeros((1,), inc.dtype), jnp.cumsum(inc)])
    ts = t_start + (t_end - t_start) * u
    return ts.at[0].set(t_start).at[-1].set(t_end)


def logits_from_grid(ts, min_step_fraction=1e-3) -> jax.Array:
    """Logits whose ``grid_from_logits`` is ``ts`` (increments below the floor are clamped)."""
    ts = np.asarray(ts, np.float64)
    n = ts.shape[0] - 1
    inc = np.diff(ts) / (ts[-1] - ts[0])
    soft = np.maximum(inc - min_step_fraction / n, 1e-12) / (1.0 - min_step_fraction)
    return jnp.asarray(np.log(soft / soft.sum()), jnp.result_type(float))


def _mse(x, ref):
    return jnp.mean(jnp.sum(jnp.square(x - ref).reshape(x.shape[0], -1), axis=-1))


def endpoint_error(velocity_fn, x0, ts, reference, *, solver="euler", metric=None) -> jax.Array:
    """Mean over samples of ``||x1 - reference||^2`` for the solve of ``x0`` on ``ts``
    (or ``metric(x1, reference)``)."""
    x1, _ = flow.sample(velocity_fn, x0, ts, solver=solver)
    return (metric or _mse)(x1, reference)


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    return float(value)


def _plan(steps_nfe, ref_nfe, num_grids, num_iters, per_iter, max_nfe):
    fixed = ref_nfe + num_grids * steps_nfe  # reference, sway grid search (uniform included)
    if max_nfe is None:
        return num_iters, fixed + num_iters * per_iter
    max_nfe = _checks.positive_int(max_nfe, "max_nfe")
    if max_nfe < fixed:
        raise ValueError(
            f"max_nfe: expected at least {fixed} NFE per sample (reference solve {ref_nfe} + "
            f"{num_grids} sway grids x {steps_nfe}), got {max_nfe}"
        )
    iters = min(num_iters, (max_nfe - fixed) // per_iter)
    return iters, fixed + iters * per_iter


def tune(
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    nfe: int,
    *,
    solver: str | flow.Solver = "euler",
    t_start: float = 0.0,
    t_end: float = 1.0,
    method: str = "adam",
    num_iters: int = 60,
    learning_rate: float = 0.1,
    num_coefs: int = 12,
    reference_steps: int = 256,
    reference_solver: str | flow.Solver = "midpoint",
    reference: jax.Array | None = None,
    metric: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    max_nfe: int | None = None,
    min_step_fraction: float = 1e-3,
    key: jax.Array | None = None,
    nfe_per_call: int | None = None,
) -> TuneResult:
    """Finds the grid of ``nfe`` NFE that minimises the endpoint error of ``solver``.

    Args:
        velocity_fn: batched ``(x [N, *event], t) -> [N, *event]``; conditions
            enter through the closure, aligned with the rows of ``x0``.
        x0: ``[N, *event]`` states at ``t_start`` (the tuning batch).
        nfe: NFE per sample of the tuned sampler; steps = nfe // (evals per
            step x ``nfe_per_call``).
        solver: the sampler's solver (a name in ``flow.SOLVERS`` or a Solver).
        t_start: where every grid starts (0 <= t_start < t_end).
        t_end: where every grid ends (t_end <= 1).
        method: ``"adam"`` (optax Adam through the solver) or ``"es"``
            (derivative-free (1+1) evolution strategy; needs ``key``).
        num_iters: optimisation iterations (0: the best sway grid is returned).
        learning_rate: Adam's step size, or the initial ES mutation scale, in logits.
        num_coefs: sway coefficients tried, evenly in [SWAY_MIN, SWAY_MAX] plus 0.
        reference_steps: steps of the reference solve.
        reference_solver: solver of the reference solve.
        reference: the exact endpoints ``[N, *event]``, if known (then no
            reference solve runs and ``reference_nfe`` is 0).
        metric: ``metric(x1, reference) -> scalar`` instead of the mean squared
            distance (e.g. a distribution distance); must be differentiable for
            ``"adam"``.
        max_nfe: NFE per sample the whole tuning may spend.
        min_step_fraction: h: no interval is shorter than h / n of the span.
        key: PRNG key of ``"es"``.
        nfe_per_call: cost of one call of ``velocity_fn`` (default from
            ``cost.nfe_per_call``: 2 for ``guidance.cfg``).

    Returns:
        A ``TuneResult``.

    Raises:
        ValueError / TypeError: naming the bad argument; ValueError also when
            the reference or the uniform grid's error is not finite.
    """
    solver = flow.resolve_solver(solver)
    ref_solver = flow.resolve_solver(reference_solver, "reference_solver")
    x0 = flow.check_state(x0)
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    per_call = cost_lib.nfe_per_call(velocity_fn, nfe_per_call)
    nfe = _checks.positive_int(nfe, "nfe")
    steps = nfe // (solver.evals_per_step * per_call)
    if steps < 1:
        raise ValueError(
            f"nfe: expected at least {solver.evals_per_step * per_call} (one {solver.name} step "
            f"at {per_call} NFE per call), got {nfe}"
        )
    t_start, t_end = _real(t_start, "t_start"), _real(t_end, "t_end")
    if not 0.0 <= t_start < t_end <= 1.0:
        raise ValueError(f"t_start, t_end: expected 0 <= t_start < t_end <= 1, got "
                         f"{t_start}, {t_end}")  # fmt: skip
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "es" and key is None:
        raise ValueError("key: required for method='es' (a jax.random.key), got None")
    num_iters = _checks.non_negative_int(num_iters, "num_iters")
    num_coefs = _checks.positive_int(num_coefs, "num_coefs")
    if not _real(learning_rate, "learning_rate") > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate}")
    h = _real(min_step_fraction, "min_step_fraction")
    if not 0.0 < h < 1.0:
        raise ValueError(f"min_step_fraction: expected a number in (0, 1), got {h}")
    if metric is not None and not callable(metric):
        raise TypeError(f"metric: expected a callable (x1, reference) -> scalar, got {metric!r}")
    metric = metric or _mse

    def v(x, t):  # the cost is accounted here, once
        return velocity_fn(x, t)

    dtype = x0.dtype
    solve_nfe = steps * solver.evals_per_step * per_call
    ref_nfe = 0
    if reference is None:
        ref_steps = _checks.positive_int(reference_steps, "reference_steps")
        ref_nfe = ref_steps * ref_solver.evals_per_step * per_call
    per_iter = solve_nfe * (2 if method == "adam" else 1)
    # Sway coefficients evenly in the monotone range, plus 0 (the uniform grid).
    coefs = np.unique(
        np.append(np.linspace(schedules.SWAY_MIN, schedules.SWAY_MAX, num_coefs), 0.0)
    )
    iters, planned = _plan(solve_nfe, ref_nfe, len(coefs), num_iters, per_iter, max_nfe)

    if reference is not None:
        reference = flow.check_state(jnp.asarray(reference, dtype), "reference")
        if reference.shape != x0.shape:
            raise ValueError(f"reference: expected shape {x0.shape} (that of x0), got "
                             f"{reference.shape}")  # fmt: skip

    # (a) Sway coefficients (0 = uniform among them): every grid in one vmapped solve,
    # compiled together with the reference solve.
    span = t_end - t_start
    unit = [np.asarray(schedules.sway(steps, float(c)), np.float64) for c in coefs]
    grids = jnp.asarray(np.stack([t_start + span * u for u in unit]), jnp.result_type(float))
    grids = grids.at[:, 0].set(t_start).at[:, -1].set(t_end)

    def loss(ts, ref):
        x1, _ = flow.sample(v, x0, ts.astype(dtype), solver=solver)
        return metric(x1, ref)

    @jax.jit
    def reference_and_errors(ref):
        if ref is None:
            ref_ts = jnp.linspace(t_start, t_end, ref_steps + 1, dtype=dtype)
            ref, _ = flow.sample(v, x0, ref_ts, solver=ref_solver)
        return ref, jax.vmap(loss, in_axes=(0, None))(grids, ref)

    reference, errors = reference_and_errors(reference)
    if not bool(jnp.all(jnp.isfinite(reference))):
        raise ValueError("reference: the reference endpoints are not finite (NaN or inf)")
    errors = np.asarray(errors, np.float64)
    i0 = int(np.flatnonzero(coefs == 0.0)[0])
    if not np.isfinite(errors[i0]):
        raise ValueError(f"velocity_fn: the uniform grid's error is not finite ({errors[i0]})")
    best_i = int(np.nanargmin(np.where(np.isfinite(errors), errors, np.inf)))
    sway_ts, sway_err = grids[best_i], float(errors[best_i])

    # (b) Free monotone grid, initialised at the best sway grid; keep the best seen.
    z0 = logits_from_grid(sway_ts, h).astype(dtype)

    def grid_loss(z):
        return loss(grid_from_logits(z, t_start, t_end, h), reference)

    history = np.zeros((0,), np.float64)
    best_z, best_err = None, sway_err
    if iters > 0:
        best_z, best_err, history = _optimise(grid_loss, z0, sway_err, iters, method,
                                              learning_rate, key)  # fmt: skip
    if best_z is None or not best_err < sway_err:
        tuned_ts, best_err = sway_ts, sway_err
    else:
        tuned_ts = grid_from_logits(best_z, t_start, t_end, h).astype(jnp.result_type(float))
    tuned_ts = schedules.check_grid(np.asarray(tuned_ts), "ts")  # strictly increasing, concrete
    return TuneResult(
        ts=tuned_ts, num_steps=steps, nfe=solve_nfe, sway_coef=float(coefs[best_i]),
        sway_ts=sway_ts, error_uniform=float(errors[i0]), error_sway=sway_err,
        error_tuned=float(best_err), coefs=coefs, sway_errors=errors, history=history,
        num_iters=iters, reference_nfe=ref_nfe, tuning_nfe=planned,
        tuning_nfe_total=planned * x0.shape[0],
    )  # fmt: skip


def _optimise(grid_loss, z0, init_err, iters, method, lr, key):
    """Runs ``iters`` iterations in one jitted ``lax.scan``; returns (best z, its error, history).

    A non-finite error is never taken as the best; a non-finite Adam gradient
    skips that update (the iterate stays, and the history shows the NaN).
    """
    best0 = (z0, jnp.asarray(init_err, z0.dtype))
    if method == "adam":
        opt = optax.adam(lr)

        def body(carry, _):
            z, state, best_z, best_e = carry
            err, g = jax.value_and_grad(grid_loss)(z)
            ok = jnp.isfinite(err) & jnp.all(jnp.isfinite(g))
            better = jnp.isfinite(err) & (err < best_e)
            best_z, best_e = jnp.where(better, z, best_z), jnp.where(better, err, best_e)
            upd, new_state = opt.update(jnp.where(ok, g, 0.0), state, z)
            z = jnp.where(ok, optax.apply_updates(z, upd), z)
            state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_state, state)
            return (z, state, best_z, best_e), err

        init = (z0, opt.init(z0), *best0)
    else:

        def body(carry, i):
            z, err_z, scale, best_z, best_e = carry
            cand = z + scale * jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)
            err = grid_loss(cand)
            better = jnp.isfinite(err) & (err < err_z)
            z, err_z = jnp.where(better, cand, z), jnp.where(better, err, err_z)
            scale = scale * jnp.where(better, 1.5, 1.5 ** (-0.25))  # the 1/5 success rule
            best_z, best_e = jnp.where(better, cand, best_z), jnp.minimum(best_e, err_z)
            return (z, err_z, scale, best_z, best_e), err

        init = (z0, best0[1], jnp.asarray(lr, z0.dtype), *best0)
    run = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(iters)))
    carry, hist = run(init)
    return carry[-2], float(carry[-1]), np.asarray(hist, np.float64)
