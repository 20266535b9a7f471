"""SDE sampling of flow models (Kim, Yoon, Hwang, Sung 2025; REFERENCES section 2).

A flow model with velocity u_t and marginals p_t can be sampled by any SDE

    dx = [u_t(x) + (g(t)^2 / 2) grad log p_t(x)] dt + g(t) dW,   t: 0 -> 1,

with g(t) >= 0: all of them have the marginals p_t of the ODE (g = 0). The
score comes from the velocity through the interpolant
(``interpolants.score_from_velocity``). Integration is Euler-Maruyama on a grid
``ts``: x' ~ N(x + dt (u + g^2/2 score), g^2 dt I), with the drift and g
evaluated at the left end point t0 of each interval. The score is singular at
t = 1 (b(1) = 0), and left end points are always < 1, so the last interval is
an ordinary Euler step too. One velocity call per interval: 1 NFE per step
(times ``nfe_per_call`` of the velocity).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import flow
from inferax.sampling import interpolants as interp_lib

GFn = Callable[[jax.Array], jax.Array]

# Named diffusion schedules g(t), in inferax time (t = 0 noise, t = 1 data).
G_SCHEDULES: dict[str, GFn] = {
    # The ODE: no noise, Euler-Maruyama is exactly the Euler ODE step.
    "zero": lambda t: jnp.zeros_like(t),
    # Unit noise at every time. With the linear interpolant the drift term
    # g^2 / 2 * score grows like 1 / (1 - t) near the data: needs fine grids.
    "constant": lambda t: jnp.ones_like(t),
    # 3 (1 - t): noise decaying linearly to zero at the data.
    "linear": lambda t: 3.0 * (1.0 - t),
    # 3 (1 - t)^2: the default of Kim et al. 2025 ("square", norm 3, in their
    # reversed time t' = 1 - t).
    "square": lambda t: 3.0 * (1.0 - t) ** 2,
    # sqrt(2 (1 - t)): g^2 / 2 = 1 - t, so that g^2 / 2 * score stays bounded
    # for the linear interpolant, (1 - t) * (t u - x) / (1 - t) = t u - x.
    "sqrt": lambda t: jnp.sqrt(2.0 * (1.0 - t)),
}


class SDEInfo(NamedTuple):
    """What an SDE sample cost.

    Attributes:
        num_steps: number of grid intervals integrated.
        nfe: network evaluations per sample (steps x ``nfe_per_call``).
        trajectory: ``[num_steps + 1, *x0.shape]`` states on the grid when
            ``return_trajectory=True``, else ``None``.
    """

    num_steps: jax.Array
    nfe: jax.Array
    trajectory: jax.Array | None = None


def resolve_g(g, name: str = "g") -> GFn:
    """Turns a schedule name, a non-negative number or a callable into ``g(t)``.

    Raises:
        ValueError: unknown name or negative constant.
        TypeError: anything else.
    """
    if isinstance(g, str):
        if g not in G_SCHEDULES:
            raise ValueError(
                f"{name}: expected one of {sorted(G_SCHEDULES)} or a callable, got {g!r}"
            )
        return G_SCHEDULES[g]
    if isinstance(g, int | float) and not isinstance(g, bool):
        if not g >= 0.0:
            raise ValueError(f"{name}: expected a non-negative noise scale, got {g}")
        value = float(g)
        return lambda t: jnp.full_like(t, value)
    if callable(g):
        return g
    raise TypeError(
        f"{name}: expected a schedule name, a non-negative number or a callable g(t), "
        f"got {type(g).__name__}"
    )


def check_g_on_grid(g_fn: GFn, ts: jax.Array, name: str = "g") -> None:
    """Raises ValueError if g is negative or not finite at a left end point of a concrete grid."""
    try:
        left = np.asarray(ts[:-1])
    except jax.errors.TracerArrayConversionError:
        return
    out = jax.eval_shape(g_fn, jax.ShapeDtypeStruct((), ts.dtype))
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{name}: expected g(t) to return a scalar, got shape {getattr(out, 'shape', out)}"
        )
    values = np.asarray(jax.vmap(g_fn)(jnp.asarray(left, ts.dtype)))
    bad = ~(np.isfinite(values) & (values >= 0.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name}: expected g(t) >= 0 and finite on the grid, got g({left[i]}) = {values[i]}"
        )


def drift(velocity_fn, x: jax.Array, t, g_fn: GFn, interpolant) -> tuple[jax.Array, jax.Array]:
    """``(u + g^2/2 score, g)`` at ``(x, t)``; one velocity call."""
    t = jnp.asarray(t, x.dtype)
    u = flow.check_velocity_output(velocity_fn(x, t), x)  # shape checked where traced
    g = jnp.asarray(g_fn(t), x.dtype)
    score = interp_lib.score_from_velocity(interpolant, u, x, t)
    # g = 0 gives exactly u (0 * finite score = 0), so the ODE is reproduced bit for bit.
    return u + 0.5 * g**2 * score, g


def step(
    key: jax.Array, velocity_fn, x: jax.Array, t0, t1, g_fn: GFn, interpolant
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Euler-Maruyama step of the flow SDE from ``t0`` to ``t1`` (t0 < 1).

    The proposal is N(mean, std^2 I) with mean = x + (t1 - t0) (u + g^2/2 score)
    and std = g(t0) sqrt(t1 - t0), both evaluated at the left end point, so that
    SMC-style callers can compute proposal log-densities.

    Args:
        key: typed PRNG key.
        velocity_fn: batched ``(x [N, *event], t) -> [N, *event]`` for ``interpolant``.
        x: states ``[N, *event]`` at ``t0``.
        t0, t1: scalar interval end points.
        g_fn: callable ``g(t) -> scalar`` (see ``resolve_g``).
        interpolant: the interpolant the velocity belongs to.

    Returns:
        ``(x_next, mean, std)``; ``std`` is a scalar shared by all particles.
    """
    dt = jnp.asarray(t1, x.dtype) - jnp.asarray(t0, x.dtype)
    d, g = drift(velocity_fn, x, t0, g_fn, interpolant)
    mean = x + dt * d
    std = g * jnp.sqrt(dt)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return mean + std * noise, mean, std


