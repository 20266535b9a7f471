"""Interpolants x_t = a(t) x1 + b(t) x0 and the quantities a velocity implies.

Time runs from noise (t = 0, x0 ~ N(0, I)) to data (t = 1, x1 ~ data). An
interpolant is given by its two coefficients and their time derivatives, with
a(0) = 0, b(0) = 1, a(1) = 1, b(1) = 0. A flow model trained on it predicts the
marginal velocity u_t(x) = E[a' x1 + b' x0 | x_t = x], from which the posterior
mean and the score follow in closed form (Kim, Yoon, Hwang, Sung 2025,
"Inference-time scaling for flow models via stochastic generation and rollover
budget forcing"; REFERENCES section 2):

    E[x1 | x_t]    = (b u - b' x) / (a' b - a b')
    grad log p_t   = (a u - a' x) / (b (a' b - a b'))

A model trained on the linear interpolant can be run on another interpolant
(e.g. variance preserving) with one network evaluation per velocity, because
both paths are rescalings of each other in time and space (same reference):
``convert_velocity``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from inferax.sampling import _checks, cost

ScalarFn = Callable[[jax.Array], jax.Array]
VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


class Interpolant(NamedTuple):
    """x_t = a(t) x1 + b(t) x0, with the time derivatives of a and b.

    Attributes:
        a: data coefficient a(t).
        b: noise coefficient b(t).
        da: a'(t).
        db: b'(t).
        name: a label for messages and reprs.
    """

    a: ScalarFn
    b: ScalarFn
    da: ScalarFn
    db: ScalarFn
    name: str = "custom"


def linear() -> Interpolant:
    """The rectified-flow / OT-CFM interpolant: a = t, b = 1 - t."""
    return Interpolant(
        a=lambda t: jnp.asarray(t),
        b=lambda t: 1.0 - jnp.asarray(t),
        da=lambda t: jnp.ones_like(jnp.asarray(t)),
        db=lambda t: -jnp.ones_like(jnp.asarray(t)),
        name="linear",
    )


def vp(beta_min: float = 0.1, beta_max: float = 20.0) -> Interpolant:
    """The variance-preserving interpolant of Kim et al. 2025.

    With r = 1 - t (the diffusion time), T(r) = r^2 (beta_max - beta_min) / 2 +
    r beta_min, a = exp(-T / 2) and b = sqrt(1 - exp(-T)), so a^2 + b^2 = 1.

    Note:
        a(0) = exp(-(beta_max + beta_min) / 4) is tiny (about 6.6e-3 for the
        defaults), not exactly 0: the path starts at x_0 = a(0) x1 + b(0) x0,
        which N(0, I) approximates. b'(t) diverges like 1 / sqrt(1 - t) as
        t -> 1, so evaluate VP velocities and scores at t < 1 only (the left
        end point of each grid interval).

    Raises:
        ValueError: unless 0 <= beta_min <= beta_max and beta_max > 0.
    """
    beta_min, beta_max = float(beta_min), float(beta_max)
    if not (0.0 <= beta_min <= beta_max and beta_max > 0.0):
        raise ValueError(
            "beta_min, beta_max: expected 0 <= beta_min <= beta_max with beta_max > 0, "
            f"got beta_min={beta_min}, beta_max={beta_max}"
        )
    width = beta_max - beta_min

    def big_t(t):
        r = 1.0 - jnp.asarray(t)
        return 0.5 * width * r**2 + beta_min * r

    def dbig_t(t):  # dT/dt = -dT/dr
        r = 1.0 - jnp.asarray(t)
        return -(width * r + beta_min)

    def a(t):
        return jnp.exp(-0.5 * big_t(t))

    def b(t):
        return jnp.sqrt(-jnp.expm1(-big_t(t)))

    def da(t):
        return -0.5 * dbig_t(t) * a(t)

    def db(t):
        return 0.5 * jnp.exp(-big_t(t)) * dbig_t(t) / b(t)

    return Interpolant(a=a, b=b, da=da, db=db, name=f"vp({beta_min}, {beta_max})")


def check_interpolant(interp, name: str = "interpolant") -> Interpolant:
    """``interp`` if it is an ``Interpolant``, else TypeError naming ``name``."""
    if not isinstance(interp, Interpolant):
        raise TypeError(
            f"{name}: expected an inferax.sampling.interpolants.Interpolant "
            f"(e.g. interpolants.linear()), got {type(interp).__name__}"
        )
    return interp


def _coefs(interp: Interpolant, x: jax.Array, t):
    t = jnp.asarray(t, x.dtype)
    return interp.a(t), interp.b(t), interp.da(t), interp.db(t)


def score_from_velocity(
    interp: Interpolant, u: jax.Array, x: jax.Array, t: float | jax.Array
) -> jax.Array:
    """Score grad log p_t(x) = (a u - a' x) / (b (a' b - a b')) (Kim et al. 2025).

    Linear interpolant: (t u - x) / (1 - t). Singular at t = 1 (b = 0).

    Args:
        interp: the interpolant the velocity belongs to.
        u: the velocity u_t(x), same shape as ``x``.
        x: the state at time ``t``.
        t: scalar time in [0, 1).

    Returns:
        The score, same shape as ``x``.
    """
    a, b, da, db = _coefs(interp, x, t)
    return (a * u - da * x) / (b * (da * b - a * db))


def posterior_mean_from_velocity(interp: Interpolant, u: jax.Array, x: jax.Array, t) -> jax.Array:
    """E[x1 | x_t = x] = (b u - b' x) / (a' b - a b') (Tweedie / one-step lookahead).

    Linear interpolant: x + (1 - t) u.
    """
    a, b, da, db = _coefs(interp, x, t)
    return (b * u - db * x) / (da * b - a * db)


def velocity_from_score(interp: Interpolant, s: jax.Array, x: jax.Array, t) -> jax.Array:
    """Inverse of ``score_from_velocity``: u = a' (x + b^2 s) / a - b' b s.

    Uses E[x0 | x_t] = -b s and E[x1 | x_t] = (x - b E[x0 | x_t]) / a. Singular at
    a = 0 (t = 0 for the linear interpolant): start score-based samplers at t > 0.
    """
    a, b, da, db = _coefs(interp, x, t)
    return da * (x + b**2 * s) / a - db * b * s


def time_to_linear(target: Interpolant, s) -> tuple[jax.Array, jax.Array]:
    """Maps time ``s`` of ``target`` to the linear path: ``(t_s, c_s)``.

    x_bar_s = a_bar(s) x1 + b_bar(s) x0 = c_s x_{t_s} with x_t the linear path,
    t_s = a_bar / (a_bar + b_bar) and c_s = a_bar + b_bar (Kim et al. 2025).
    """
    s = jnp.asarray(s)
    a, b = target.a(s), target.b(s)
    c = a + b
    return a / c, c


def convert_velocity(velocity_fn_linear: VelocityFn, target: Interpolant) -> VelocityFn:
    """The velocity of ``target`` from a velocity trained on the linear interpolant.

    u_bar_s(x) = (c_s' / c_s) x + c_s t_s' u_{t_s}(x / c_s), with t_s, c_s from
    ``time_to_linear``: one evaluation of the linear model per call (Kim et al.
    2025), so the cost per call is that of ``velocity_fn_linear``: when it is
    more than 1 (``cost.nfe_per_call``, e.g. a ``guidance.cfg`` velocity), the
    returned callable is a ``cost.Costed`` with the same cost.

    Args:
        velocity_fn_linear: batched ``(x [N, *event], t) -> [N, *event]`` for the
            linear interpolant.
        target: the interpolant to sample along (e.g. ``vp()``).

    Returns:
        ``velocity_fn_target(x, s)``.
    """
    check_interpolant(target, "target")
    if not callable(velocity_fn_linear):
        raise TypeError(
            f"velocity_fn_linear: expected a callable (x, t) -> v, got {type(velocity_fn_linear)}"
        )
    nfe = cost.nfe_per_call(velocity_fn_linear, name="velocity_fn_linear")

    def velocity_fn_target(x: jax.Array, s: jax.Array) -> jax.Array:
        s = jnp.asarray(s, x.dtype)
        a, b, da, db = target.a(s), target.b(s), target.da(s), target.db(s)
        c = a + b
        dc = da + db
        t_s = a / c
        dt_s = (da * b - a * db) / c**2
        u = velocity_fn_linear(x / c, t_s)
        return (dc / c) * x + c * dt_s * u.astype(x.dtype)

    return cost.with_cost(velocity_fn_target, nfe) if nfe > 1 else velocity_fn_target


def renoise(
    key: jax.Array, interp: Interpolant, x_t: jax.Array, t: float | jax.Array, s: float | jax.Array
) -> jax.Array:
    """Exact forward (re-noising) kernel of an interpolant from time ``t`` back to ``s <= t``.

    x_s = (a(s) / a(t)) x_t + sigma eps with sigma^2 = b(s)^2 - (a(s) b(t) / a(t))^2
    and eps ~ N(0, I). Writing x_t = a(t) x1 + b(t) x0, this gives
    x_s = a(s) x1 + [(a(s) b(t) / a(t)) x0 + sigma eps], whose noise part has
    variance b(s)^2: the marginals of the interpolant are preserved for any
    data distribution, and the kernels compose (t -> s -> r equals t -> r in
    distribution). sigma^2 >= 0 holds when b / a decreases in time, as for
    ``linear`` and ``vp``. Used by search over paths (Ma et al. 2025,
    REFERENCES section 4) to step back by ``t - s`` before solving forward.

    Args:
        key: typed PRNG key.
        interp: the interpolant.
        x_t: states at time ``t``.
        t: scalar time with a(t) > 0 (t > 0 for ``linear``).
        s: scalar time, s <= t.

    Returns:
        ``x_s``, same shape and dtype as ``x_t``.

    Raises:
        ValueError: when ``t``, ``s`` are known at trace time and a(t) <= 0 or
            s > t.
    """
    check_interpolant(interp, "interp")
    x_t = jnp.asarray(x_t)
    t_val, s_val = _checks.concrete_value(t), _checks.concrete_value(s)
    if t_val is not None and s_val is not None and not float(s_val) <= float(t_val):
        raise ValueError(f"s: expected a time s <= t = {float(t_val)}, got {float(s_val)}")
    if t_val is not None:
        with jax.ensure_compile_time_eval():
            a_t_val = float(interp.a(jnp.asarray(float(t_val))))
        if not a_t_val > 0.0:
            raise ValueError(
                f"t: expected a time with a(t) > 0 (t > 0 for the linear interpolant), "
                f"got t = {float(t_val)} where a(t) = {a_t_val}"
            )
    t = jnp.asarray(t, x_t.dtype)
    s = jnp.asarray(s, x_t.dtype)
    a_t, b_t, a_s, b_s = interp.a(t), interp.b(t), interp.a(s), interp.b(s)
    ratio = a_s / a_t
    var = jnp.maximum(b_s**2 - (ratio * b_t) ** 2, 0.0)  # clip round-off at s = t
    eps = jax.random.normal(key, x_t.shape, x_t.dtype)
    return (ratio * x_t + jnp.sqrt(var) * eps).astype(x_t.dtype)


def derivatives_by_autodiff(interp: Interpolant, t) -> tuple[jax.Array, jax.Array]:
    """(a'(t), b'(t)) by ``jax.jvp``: a check of an interpolant's closed forms."""
    t = jnp.asarray(t, jnp.result_type(float))
    one = jnp.ones_like(t)
    _, da = jax.jvp(interp.a, (t,), (one,))
    _, db = jax.jvp(interp.b, (t,), (one,))
    return da, db
