"""Prediction by energy minimisation, and self-verification (Energy-Based Transformers).

Gladstone et al. (2025), "Energy-Based Transformers are Scalable Learners and
Thinkers": an energy ``E(x, y)`` scores a context ``x`` and a candidate
prediction ``y``; predicting is minimising ``E`` over ``y`` from a start
``y_0``, by gradient descent (their eq. 1)::

    y_{i+1} = y_i - alpha * grad_y E(x, y_i)

("thinking longer" = more steps), and self-verification draws ``G`` candidates
per context, optimises each and keeps the one with the lowest final energy.

``minimize`` runs any ``energy_fn(context, y) -> scalar`` (written for ONE
candidate; the library ``vmap``s it over the population) in one ``lax.scan``
with an optax update rule: plain gradient descent with step size ``alpha``
(``optax.sgd``) by default, or any ``optax.GradientTransformation`` (applied
per candidate, so non-elementwise transforms such as global-norm clipping do
not couple candidates). Noise, added *before* each step, the gradient then
taken at the noised point:

- ``"none"``: plain descent;
- ``"unscaled"``: ``y + noise_scale * eps`` (the EBT reference code's
  "Langevin dynamics"). Its noise does not scale with the step size, so it
  is NOT a sampler of ``exp(-E)``: for ``E = lam y^2 / 2`` the stationary
  variance is ``noise_scale^2 (1 - alpha lam)^2 / (1 - (1 - alpha lam)^2)``,
  which depends on ``alpha`` (and vanishes as ``noise_scale -> 0``);
- ``"langevin"``: ``y + sqrt(2 alpha T) eps`` with temperature
  ``T = noise_scale`` (default 1): the unadjusted Langevin algorithm, whose
  stationary law tends to ``exp(-E / T)`` as ``alpha -> 0`` (for the
  Gaussian above the variance is ``2 T (1 - alpha lam)^2 / (lam (2 - alpha lam))``,
  ``T / lam`` up to O(alpha)). Needs the default gradient-descent rule.

Randomness: the candidate with global index ``i`` draws its noise from
``fold_in(fold_in(key, i), step)``, so a population gives the same result
however it is split or sharded (DESIGN.md). Sharding: pass a population whose
leading axis is sharded over the ``"particles"`` mesh axis (e.g.
``distributed.shard_particles``) to a ``jit`` of ``minimize``; every
operation is per candidate, so the compiler keeps each device's candidates
local (``self_verify``'s argmin gathers only the ``[B, G]`` energies).

Budget: one forward + backward evaluation of ``energy_fn`` on one candidate
is one evaluation. A candidate that runs ``k`` steps spends ``k + 1``: ``k``
steps and the final energy (a forward only, counted as a whole evaluation).
``max_evaluations(num_steps)`` is the static bound.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.sampling import _checks, schedules

__all__ = ["NOISES", "EnergyInfo", "VerifyInfo", "max_evaluations", "minimize", "self_verify"]

NOISES = ("none", "unscaled", "langevin")
EnergyFn = Callable[[Any, jax.Array], jax.Array]


class EnergyInfo(NamedTuple):
    """What a minimisation did, per candidate.

    Attributes:
        energies: ``[num_steps + 1, N]``: the energy where step ``i``'s gradient
            was taken (the noised point when there is noise; a stopped
            candidate repeats its last value), then the final energy.
        grad_norms: ``[num_steps, N]`` Euclidean norm of ``grad_y E`` at step ``i``.
        evaluations: ``[N]`` int32 evaluations spent (forward + backward = 1;
            ``stopped_at + 1``).
        stopped_at: ``[N]`` int32 number of steps taken (``num_steps`` or
            ``num_active_steps`` when it never stopped early).
        trajectory: ``[num_steps + 1, N, *event]`` iterates (``y_0`` first, the
            final candidates last) when asked for, else None.
        non_finite: ``[N]`` bool: the candidate met a NaN or infinite value (in
            its start, an energy, a gradient or its final iterate). Its result
            is garbage; ``self_verify`` never chooses it while a finite
            candidate exists.
    """

    energies: jax.Array
    grad_norms: jax.Array
    evaluations: jax.Array
    stopped_at: jax.Array
    trajectory: jax.Array | None = None
    non_finite: jax.Array | None = None


class VerifyInfo(NamedTuple):
    """``self_verify``'s record.

    Attributes:
        chosen: ``[B]`` int32 index of the kept candidate per context.
        final_energies: ``[B, G]`` final energy of every candidate.
        minimize: the ``EnergyInfo`` of all ``B * G`` candidates, reshaped so
            that its per-candidate axes are ``[B, G]``.
        evaluations: ``[B]`` evaluations spent per context (all its candidates).
    """

    chosen: jax.Array
    final_energies: jax.Array
    minimize: EnergyInfo
    evaluations: jax.Array


def max_evaluations(num_steps: int) -> int:
    """The evaluations one candidate spends at most (known before tracing): ``num_steps + 1``."""
    return _checks.non_negative_int(num_steps, "num_steps") + 1


def _leading(tree: Any, name: str) -> int | None:
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree_util.tree_leaves(tree)}
    if None in sizes or len(sizes) > 1:
        raise ValueError(f"{name}: expected leaves sharing a leading candidate axis, got {sizes}")
    return sizes.pop() if sizes else None


def _check_energy(energy_fn, context, y) -> None:
    if not callable(energy_fn):
        raise TypeError(f"energy_fn: expected a callable (context, y) -> scalar, got {energy_fn!r}")
    row = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), context)
    out = jax.eval_shape(energy_fn, row, jax.ShapeDtypeStruct(y.shape[1:], y.dtype))
    if not hasattr(out, "shape") or out.shape != ():
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"energy_fn: expected a scalar energy per candidate (context row, y {y.shape[1:]}), "
            f"got shape {got}"
        )


def _check_step_size(step_size):
    if step_size is None:
        return None
    if isinstance(step_size, bool):
        raise TypeError(f"step_size: expected a positive number or array, got {step_size!r}")
    if not isinstance(step_size, numbers.Real | jax.Array) and not hasattr(step_size, "dtype"):
        raise TypeError(f"step_size: expected a positive number or array, got {step_size!r}")
    value = _checks.concrete_value(step_size)
    if value is not None and not (value > 0).all():
        raise ValueError(f"step_size: expected a positive step size alpha, got {value}")
    return step_size


def _check_noise_scale(noise_scale, noise: str):
    what = "the Langevin temperature" if noise == "langevin" else "the noise's std"
    if isinstance(noise_scale, bool) or not (
        isinstance(noise_scale, numbers.Real) or hasattr(noise_scale, "dtype")
    ):
        raise TypeError(f"noise_scale: expected a number >= 0 ({what}), got {noise_scale!r}")
    value = _checks.concrete_value(noise_scale)
    if value is not None and not (np.isfinite(value) & (value >= 0)).all():
        raise ValueError(
            f"noise_scale: expected a finite number >= 0 ({what}), got {value.tolist()}"
        )
    return noise_scale


def minimize(
    key: jax.Array | None,
    energy_fn: EnergyFn,
    context: Any,
    y0: jax.Array | Callable[[jax.Array, Any], jax.Array],
    *,
    num_steps: int,
    step_size: float | jax.Array | None = None,
    optimizer: optax.GradientTransformation | None = None,
    noise: str = "none",
    noise_scale: float | jax.Array = 1.0,
    tol: float | None = None,
    num_active_steps: int | jax.Array | None = None,
    num_candidates: int | None = None,
    truncate: bool = False,
    second_order: bool = True,
    trajectory: bool = False,
) -> tuple[jax.Array, EnergyInfo]:
    """Minimises ``energy_fn(context_i, y)`` over ``y`` for every candidate ``i``, in one scan.

    Args:
        key: PRNG key (needed for noise and for a callable ``y0``; else may be None).
        energy_fn: ``energy_fn(context_row, y) -> scalar`` for ONE candidate.
        context: pytree whose leaves have the candidate axis ``N`` first (row
            ``i`` pairs with candidate ``i``); ``None`` for no context.
        y0: ``[N, *event]`` starts, or ``init(key_i, context_row) -> y`` called
            with ``fold_in(key, i)`` per candidate.
        num_steps: optimisation steps (static; the scan length).
        step_size: gradient-descent step size ``alpha`` (a scalar, or ``[N]``
            per candidate; may be traced, e.g. a learnable alpha). Give this
            or ``optimizer``.
        optimizer: an optax transformation applied per candidate instead.
        noise: ``"none"``, ``"unscaled"`` or ``"langevin"`` (module docstring).
        noise_scale: the unscaled noise's std, or the Langevin temperature.
        tol: early stopping: a candidate whose energy fell by less than
            ``tol`` since the previous step stops there (the loop keeps its
            fixed shape; a stopped candidate is frozen). None: never.
        num_active_steps: run only the first ``k <= num_steps`` steps (may be
            traced: one compiled program serves every step count).
        num_candidates: ``N`` when ``y0`` is callable and ``context`` is None.
        truncate: stop the gradient through ``y`` at the start of every step
            (the EBT training default: one-step-deep backpropagation).
        second_order: when False, stop the gradient through ``grad_y E`` (drops
            the Hessian terms of a training gradient: a control).
        trajectory: also return every iterate in ``EnergyInfo.trajectory``.

    Returns:
        ``(y [N, *event], EnergyInfo)``; ``y`` is each candidate's last iterate.

    Raises:
        ValueError / TypeError: naming the argument, for a non-scalar energy,
            a non-positive step size, an unknown noise, both or neither of
            ``step_size`` / ``optimizer``, Langevin noise with an optimizer,
            mismatched candidate axes, a non-floating ``y0``, a negative or
            non-finite ``noise_scale``, a ``num_active_steps`` outside
            ``[0, num_steps]`` (known before tracing; a traced one is clipped).

    Example:
        Gradient descent on ``|y - c|^2`` for two candidates (contexts ``c``):

        >>> import jax.numpy as jnp
        >>> from inferax.sampling import energy
        >>> energy_fn = lambda c, y: jnp.sum((y - c) ** 2)
        >>> c = jnp.array([[1.0], [-2.0]])
        >>> y, info = energy.minimize(
        ...     None, energy_fn, c, jnp.zeros((2, 1)), num_steps=50, step_size=0.1)
        >>> y.shape, bool(jnp.allclose(y, c, atol=1e-3))
        ((2, 1), True)
    """
    num_steps = _checks.non_negative_int(num_steps, "num_steps")
    if noise not in NOISES:
        raise ValueError(f"noise: expected one of {NOISES}, got {noise!r}")
    step_size = _check_step_size(step_size)
    if (step_size is None) == (optimizer is None):
        raise ValueError(
            "step_size: expected exactly one of step_size (gradient descent) or optimizer, "
            f"got step_size={step_size!r}, optimizer={optimizer!r}"
        )
    if noise == "langevin" and optimizer is not None:
        raise ValueError("noise: 'langevin' needs the gradient-descent rule (step_size), "
                         "got an optimizer")  # fmt: skip
    noise_scale = _check_noise_scale(noise_scale, noise)
    if num_active_steps is not None:
        num_active_steps = schedules.check_num_active_steps(
            num_active_steps, num_steps, of=f"num_steps = {num_steps}"
        )
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol: expected a number >= 0 or None, got {tol!r}")
    n_ctx = _leading(context, "context")
    if callable(y0):
        n = n_ctx if n_ctx is not None else num_candidates
        if n is None:
            raise ValueError("num_candidates: expected N when y0 is callable and context is None")
        if key is None:
            raise ValueError("key: expected a PRNG key to draw the starts y0, got None")
        ids = jnp.arange(n)
        y0 = jax.vmap(lambda i, c: y0(jax.random.fold_in(key, i), c))(ids, context)
    y0 = _checks.floating_array(y0, "y0")
    if y0.ndim < 1 or (n_ctx is not None and y0.shape[0] != n_ctx):
        raise ValueError(
            f"y0: expected [N, *event] with N = {n_ctx} rows like context, got {y0.shape}"
        )
    if noise != "none" and key is None:
        raise ValueError(f"key: expected a PRNG key for noise={noise!r}, got None")
    _check_energy(energy_fn, context, y0)
    n, dtype = y0.shape[0], y0.dtype
    active_steps = num_steps if num_active_steps is None else num_active_steps
    if optimizer is None:
        alpha = jnp.broadcast_to(jnp.asarray(step_size, dtype), (n,))
        make = optax.sgd
    else:
        alpha = jnp.zeros((n,), dtype)
        make = lambda _: optimizer  # noqa: E731
    opt_state = jax.vmap(lambda a, y: make(a).init(y))(alpha, y0)
    keys = (jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
            if key is not None else None)  # fmt: skip
    if noise == "langevin":
        scale = jnp.sqrt(2.0 * alpha * jnp.asarray(noise_scale, dtype))
    else:
        scale = jnp.broadcast_to(jnp.asarray(noise_scale, dtype), (n,))

    def one(c, y):
        e, g = jax.value_and_grad(energy_fn, argnums=1)(c, y)
        return e, (g if second_order else jax.lax.stop_gradient(g))

    grad_fn = jax.vmap(one)
    upd = jax.vmap(lambda a, g, s, y: make(a).update(g, s, y))
    bcast = (slice(None),) + (None,) * (y0.ndim - 1)

    def body(carry, i):
        y, state, prev_e, running = carry
        if truncate:
            y = jax.lax.stop_gradient(y)
        running = running & (i < active_steps)
        if noise != "none":
            eps = jax.vmap(
                lambda k: jax.random.normal(jax.random.fold_in(k, i), y.shape[1:], dtype)
            )(keys)
            y = jnp.where(running[bcast], y + scale[bcast] * eps, y)
        e, g = grad_fn(context, y)
        if tol is not None:
            running = running & ((i == 0) | (prev_e - e >= tol))
        updates, new_state = upd(alpha, g, state, y)
        y_new = jnp.where(running[bcast], optax.apply_updates(y, updates), y)
        state = jax.tree_util.tree_map(
            lambda a, b: jnp.where(running.reshape((n,) + (1,) * (a.ndim - 1)), a, b),
            new_state, state,
        )  # fmt: skip
        gn = jnp.sqrt(jnp.sum(jnp.square(g.reshape(n, -1)), axis=-1))
        steps_taken = running.astype(jnp.int32)
        bad = running & ~(jnp.isfinite(e) & jnp.isfinite(gn))
        return (y_new, state, e, running), (e, gn, steps_taken, y if trajectory else None, bad)

    init = (y0, opt_state, jnp.full((n,), jnp.inf, dtype), jnp.ones((n,), bool))
    (y, _, _, _), (es, gns, taken, ys, bads) = jax.lax.scan(body, init, jnp.arange(num_steps))
    e_final = jax.vmap(energy_fn)(context, y)
    stopped = jnp.sum(taken, axis=0).astype(jnp.int32)

    def rows_finite(a):
        return jnp.all(jnp.isfinite(a.reshape(n, -1)), axis=-1)

    non_finite = jnp.any(bads, axis=0) | ~rows_finite(y0) | ~rows_finite(y)
    info = EnergyInfo(
        energies=jnp.concatenate([es, e_final[None]], axis=0),
        grad_norms=gns,
        evaluations=stopped + 1,
        stopped_at=stopped,
        trajectory=jnp.concatenate([ys, y[None]], axis=0) if trajectory else None,
        non_finite=non_finite | ~jnp.isfinite(e_final),
    )
    return y, info


def self_verify(
    key: jax.Array,
    energy_fn: EnergyFn,
    context: Any,
    y0: jax.Array | Callable[[jax.Array, Any], jax.Array],
    *,
    num_candidates: int,
    **kwargs: Any,
) -> tuple[jax.Array, jax.Array, VerifyInfo]:
    """Self-verification: ``G`` candidates per context, keep the lowest final energy.

    Candidate ``g`` of context ``b`` has global index ``b * G + g`` (its
    randomness is ``fold_in(key, b * G + g)``, as in ``minimize``).

    Args:
        key: PRNG key.
        energy_fn: as in ``minimize``.
        context: pytree with leaves ``[B, ...]`` (None: then ``y0`` must be an
            array and ``B`` is its first axis).
        y0: ``[B, G, *event]`` starts, or ``init(key_i, context_row) -> y``.
        num_candidates: ``G >= 1``.
        **kwargs: the keyword options of ``minimize``.

    Returns:
        ``(chosen [B, *event], all candidates [B, G, *event], VerifyInfo)``.
    """
    g = _checks.positive_int(num_candidates, "num_candidates")
    b = _leading(context, "context")
    if not callable(y0):
        y0 = _checks.floating_array(y0, "y0")
        if y0.ndim < 2 or y0.shape[1] != g or (b is not None and y0.shape[0] != b):
            raise ValueError(
                f"y0: expected [B, G = {g}, *event] with B = {b} like context, got {y0.shape}"
            )
        b = y0.shape[0]
        y0 = y0.reshape((b * g,) + y0.shape[2:])
    elif b is None:
        raise ValueError("context: expected [B, ...] leaves when y0 is callable, got None")
    ctx = jax.tree_util.tree_map(lambda a: jnp.repeat(a, g, axis=0), context)
    y, info = minimize(key, energy_fn, ctx, y0, **kwargs)

    info = EnergyInfo(
        energies=info.energies.reshape(info.energies.shape[0], b, g),
        grad_norms=info.grad_norms.reshape(info.grad_norms.shape[0], b, g),
        evaluations=info.evaluations.reshape(b, g),
        stopped_at=info.stopped_at.reshape(b, g),
        trajectory=None if info.trajectory is None
        else info.trajectory.reshape((info.trajectory.shape[0], b, g) + y.shape[1:]),
        non_finite=info.non_finite.reshape(b, g),
    )  # fmt: skip
    ys = y.reshape((b, g) + y.shape[1:])
    final = info.energies[-1]
    # Non-finite candidates never win (argmin would pick a NaN, or a -inf energy of a
    # diverged candidate): they count as +inf.
    idx = jnp.argmin(jnp.where(info.non_finite, jnp.inf, final), axis=1).astype(jnp.int32)
    chosen = jnp.take_along_axis(ys, idx.reshape((b, 1) + (1,) * (ys.ndim - 2)), axis=1)[:, 0]
    verify = VerifyInfo(idx, final, info, jnp.sum(info.evaluations, axis=1))
    return chosen, ys, verify