def sample(
    key: jax.Array,
    velocity_fn,
    x0: jax.Array,
    ts: jax.Array,
    *,
    g="square",
    interpolant: interp_lib.Interpolant | None = None,
    return_trajectory: bool = False,
    nfe_per_call: int | None = None,
) -> tuple[jax.Array, SDEInfo]:
    """Integrates dx = [u + g^2/2 score] dt + g dW on ``ts`` by Euler-Maruyama.

    Args:
        key: typed PRNG key (``jax.random.key``); step i uses ``fold_in(key, i)``.
        velocity_fn: batched velocity ``(x [N, *event], t) -> [N, *event]`` of
            ``interpolant`` (convert a linear model with
            ``interpolants.convert_velocity`` to sample along another path).
        x0: states at ``ts[0]`` (N(0, I) noise when ``ts[0] = 0``).
        ts: strictly increasing grid in [0, 1].
        g: a name in ``G_SCHEDULES`` (default ``"square"`` = 3 (1 - t)^2), a
            non-negative number, or a callable ``g(t)``.
        interpolant: defaults to ``interpolants.linear()``.
        return_trajectory: also return the states on the grid.
        nfe_per_call: NFE per velocity call per sample; defaults to
            ``velocity_fn.nfe_per_call`` if set, else 1.

    Returns:
        ``(x1, SDEInfo)``.

    Raises:
        ValueError / TypeError: bad grid, state, velocity, g or interpolant.
    """
    if interpolant is None:
        interpolant = interp_lib.linear()
    interp_lib.check_interpolant(interpolant)
    g_fn = resolve_g(g)
    x0 = flow.check_state(x0)
    ts = flow.check_grid(ts)
    if not callable(velocity_fn):
        raise TypeError(f"velocity_fn: expected a callable (x, t) -> v, got {type(velocity_fn)}")
    check_g_on_grid(g_fn, ts)
    if nfe_per_call is None:
        nfe_per_call = int(getattr(velocity_fn, "nfe_per_call", 1))
    num_steps = ts.shape[0] - 1

    def body(x, inp):
        i, t0, t1 = inp
        x_next, _, _ = step(jax.random.fold_in(key, i), velocity_fn, x, t0, t1, g_fn, interpolant)
        return x_next, (x_next if return_trajectory else None)

    inputs = (jnp.arange(num_steps), ts[:-1], ts[1:])
    x1, traj = jax.lax.scan(body, x0, inputs)
    if return_trajectory:
        traj = jnp.concatenate([x0[None], traj], axis=0)
    info = SDEInfo(
        num_steps=jnp.asarray(num_steps, jnp.int32),
        nfe=jnp.asarray(num_steps * nfe_per_call, jnp.int32),
        trajectory=traj,
    )
    return x1, info
