"""Feynman-Kac correctors for flow models (Skreta et al. 2025; REFERENCES section 3b).

Target: q_t proportional to prod_i p_{i,t}^{beta_i}, built from the marginals
p_i of several flow models (velocities u_i, scores s_i, one interpolant) —
annealing p^beta, products of experts p_1 p_2, classifier-free-guidance
geometric mixtures q_u^{1-w} q_c^w. Time runs from noise (t = 0) to data.

Derivation in inferax time. Each model satisfies the continuity equation
d_t p_i = -div(p_i u_i), i.e. d_t log p_i = -div u_i - <u_i, s_i>, and its
velocity is affine in its score, u_i = alpha x + h s_i with alpha = a'/a and
h = b (a' b - a b') / a (the interpolant's score map, ``interpolants``). Simulate

    dx = v dt + sigma dW,   v = Gamma alpha x + (h + sigma^2 / 2) S,   S = sum_i beta_i s_i,

carrying log-weights d log w = G dt. The weighted density solves
d_t rho = -div(rho v) + (sigma^2 / 2) Lap rho + G rho; inserting rho = prod_i p_i^beta_i
(divide by rho, use grad log rho = S, div u_i = alpha d + h div s_i, d = event size)
the divergence and Laplacian terms cancel for ANY scalar Gamma(t), leaving

    G = (Gamma - 1) alpha <x, S> + h (|S|^2 - sum_i beta_i |s_i|^2) + (Gamma - B) alpha d,

with B = sum_i beta_i. Written with the velocities (how it is computed),
v = sum_i beta_i u_i + c x + (sigma^2 / 2) S and
G = <sum_i beta_i u_i, S> - sum_i beta_i <u_i, s_i> + c (<x, S> + d), c = (Gamma - B) alpha.

``transport="scaled"``: Gamma = B, c = 0 — the plain combined drift sum_i beta_i u_i
(+ sigma^2 S / 2) of the paper. It scales the transport alpha x by B, so at data
scale particles overshoot towards ~B times the data and only the weights pull them
back. ``transport="model"`` (default): Gamma(t) = 1 + (B - 1)(1 - a(t))^p, the
transport of ONE model away from t = 0 (the score part still carries the exponents);
Gamma(0) = B keeps c = -(B - 1) a' (1 - (1 - a)^p) / a finite at a(0) = 0 (linear:
c = -(B - 1)(1 - (1 - t)^p) / t). Both are exact in continuous time (tests: every
quadrature target with both). Measured with exact velocities, 200 steps, beta = 2:
two modes at +-5 (std 0.5, weights 0.3 / 0.7), energy distance scaled 0.7-2.9 vs
model p = 1 0.08-0.57, p = 2 0.003-0.03; 40-mode benchmark / 10, mode-share TV
scaled 0.56-0.82 vs p = 1 0.12-0.38, p = 2 0.12-0.26. Larger p (Gamma -> 1 sooner)
suits data far from the unit noise scale (raw 40-mode: p = 8) but raises the weight
variance and the log Z bias at unit scale; the default p = 1 is the safe middle.

No x-independent term is dropped: the unnormalised Q_t = prod_i p_{i,t}^beta_i
itself solves the weighted equation, so the SMC estimate ``log_Z`` targets
log(Z_1 / Z_0) with Z_t = int Q_t dx (checked against quadrature in the tests).

Special cases (scaled transport): annealing (one model, beta) G = beta (beta - 1) <u, s>;
product (beta = (1, 1)) G = <u_1, s_2> + <u_2, s_1>; CFG (beta = (1 - w, w), B = 1,
so both transports coincide). With the variance-exploding relation u = (g^2 / 2) s
and sigma = g these are the paper's increments (beta (beta - 1) / 2) g^2 |s|^2,
g^2 <s_1, s_2> and (w (w - 1) / 2) g^2 |s_c - s_u|^2 (checked in the tests).
G needs no divergence, and sigma(t) >= 0 is free (sigma = 0: weighted ODE).

At t = 0 every p_i = N(0, I) for the linear interpolant, so q_0 = N(0, I / sum beta_i)
exactly; sampling starts there with zero log-weights. (For the VP interpolant
a(0) ~ 6.6e-3 is not 0 and the start N(0, b(0)^2 I / sum beta_i) is approximate;
alpha = a'/a is large but finite there.)
Per interval [t0, t1] the transition evaluates everything at the left end point
t0 < 1 (the velocity-to-score map is singular at t = 1): Euler-Maruyama move
(``sde.euler_maruyama``, the package's one SDE step) and increment G(x_t0, t0) (t1 - t0).
The last interval is not followed by resampling, so ``sample`` returns weighted
particles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, cost, flow, sde
from inferax.sampling import interpolants as interp_lib

FieldsFn = Callable[[jax.Array, jax.Array], jax.Array]


def _inner(a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-particle inner product over the event axes (all but the leading one)."""
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def weight_rate(us: jax.Array, ss: jax.Array, betas: jax.Array) -> jax.Array:
    """G = <sum_i beta_i u_i, sum_j beta_j s_j> - sum_i beta_i <u_i, s_i>, shape [N].

    Args:
        us: velocities ``[M, N, *event]`` of the M models.
        ss: their scores, same shape.
        betas: ``[M]`` exponents.
    """
    b = betas.reshape((-1,) + (1,) * (us.ndim - 1)).astype(us.dtype)
    u_sum, s_sum = jnp.sum(b * us, 0), jnp.sum(b * ss, 0)
    per_model = jax.vmap(_inner)(us, ss)  # [M, N]
    return _inner(u_sum, s_sum) - jnp.sum(betas.astype(us.dtype)[:, None] * per_model, 0)


