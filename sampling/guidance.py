"""Classifier-free guidance for flow velocities (F5-TTS form; REFERENCES section 1).

``cfg`` combines a conditional and an unconditional velocity as
v = v_c + s (v_c - v_u) with guidance scale s (F5-TTS's ``cfg_strength``,
default 2), evaluating both branches as one doubled batch. It costs 2 NFE
per sample per call, and says so statically: it returns a ``cost.Costed``
with ``nfe_per_call = 2``, which the samplers read before tracing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inferax.sampling import cost

CondVelocityFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


class GuidedVelocity:
    """The guided velocity ``(x, t) -> v``; evaluates its network on a doubled batch.

    ``cfg`` wraps it in a ``cost.Costed`` with ``nfe_per_call = 2``.

    Attributes:
        velocity_fn: the conditional velocity ``(x, t, cond) -> v``.
        cond: the conditioning pytree, leading axis N.
        guidance_scale: s in ``v_c + s (v_c - v_u)``.
    """

    def __init__(self, velocity_fn, cond, null_cond, guidance_scale):
        self.velocity_fn = velocity_fn
        self.cond = cond
        self.guidance_scale = guidance_scale
        # Conditioning does not depend on t: concatenate it once, here.
        self.both = jax.tree.map(
            lambda c, n: jnp.concatenate([c, jnp.broadcast_to(n, c.shape).astype(c.dtype)]),
            cond,
            null_cond,
        )

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        n = x.shape[0]
        for leaf in jax.tree.leaves(self.cond):  # static shapes: checked at trace time
            if leaf.shape[0] != n:
                raise ValueError(
                    f"cond: expected a leading (batch) axis of {n}, the leading axis of x "
                    f"{tuple(x.shape)}, got a cond leaf of shape {tuple(leaf.shape)}"
                )
        v = self.velocity_fn(jnp.concatenate([x, x]), t, self.both)
        v_cond, v_uncond = v[:n], v[n:]
        return v_cond + self.guidance_scale * (v_cond - v_uncond)


def cfg(
    velocity_fn: CondVelocityFn, cond: Any, null_cond: Any, guidance_scale: float | jax.Array = 2.0
) -> cost.Costed:
    """Classifier-free guided velocity ``v_c + s (v_c - v_u)`` (F5-TTS, s = 2).

    Both branches run as one batched call of ``velocity_fn(x [2N], t, cond [2N])``
    on ``[cond; null_cond]``. ``s = 0`` is the conditional model, ``s = -1`` the
    unconditional one. In the ``(1 + s) v_c - s v_u`` parametrisation used
    here, ``s`` is F5-TTS's ``cfg_strength``; papers that write
    ``v_u + w (v_c - v_u)`` use ``w = 1 + s``.

    Args:
        velocity_fn: conditional velocity ``(x, t, cond) -> v``.
        cond: conditioning pytree whose leaves have the leading axis N of x
            (e.g. int labels [N]); checked against x at trace time.
        null_cond: the "no condition" value, same structure, broadcastable to
            ``cond`` (e.g. the null label as a scalar).
        guidance_scale: s; may be a traced scalar.

    Returns:
        A ``cost.Costed`` velocity ``(x, t) -> v`` with ``nfe_per_call = 2``;
            its ``fn`` is the ``GuidedVelocity``.

    Raises:
        TypeError: if ``velocity_fn`` is not callable.
        ValueError: if ``cond`` has no array leaf or a leaf without a leading
            axis, or ``null_cond`` does not broadcast to it.
    """
    if not callable(velocity_fn):
        raise TypeError(
            f"velocity_fn: expected a callable (x, t, cond) -> v, got {type(velocity_fn).__name__}"
        )
    leaves = jax.tree.leaves(cond)
    if not leaves:
        raise ValueError("cond: expected a pytree with at least one array leaf, got none")
    for leaf in leaves:
        if jnp.ndim(leaf) < 1:
            raise ValueError(
                f"cond: expected leaves with a leading batch axis, got shape {jnp.shape(leaf)}"
            )
    null_leaves = jax.tree.leaves(null_cond)
    if len(null_leaves) != len(leaves):
        raise ValueError(
            f"null_cond: expected the structure of cond ({len(leaves)} leaves), "
            f"got {len(null_leaves)} leaves"
        )
    for leaf, null_leaf in zip(leaves, null_leaves, strict=True):
        try:
            jnp.broadcast_shapes(jnp.shape(null_leaf), jnp.shape(leaf))
        except ValueError:
            raise ValueError(
                f"null_cond: expected a shape broadcastable to cond's {jnp.shape(leaf)}, "
                f"got {jnp.shape(null_leaf)}"
            ) from None
    return cost.with_cost(GuidedVelocity(velocity_fn, cond, null_cond, guidance_scale), 2)
