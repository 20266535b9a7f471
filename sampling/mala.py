"""Metropolis-adjusted Langevin (MALA) from a score, with the log-density ratio by quadrature.

MALA (Roberts & Tweedie 1996; REFERENCES section 8) proposes

    y = x + eps S(x) + sqrt(2 eps) xi,   xi ~ N(0, I),   S = grad log pi,

and accepts with probability min(1, pi(y) q(x | y) / (pi(x) q(y | x))),
q(y | x) = N(y; x + eps S(x), 2 eps I). The kernel leaves pi invariant exactly,
unlike the unadjusted Langevin step (no accept test), whose stationary law is
biased by O(eps).

A flow or diffusion model gives the score S but not log pi. The ratio the test
needs is then the line integral of the score along the segment from x to y,

    log pi(y) - log pi(x) = int_0^1 S(x + s (y - x)) . (y - x) ds,

evaluated by a quadrature rule (``QUADRATURES``): the end points s = 0, 1 reuse
the two scores MALA computes anyway (S(x), and S(y) for the reverse proposal),
so ``"trapezoid"`` costs no extra evaluation and ``"simpson"`` (s = 0, 1/2, 1,
the default) one more. Both are exact for a Gaussian pi (its score is affine,
the integrand linear in s); otherwise trapezoid errs by O(|y - x|^3) and Simpson
by O(|y - x|^5), so the kernel is invariant up to that quadrature error. Where
``log_density_fn`` is given, the ratio is exact and no quadrature runs.

Everything is batched over a leading particle axis ``[N, *event]``; the step size
is one scalar shared by all particles (choose or adapt it from anything but the
particle being moved, e.g. ``adapt_log_step_size`` from the previous round's
population mean acceptance, and the kernel stays valid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "QUADRATURES",
    "TARGET_ACCEPTANCE",
    "MALAInfo",
    "MALAState",
    "adapt_log_step_size",
    "evals_per_step",
    "init",
    "line_integral",
    "step",
]

# Rules for int_0^1 f(s) ds: (interior nodes, their weights, weight of each end point).
QUADRATURES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "trapezoid": ((), (), 0.5),
    "simpson": ((0.5,), (4.0 / 6.0,), 1.0 / 6.0),
}

# The optimal MALA acceptance rate in high dimension (Roberts & Rosenthal 1998).
TARGET_ACCEPTANCE = 0.574

ScoreFn = Callable[[jax.Array], jax.Array]


class MALAState(NamedTuple):
    """Particles with their score (and log-density, when one is used).

    Attributes:
        x: ``[N, *event]`` states.
        score: ``[N, *event]`` S(x).
        log_density: ``[N]`` log pi(x), or None when the ratio comes from the score.
    """

    x: jax.Array
    score: jax.Array
    log_density: jax.Array | None = None


class MALAInfo(NamedTuple):
    """One MALA step.

    Attributes:
        acceptance_rate: ``[N]`` min(1, MH ratio) of each particle's proposal
            (0 where the ratio is NaN).
        is_accepted: ``[N]`` whether each proposal was accepted.
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array


def _check_quadrature(quadrature: str) -> tuple:
    if quadrature not in QUADRATURES:
        raise ValueError(f"quadrature: expected one of {sorted(QUADRATURES)}, got {quadrature!r}")
    return QUADRATURES[quadrature]


def evals_per_step(quadrature: str = "simpson", exact: bool = False) -> int:
    """Score evaluations per MALA step: S(y), plus the quadrature's interior nodes.

    Args:
        quadrature: a name in ``QUADRATURES`` (ignored when ``exact``).
        exact: the ratio comes from ``log_density_fn`` (one call of it per step,
            not counted here).
    """
    return 1 if exact else 1 + len(_check_quadrature(quadrature)[0])