TRANSPORTS = ("model", "scaled")


def transport_rate(interpolant: interp_lib.Interpolant, t, beta_sum, transport: str, power):
    """c(t) = (Gamma(t) - B) a'(t) / a(t), the drift and weight correction of ``transport``.

    "scaled": Gamma = B, c = 0. "model": Gamma = 1 + (B - 1)(1 - a)^p, so
    c = -(B - 1) a' f(a) with f(a) = (1 - (1 - a)^p) / a (f(0) = p): finite at a = 0.
    """
    if transport == "scaled":
        return jnp.zeros_like(jnp.asarray(t))
    a, da = interpolant.a(t), interpolant.da(t)
    tiny = a < 1e-6
    a_safe = jnp.where(tiny, 1.0, a)
    f = jnp.where(tiny, power, -jnp.expm1(power * jnp.log1p(-a_safe)) / a_safe)
    return -(beta_sum - 1.0) * da * f


class FKTransition(NamedTuple):
    """A Feynman-Kac corrector transition for ``inferax.sampling.smc`` (immutable).

    ``transition(key, x [N, *event], (t0, t1)) -> (x_next, log_weight_increment [N])``.
    Built by ``geometric_transition``, ``anneal``, ``product`` or ``cfg``.

    Attributes:
        fields_fn: ``(x [N, *event], t) -> [M, N, *event]``, the M velocities.
        betas: the M exponents of the target prod_i p_i^beta_i (a tuple of floats).
        g_fn: the noise schedule sigma(t).
        interpolant: the interpolant of the velocities.
        center, clip: variance heuristics (off by default; see ``geometric_transition``).
        nfe_per_step: network evaluations per particle per step (static):
            ``sde.EULER_MARUYAMA.evals_per_step * nfe_per_eval``.
        transport: "model" or "scaled" (module docstring); transport_power: p.
        nfe_per_eval: network evaluations per particle of one ``fields_fn`` call (all
            M models; CFG counts 2), the cost of one score of the target (``score``).
    """

    fields_fn: FieldsFn
    betas: tuple
    g_fn: Callable
    interpolant: interp_lib.Interpolant
    center: bool
    clip: float | None
    nfe_per_step: int
    transport: str = "model"
    transport_power: float = 1.0
    nfe_per_eval: int = 1

    @property
    def beta_sum(self) -> float:
        return float(np.sum(self.betas))

    def init(self, key: jax.Array, num_particles: int, event_shape, t0=0.0, dtype=None):
        """Draws N(0, b(t0)^2 / sum(beta) I): exact q_0 at t0 = 0 when a(0) = 0 (linear).

        ``dtype`` defaults to the default float dtype (float64 under ``jax_enable_x64``).
        """
        dtype = jnp.result_type(float) if dtype is None else dtype
        scale = self.interpolant.b(jnp.asarray(t0, dtype)) / np.sqrt(self.beta_sum)
        x = jax.random.normal(key, (num_particles, *tuple(event_shape)), dtype)
        return (scale * x).astype(dtype)

    def fields_and_scores(self, x: jax.Array, t) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Velocities ``us`` and scores ``ss`` ``[M, N, *event]`` and S = sum_i beta_i s_i."""
        us = self.fields_fn(x, t).astype(x.dtype)
        ss = interp_lib.score_from_velocity(self.interpolant, us, x[None], t)
        b = jnp.asarray(self.betas, x.dtype).reshape((-1,) + (1,) * x.ndim)
        return us, ss, jnp.sum(b * ss, 0)

    def score(self, x: jax.Array, t) -> tuple[jax.Array, jax.Array]:
        """``(S, us)``: the target's score S = sum_i beta_i s_i at (x, t) and the velocities."""
        us, _, s_sum = self.fields_and_scores(x, jnp.asarray(t, x.dtype))
        return s_sum, us

    def __call__(self, key: jax.Array, x: jax.Array, step_input) -> tuple[jax.Array, jax.Array]:
        t0, t1 = step_input
        t0 = jnp.asarray(t0, x.dtype)
        dt = jnp.asarray(t1, x.dtype) - t0
        us, ss, s_sum = self.fields_and_scores(x, t0)  # [M, N, *event], same, [N, *event]
        betas = jnp.asarray(self.betas, x.dtype)
        b = betas.reshape((-1,) + (1,) * x.ndim)
        g = jnp.asarray(self.g_fn(t0), x.dtype)
        c = transport_rate(
            self.interpolant, t0, self.beta_sum, self.transport, self.transport_power
        ).astype(x.dtype)
        drift = jnp.sum(b * us, 0) + c * x + 0.5 * g**2 * s_sum
        noise = jax.random.normal(key, x.shape, x.dtype)
        x_next, _, _ = sde.EULER_MARUYAMA.step(None, x, t0, t1, noise, drift0=(drift, g))
        d = int(np.prod(x.shape[1:]))
        inc = (weight_rate(us, ss, betas) + c * (_inner(x, s_sum) + d)) * dt
        if self.center:  # variance heuristic: changes log Z (and the target with clip)
            inc = inc - jnp.mean(inc)
        if self.clip is not None:  # variance heuristic: biases the target
            inc = jnp.clip(inc, -self.clip, self.clip)
        return x_next, inc


