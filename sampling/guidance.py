"""Classifier-free guidance for flow velocities (F5-TTS form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CondVelocityFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


class GuidedVelocity:
    """A velocity ``(x, t) -> v`` that evaluates its network on a doubled batch.

    ``nfe_per_call = 2`` tells ``flow.sample`` (and the searches) that each call
    costs two network evaluations per sample.
    """

    nfe_per_call = 2

    def __init__(self, velocity_fn, cond, null_cond, guidance_scale):
        self.velocity_fn = velocity_fn
        self.guidance_scale = guidance_scale
        # Conditioning does not depend on t: concatenate it once, here.
        self.both = jax.tree.map(
            lambda c, n: jnp.concatenate([c, jnp.broadcast_to(n, c.shape).astype(c.dtype)]),
            cond,
            null_cond,
        )

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        n = x.shape[0]
        v = self.velocity_fn(jnp.concatenate([x, x]), t, self.both)
        v_cond, v_uncond = v[:n], v[n:]
        return v_cond + self.guidance_scale * (v_cond - v_uncond)


def cfg(
    velocity_fn: CondVelocityFn, cond: Any, null_cond: Any, guidance_scale: float | jax.Array = 2.0
) -> GuidedVelocity:
    """Classifier-free guided velocity ``v_c + w (v_c - v_u)`` (F5-TTS, w = 2).

    Both branches run as one batched call of ``velocity_fn(x [2N], t, cond [2N])``
    on ``[cond; null_cond]``. ``w = 0`` is the conditional model; in the
    ``(1 + w) v_c - w v_u`` parametrisation used here, ``w`` is F5-TTS's
    ``cfg_strength`` (other papers write ``w' = 1 + w``).

    Args:
        velocity_fn: conditional velocity ``(x, t, cond) -> v``.
        cond: conditioning pytree with leading axis N (e.g. int labels [N]).
        null_cond: the "no condition" value, same structure, broadcastable to
            ``cond`` (e.g. the null label as a scalar).
        guidance_scale: w; may be a traced scalar.
    """
    leaves = jax.tree.leaves(cond)
    if not leaves:
        raise ValueError("cond: expected a pytree with at least one array leaf, got none")
    for leaf, null_leaf in zip(leaves, jax.tree.leaves(null_cond), strict=False):
        try:
            jnp.broadcast_shapes(jnp.shape(null_leaf), jnp.shape(leaf))
        except ValueError:
            raise ValueError(
                f"null_cond: expected a shape broadcastable to cond's {jnp.shape(leaf)}, "
                f"got {jnp.shape(null_leaf)}"
            ) from None
    return GuidedVelocity(velocity_fn, cond, null_cond, guidance_scale)