def _inner(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def line_integral(
    score_fn: ScoreFn,
    x: jax.Array,
    y: jax.Array,
    score_x: jax.Array,
    score_y: jax.Array,
    quadrature: str = "simpson",
) -> jax.Array:
    """int_0^1 S(x + s (y - x)) . (y - x) ds ~ log pi(y) - log pi(x), shape ``[N]``.

    Args:
        score_fn: batched score ``x [N, *event] -> [N, *event]``; called once per
            interior node of the rule (none for ``"trapezoid"``).
        x: ``[N, *event]`` segment start points.
        y: ``[N, *event]`` segment end points.
        score_x: S at ``x`` (already computed by MALA).
        score_y: S at ``y`` (already computed by MALA).
        quadrature: a name in ``QUADRATURES``.

    Returns:
        ``[N]`` line integrals.

    Raises:
        ValueError: an unknown ``quadrature``.
    """
    nodes, weights, w_end = _check_quadrature(quadrature)
    diff = y - x
    total = w_end * (_inner(score_x, diff) + _inner(score_y, diff))
    for s, w in zip(nodes, weights, strict=True):
        total = total + w * _inner(score_fn(x + s * diff).astype(x.dtype), diff)
    return total


def init(x: jax.Array, score_fn: ScoreFn, log_density_fn=None) -> MALAState:
    """``MALAState`` at ``x``: one score call (and one ``log_density_fn`` call if given)."""
    score = score_fn(x).astype(x.dtype)
    if jnp.shape(score) != jnp.shape(x):
        raise ValueError(
            f"score_fn: expected an output of the shape of x {jnp.shape(x)}, got {jnp.shape(score)}"
        )
    log_density = None if log_density_fn is None else _log_density(log_density_fn, x)
    return MALAState(x, score, log_density)


def _log_density(log_density_fn, x):
    out = jnp.asarray(log_density_fn(x))
    if out.shape != (x.shape[0],):
        raise ValueError(
            f"log_density_fn: expected an output of shape ({x.shape[0]},), got {out.shape}"
        )
    return out


def step(
    key: jax.Array,
    state: MALAState,
    score_fn: ScoreFn,
    step_size: float | jax.Array,
    *,
    log_density_fn: Callable[[jax.Array], jax.Array] | None = None,
    quadrature: str = "simpson",
) -> tuple[MALAState, MALAInfo]:
    """One MALA step of every particle (Roberts & Tweedie 1996, eq. 2.2 and 2.3).

    Args:
        key: typed PRNG key (one draw of the proposal noise and one of the uniforms).
        state: from ``init`` (with a ``log_density`` iff ``log_density_fn`` is given).
        score_fn: batched score ``x -> [N, *event]`` of the target pi.
        step_size: eps > 0, a scalar shared by all particles (may be traced).
        log_density_fn: optional batched ``x -> [N]`` unnormalised log pi; when
            given the MH ratio is exact, else ``line_integral`` gives it.
        quadrature: the line-integral rule (``QUADRATURES``).

    Returns:
        ``(new_state, MALAInfo)``. Costs ``evals_per_step(quadrature, exact)`` score
            calls (plus one ``log_density_fn`` call when exact).

    Example:
        Four chains on a standard normal (score ``-x``):

        >>> import jax, jax.numpy as jnp
        >>> from inferax.sampling import mala
        >>> score_fn = lambda x: -x
        >>> state = mala.init(jnp.zeros((4, 2)), score_fn)
        >>> state, info = mala.step(jax.random.key(0), state, score_fn, 0.5)
        >>> state.x.shape, info.is_accepted.shape, bool((info.acceptance_rate <= 1).all())
        ((4, 2), (4,), True)
    """
    x, sx = state.x, state.score
    if (log_density_fn is None) != (state.log_density is None):
        raise ValueError(
            "state: expected a log_density exactly when log_density_fn is given, got "
            f"log_density={'None' if state.log_density is None else 'an array'} with "
            f"log_density_fn={'None' if log_density_fn is None else 'a callable'}"
        )
    _check_quadrature(quadrature)
    eps = jnp.asarray(step_size, x.dtype)
    k_prop, k_acc = jax.random.split(key)
    xi = jax.random.normal(k_prop, x.shape, x.dtype)
    y = x + eps * sx + jnp.sqrt(2.0 * eps) * xi
    sy = score_fn(y).astype(x.dtype)
    if log_density_fn is None:
        ly = None
        delta = line_integral(score_fn, x, y, sx, sy, quadrature)
    else:
        ly = _log_density(log_density_fn, y)
        delta = ly - state.log_density
    # log q(x | y) - log q(y | x), q(b | a) = N(b; a + eps S(a), 2 eps I).
    fwd = (y - x - eps * sx).reshape(x.shape[0], -1)
    bwd = (x - y - eps * sy).reshape(x.shape[0], -1)
    log_q = (jnp.sum(fwd**2, -1) - jnp.sum(bwd**2, -1)) / (4.0 * eps)
    log_ratio = delta.astype(x.dtype) + log_q
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    log_u = jnp.log(jax.random.uniform(k_acc, (x.shape[0],), x.dtype))
    accept = log_u < log_ratio
    rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    shape = (-1,) + (1,) * (x.ndim - 1)
    new_x = jnp.where(accept.reshape(shape), y, x)
    new_s = jnp.where(accept.reshape(shape), sy, sx)
    new_l = None if ly is None else jnp.where(accept, ly, state.log_density)
    return MALAState(new_x, new_s, new_l), MALAInfo(rate, accept)


def adapt_log_step_size(
    log_step_size: jax.Array,
    acceptance: jax.Array,
    target: float = TARGET_ACCEPTANCE,
    rate: float = 1.0,
) -> jax.Array:
    """log eps <- log eps + rate (acceptance - target): a Robbins-Monro step toward
    the target acceptance (Andrieu & Thoms 2008, section 5.1; constant gain).

    Use it BETWEEN rounds, from a population-mean acceptance of a previous round,
    so that the step size of a round never depends on the particle being moved.
    A NaN acceptance leaves the step size unchanged.
    """
    acceptance = jnp.asarray(acceptance, log_step_size.dtype)
    change = jnp.where(jnp.isnan(acceptance), 0.0, rate * (acceptance - target))
    return log_step_size + change
