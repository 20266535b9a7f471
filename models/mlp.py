"""A small velocity MLP for low-dimensional flow matching.

``VelocityMLP`` maps ``(x [N, d], t, labels)`` to a velocity ``[N, d]``. Time
enters through a sinusoidal embedding (Vaswani et al. 2017, sec. 3.5, with t
in [0, 1]) followed by a small MLP; an optional class label enters through an
embedding table with one extra row, the NULL label, used to train and sample
with classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def null_label(num_classes: int) -> int:
    """The NULL (unconditional) label index: ``num_classes`` itself.

    Label embedding tables have ``num_classes + 1`` rows; the last row is the
    "no label" embedding used for classifier-free guidance.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    return num_classes


def sinusoidal_embedding(t: jax.Array, dim: int, max_frequency: float = 1000.0) -> jax.Array:
    """Sinusoidal features ``[sin(w_k t), cos(w_k t)]`` of times in [0, 1].

    The ``dim / 2`` angular frequencies are geometric from 1 to
    ``max_frequency``, ``w_k = max_frequency ** (k / (dim / 2 - 1))``, so both
    the coarse position in [0, 1] and fine time differences are resolved.

    Args:
        t: times, scalar or ``[N]``.
        dim: even embedding width.
        max_frequency: largest angular frequency.

    Returns:
        ``[N, dim]`` (``[1, dim]`` for scalar ``t``).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even int >= 2, got {dim!r}")
    t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
    if t.ndim != 1:
        raise ValueError(f"t: expected a scalar or a 1-D array of times, got shape {t.shape}")
    half = dim // 2
    exponents = jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1)
    freqs = jnp.exp(math.log(max_frequency) * exponents)
    angles = t[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def broadcast_time(t: jax.Array, n: int) -> jax.Array:
    """Times as a ``[n]`` float32 vector from a scalar or an ``[n]`` array."""
    t = jnp.asarray(t, jnp.float32)
    if t.ndim == 0:
        return jnp.full((n,), t)
    if t.shape != (n,):
        raise ValueError(f"t: expected a scalar or shape ({n},) to match x, got shape {t.shape}")
    return t


def label_embedding(
    module: nn.Module, labels: jax.Array | None, n: int, num_classes: int | None, dim: int
) -> jax.Array | None:
    """Embeds ``labels [n]`` with a ``(num_classes + 1)``-row table (inside ``module``).

    ``labels=None`` on a conditional model means "unconditional": every row
    gets the NULL label. Returns ``None`` for an unconditional model.
    """
    if num_classes is None:
        if labels is not None:
            raise ValueError("labels: this model has num_classes=None, so labels must be None")
        return None
    if labels is None:
        labels = jnp.full((n,), null_label(num_classes), jnp.int32)
    labels = jnp.asarray(labels)
    if labels.ndim == 0:
        labels = jnp.full((n,), labels)
    if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels: expected integer labels of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    table = nn.Embed(num_classes + 1, dim, name="label_embed", parent=module)
    return table(labels)


class VelocityMLP(nn.Module):
    """Velocity field ``v(x, t, label)`` for vectors, a residual MLP with SiLU.

    The input projection of ``x``, the time embedding and the label embedding
    are added into a ``hidden``-wide state, followed by ``depth`` residual
    blocks ``h <- h + Dense(SiLU(Dense(SiLU(h))))`` and a linear read-out.
    """

    features: int = 2  # event dimension d of x and of the output velocity
    hidden: int = 256  # width of every hidden layer
    depth: int = 3  # number of residual blocks
    time_embed_dim: int = 64  # width of the sinusoidal time embedding (even)
    num_classes: int | None = None  # labels 0..K-1; K is the NULL label; None: unconditional

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Velocity at ``x [N, features]``, times ``t`` (scalar or ``[N]``), ``labels [N]``."""
        if x.ndim != 2 or x.shape[-1] != self.features:
            raise ValueError(f"x: expected shape [N, {self.features}], got {x.shape}")
        n = x.shape[0]
        t = broadcast_time(t, n)
        temb = sinusoidal_embedding(t, self.time_embed_dim)
        temb = nn.Dense(self.hidden, name="time_in")(temb)
        temb = nn.Dense(self.hidden, name="time_out")(nn.silu(temb))
        h = nn.Dense(self.hidden, name="x_in")(x) + temb
        lemb = label_embedding(self, labels, n, self.num_classes, self.hidden)
        if lemb is not None:
            h = h + lemb
        for i in range(self.depth):
            r = nn.Dense(self.hidden, name=f"block{i}_a")(nn.silu(h))
            h = h + nn.Dense(self.hidden, name=f"block{i}_b")(nn.silu(r))
        return nn.Dense(self.features, name="out")(nn.silu(h))