def _check_betas(betas, m: int) -> np.ndarray:
    arr = np.asarray(betas, np.float64).reshape(-1)
    if arr.shape != (m,):
        raise ValueError(f"betas: expected {m} exponents (one per model), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"betas: expected finite exponents, got {arr}")
    if not arr.sum() > 0:
        raise ValueError(
            f"betas: expected a positive sum (the start N(0, I / sum beta) needs it), got {arr}"
        )
    return arr


def _check_options(center, clip, transport, transport_power):
    if not isinstance(center, bool):
        raise TypeError(f"center: expected a bool, got {center!r}")
    if clip is not None and not (isinstance(clip, int | float) and clip > 0):
        raise ValueError(f"clip: expected None or a positive number, got {clip!r}")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport: expected one of {list(TRANSPORTS)}, got {transport!r}")
    if (
        isinstance(transport_power, bool)
        or not isinstance(transport_power, int | float)
        or not 0 < transport_power < np.inf
    ):
        raise ValueError(
            f"transport_power: expected a finite positive number, got {transport_power!r}"
        )


def _make(fields_fn, betas, nfe_per_eval, *, g="square", interpolant=None, center=False,
          clip=None, transport="model", transport_power=1.0) -> FKTransition:  # fmt: skip
    interpolant = interp_lib.check_interpolant(interpolant or interp_lib.linear())
    _check_options(center, clip, transport, transport_power)
    return FKTransition(
        fields_fn=fields_fn,
        betas=tuple(float(b) for b in betas),
        g_fn=sde.resolve_g(g),
        interpolant=interpolant,
        center=center,
        clip=None if clip is None else float(clip),
        nfe_per_step=sde.EULER_MARUYAMA.evals_per_step * int(nfe_per_eval),
        transport=transport,
        transport_power=float(transport_power),
        nfe_per_eval=int(nfe_per_eval),
    )


def geometric_transition(
    velocity_fns: Sequence[Callable],
    betas: Sequence[float] | jax.Array,
    *,
    g: str | float | Callable = "square",
    interpolant: interp_lib.Interpolant | None = None,
    center: bool = False,
    clip: float | None = None,
    transport: str = "model",
    transport_power: float = 1.0,
) -> FKTransition:
    """FKC transition for prod_i p_i^beta_i from M velocity models (see module docstring).

    Args:
        velocity_fns: M batched velocities ``(x [N, *event], t) -> [N, *event]``;
            each one's cost per call comes from ``inferax.sampling.cost``
            (a ``cost.Costed`` such as ``guidance.cfg`` counts its own NFE).
        betas: M finite exponents with a positive sum (negative ones allowed, as in CFG).
        g: noise schedule sigma(t) (name in ``sde.G_SCHEDULES``, number or callable).
        interpolant: of the velocities; default ``interpolants.linear()``.
        center: subtract the population mean from each step's increments. Leaves the
            normalised weights unchanged but drops log Z; with ``clip`` it biases.
        clip: clamp each increment to [-clip, clip] (the reference image code's
            variance heuristic). Biases the target: off by default.
        transport: "model" (default): the drift transports like ONE model away from
            t = 0, Gamma(t) = 1 + (B - 1)(1 - a(t))^p; "scaled": Gamma = B, the plain
            sum_i beta_i u_i (overshoots at data scale). Both exact; see module docstring.
        transport_power: p of the "model" schedule (ignored by "scaled").

    Returns:
        ``FKTransition``; step input ``(t0, t1)``.

    Example:
        With ``target`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import feynman_kac
        >>> other = lambda x, t: -x  # a second (toy) velocity model
        >>> transition = feynman_kac.geometric_transition([target.velocity, other], [1.5, -0.5])
        >>> list(transition.betas), transition.nfe_per_eval
        ([1.5, -0.5], 2)
    """
    if callable(velocity_fns) or not isinstance(velocity_fns, Sequence) or not velocity_fns:
        raise TypeError(
            f"velocity_fns: expected a non-empty sequence of callables, got {velocity_fns!r}"
        )
    for i, fn in enumerate(velocity_fns):
        if not callable(fn):
            raise TypeError(f"velocity_fns[{i}]: expected a callable (x, t) -> v, got {fn!r}")
    betas = _check_betas(betas, len(velocity_fns))
    fns = tuple(velocity_fns)
    nfe = sum(cost.nfe_per_call(fn, name=f"velocity_fns[{i}]") for i, fn in enumerate(fns))

    def fields_fn(x, t):
        # Shapes are checked here, where the velocities are traced anyway.
        return jnp.stack(
            [
                flow.check_velocity_output(fn(x, t), x, f"velocity_fns[{i}]")
                for i, fn in enumerate(fns)
            ]
        )

    return _make(fields_fn, betas, nfe, g=g, interpolant=interpolant, center=center, clip=clip,
                 transport=transport, transport_power=transport_power)  # fmt: skip


def anneal(velocity_fn: Callable, beta: float, **kwargs: Any) -> FKTransition:
    """Annealing p^beta ("scaled": G = beta (beta - 1) <u, s>, drift beta (u + sigma^2 s / 2)).

    Example:
        With ``target`` from the package example (``inferax.sampling``):

        >>> from inferax.sampling import feynman_kac
        >>> transition = feynman_kac.anneal(target.velocity, 2.0)
        >>> type(transition).__name__, list(transition.betas), transition.nfe_per_eval
        ('FKTransition', [2.0], 1)
    """
    return geometric_transition([velocity_fn], [beta], **kwargs)


def product(velocity_fn_1: Callable, velocity_fn_2: Callable, **kwargs: Any) -> FKTransition:
    """Product of experts p_1 p_2: G = <u_1, s_2> + <u_2, s_1>."""
    return geometric_transition([velocity_fn_1, velocity_fn_2], [1.0, 1.0], **kwargs)


def cfg(
    cond_velocity_fn: Callable, cond: Any, null_cond: Any, guidance_scale: float, **kwargs: Any
) -> FKTransition:
    """The geometric mixture that classifier-free guidance aims at: q_c^(1 + s) q_u^(-s).

    One convention for both guidance modules: ``guidance_scale`` s is that of
    ``guidance.cfg``, whose guided velocity is u_c + s (u_c - u_u) =
    (1 + s) u_c - s u_u. FKC targets the density those exponents describe,
    p_c^(1 + s) p_u^(-s) (the papers' w = 1 + s: q_u^(1 - w) q_c^w); its drift
    with the "scaled" transport and sigma = 0 is exactly ``guidance.cfg``'s
    velocity (tested). s = 0 is the conditional model.

    Both branches run as one doubled batch ``cond_velocity_fn(x [2N], t, c [2N])``
    (2 NFE per particle per step).

    Args:
        cond_velocity_fn: conditional velocity ``(x, t, cond) -> v``.
        cond: ONE condition (a pytree without the particle axis), shared by all
            particles (they all target the same mixture); broadcast to ``[N, ...]``.
        null_cond: the null condition, same structure.
        guidance_scale: s (> -1, so that 1 + s > 0).
        **kwargs: as ``geometric_transition``.
    """
    if not callable(cond_velocity_fn):
        raise TypeError(
            f"cond_velocity_fn: expected a callable (x, t, cond), got {cond_velocity_fn}"
        )
    if jax.tree.structure(cond) != jax.tree.structure(null_cond):
        raise ValueError(
            f"null_cond: expected the pytree structure of cond {jax.tree.structure(cond)}, "
            f"got {jax.tree.structure(null_cond)}"
        )
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, int | float):
        raise TypeError(f"guidance_scale: expected a real number, got {guidance_scale!r}")
    s = float(guidance_scale)
    if not s > -1.0:
        raise ValueError(
            f"guidance_scale: expected s > -1 (the conditional exponent 1 + s must be "
            f"positive), got {guidance_scale!r}"
        )
    betas = _check_betas([1.0 + s, -s], 2)  # order matches the stacked (cond, null) fields
    nfe = 2 * cost.nfe_per_call(cond_velocity_fn, name="cond_velocity_fn")

    def fields_fn(x, t):
        n = x.shape[0]

        def both(c, nc):
            c, nc = jnp.asarray(c), jnp.asarray(nc)
            return jnp.concatenate(
                [jnp.broadcast_to(c, (n, *c.shape)), jnp.broadcast_to(nc, (n, *c.shape))]
            ).astype(c.dtype)

        xx = jnp.concatenate([x, x])
        v = cond_velocity_fn(xx, t, jax.tree.map(both, cond, null_cond))
        v = flow.check_velocity_output(v, xx, "cond_velocity_fn")
        return jnp.stack([v[:n], v[n:]])

    return _make(fields_fn, betas, nfe, **kwargs)


