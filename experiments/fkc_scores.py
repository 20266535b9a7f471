"""The Feynman-Kac reproduction's check of its trained velocities (``fkc.run`` calls
``score_check`` once per seed when it trains models).

FKC's weights and its MALA moves use the score a velocity implies. This module measures,
per trained model, how far that score is from the exact mixture score and how far it is
from being the gradient of any density (the skew part of its Jacobian).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inferax.models import mlp

# Times at which the learned velocities' implied scores are checked against the exact ones.
SCORE_CHECK_TIMES = (0.25, 0.5, 0.75, 0.9, 0.97)
SCORE_CHECK_POINTS = 1024


def _score_fields(problems: dict, config) -> dict:
    """``name -> (marginal mixture, velocity index)`` of every trained model's conditionals:
    the anneal model, the two product experts, the CFG model per class and unconditional."""
    pm, cm = problems["product"]["mixtures"], problems["cfg"]["mixtures"]
    out = {
        "anneal": ("anneal", problems["anneal"]["mixtures"]["p"], None),
        "product/p1": ("product", pm["p1"], 0),
        "product/p2": ("product", pm["p2"], 1),
    }
    for c in range(config.cfg.num_classes):
        out[f"cfg/class {c}"] = ("cfg", cm[f"q_{c}"], c)
    out["cfg/unconditional"] = ("cfg", cm["q_u"], mlp.null_label(config.cfg.num_classes))
    return out


def _velocity_of(target: str, fn, index):
    if target == "anneal":
        return fn
    if target == "product":
        return fn[index]
    return lambda x, t: fn(x, t, jnp.full((x.shape[0],), index, jnp.int32))


def _implied_score(v, x, t):
    """The score (t v - x) / (1 - t) the linear interpolant's velocity ``v`` implies.

    ``interpolants.score_from_velocity(interpolants.linear(), ...)`` in closed form (the
    test checks they agree); kept in this form because the committed runs' numbers were
    computed with it (the general formula rounds differently in float32).
    """
    return (t * v(x, t) - x) / (1.0 - t)


def _asymmetry(score, x, t) -> jax.Array:
    """RMS of (J - J^T) over RMS of J, J = d score / dx per point: 0 for a gradient field."""
    jac = jax.vmap(jax.jacfwd(lambda y: score(y[None], t)[0]))(x)  # [M, 2, 2]
    skew = jac - jnp.swapaxes(jac, 1, 2)
    return jnp.sqrt(jnp.mean(skew**2) / 2.0) / jnp.sqrt(jnp.mean(jac**2))


def score_check(
    problems: dict,
    velocities: dict,
    key: jax.Array,
    config,
    times: tuple = SCORE_CHECK_TIMES,
    num_points: int = SCORE_CHECK_POINTS,
) -> dict:
    """How far each trained model's implied score is from the exact one, and from a gradient.

    At each of ``times``, on ``num_points`` points drawn from the exact marginal p_t
    of the model's conditional: ``relative_error`` = RMS |s_model - s_exact| / RMS
    |s_exact|; ``asymmetry`` = RMS of the skew part of the model score's Jacobian over
    RMS of the Jacobian (0 for the gradient of a density; the MALA moves' Metropolis
    ratio, a line integral of the score, is exact only then); ``oracle_asymmetry``, the
    same for the exact mixture score (0 up to float error: the check's control).

    Returns:
        ``{name: {t: {metric: value}}}`` (one seed).
    """
    fn = {tgt: factory(theta) for tgt, (factory, theta) in velocities["model"].items()}
    out: dict = {}
    for i, (name, (target, mixture, index)) in enumerate(_score_fields(problems, config).items()):
        v = _velocity_of(target, fn[target], index)

        def model_score(y, s, v=v):
            return _implied_score(v, y, s)

        for j, t in enumerate(times):
            k = jax.random.fold_in(jax.random.fold_in(key, i), j)
            x = mixture.marginal(t).sample(k, num_points)
            exact = mixture.score(x, t)
            err = model_score(x, t) - exact
            out.setdefault(name, {})[t] = {
                "relative_error": float(jnp.sqrt(jnp.mean(err**2) / jnp.mean(exact**2))),
                "asymmetry": float(_asymmetry(model_score, x, t)),
                "oracle_asymmetry": float(_asymmetry(mixture.score, x, t)),
            }
    return out