def cost_per_particle(
    transition: FKTransition,
    num_steps: int,
    langevin_steps: int = 0,
    adjusted: bool = True,
    quadrature: str = "simpson",
) -> int:
    """The largest NFE per particle a ``sample`` call can spend, known before tracing.

    ``num_steps`` Euler-Maruyama intervals cost ``nfe_per_step`` each; every
    resampling step (at most ``num_steps - 1``: the last interval is not resampled)
    adds one resample-move of ``move_evals(langevin_steps, adjusted, quadrature)``
    score evaluations, ``nfe_per_eval`` each. ``FKInfo.nfe`` reports what was spent
    (equal to this when every step but the last resamples, the default).

    Args:
        transition: the ``FKTransition``.
        num_steps: grid intervals.
        langevin_steps: Langevin moves per resample-move, as in ``sample``.
        adjusted: Metropolis-adjusted moves, as in ``sample``.
        quadrature: the MALA line-integral rule, as in ``sample``.

    Returns:
        The NFE per particle, an int.

    Raises:
        TypeError: ``transition`` is not an ``FKTransition``.
        ValueError: a ``num_steps`` that is not a positive int, or bad move options.
    """
    if not isinstance(transition, FKTransition):
        raise TypeError(f"transition: expected an FKTransition, got {type(transition).__name__}")
    num_steps = _checks.positive_int(num_steps, "num_steps")
    per_move = move_evals(langevin_steps, adjusted, quadrature)
    return transition.nfe_per_step * num_steps + transition.nfe_per_eval * per_move * (
        num_steps - 1
    )


# sample() and FKInfo live in a second file to keep each one small; re-exported here.
from inferax.sampling._fk_sample import (  # noqa: E402, F401
    FKInfo,
    langevin_move,
    mala_move,
    move_evals,
    sample,
)
