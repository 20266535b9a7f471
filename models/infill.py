"""A mask-conditioned infilling flow on the 8x8 digits (F5-TTS-style conditioning).

F5-TTS completes speech from an audio prompt: the network sees the noisy
state on the frames to generate, the observed frames and the mask, and its
flow-matching loss counts the generated frames only (Chen et al. 2024, sec.
3.1). Here the "frames" are pixels: ``InfillVelocity`` maps

    (x_t on the unknown pixels, the observed pixels, the mask, t) -> velocity,

with mask = 1 on observed pixels. Training reuses ``models.train`` (cache,
checkpoints, resume, CFG dropout): each training row's int "label" indexes its
(observed pixels, mask) pair, and the NULL label drops the whole condition
(mask 0, nothing observed) with probability ``p_uncond``, so one network
learns the conditional and the unconditional velocity (classifier-free
guidance). On observed pixels the training wrapper returns the exact target
(x1 - x_t) / (1 - t) = x1 - x0, so only the unknown pixels carry loss.

Sampling (``infill_velocity``, ``initial_state``): observed pixels start at
their values and get zero velocity, so every solver step keeps them exactly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inferax.models import mlp, train
from inferax.sampling import cost, guidance

MASK_KINDS = ("bottom", "random")
IMAGE_SHAPE = (8, 8, 1)


def make_masks(kind: str, n: int, key: jax.Array | None = None) -> jax.Array:
    """``[n, 8, 8, 1]`` float masks, 1 = observed pixel.

    ``"bottom"``: the top four rows observed, the bottom half to complete.
    ``"random"``: every pixel observed with probability 1/2, mask i drawn
    from ``fold_in(key, i)``.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind: expected one of {MASK_KINDS}, got {kind!r}")
    if kind == "bottom":
        rows = (jnp.arange(8) < 4).astype(jnp.float32)[:, None, None]
        return jnp.broadcast_to(rows, (n, *IMAGE_SHAPE)).astype(jnp.float32)
    if key is None:
        raise ValueError("key: required for random masks, got None")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, IMAGE_SHAPE))(keys).astype(jnp.float32)


class InfillVelocity(nn.Module):
    """Velocity ``v(x_t, t, observed, mask)`` on 8x8 images: a residual MLP with SiLU.

    The input is ``[x_t (1 - mask), observed * mask, mask]`` flattened (3 x 64)
    plus a sinusoidal time embedding; the output is a velocity for every pixel
    (the sampler uses the unknown ones).
    """

    hidden: int = 256  # width of every hidden layer
    depth: int = 3  # number of residual blocks
    time_embed_dim: int = 64  # width of the sinusoidal time embedding (even)

    @nn.compact
    def __call__(self, x, t, observed, mask):
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"x: expected shape [N, 8, 8, 1], got {x.shape}")
        n = x.shape[0]
        for name, a in (("observed", observed), ("mask", mask)):
            if a.shape != x.shape:
                raise ValueError(f"{name}: expected shape {x.shape} (that of x), got {a.shape}")
        inp = jnp.concatenate([x * (1 - mask), observed * mask, mask], axis=-1).reshape(n, -1)
        temb = mlp.sinusoidal_embedding(mlp.broadcast_time(t, n), self.time_embed_dim)
        temb = nn.Dense(self.hidden, name="time_out")(nn.silu(nn.Dense(self.hidden)(temb)))
        h = nn.Dense(self.hidden, name="x_in")(inp) + temb
        for i in range(self.depth):
            r = nn.Dense(self.hidden, name=f"block{i}_a")(nn.silu(h))
            h = h + nn.Dense(self.hidden, name=f"block{i}_b")(nn.silu(r))
        return nn.Dense(64, name="out")(nn.silu(h)).reshape(x.shape)


def training_apply(model: InfillVelocity, observed_table, mask_table):
    """``apply(params, x_t, t [N], labels [N])`` for ``models.train``: label i conditions on
    ``(observed_table[i], mask_table[i])``; the NULL label ``len(table)`` on nothing.

    On observed pixels it returns the exact flow-matching target (x1 - x_t) / (1 - t)
    (x1 is the observed value), so the loss there is ~0 and only unknown pixels train.
    """
    observed_table = jnp.asarray(observed_table)
    mask_table = jnp.asarray(mask_table)
    null = observed_table.shape[0]

    def infill_apply(params, x, t, labels):
        idx = jnp.clip(labels, 0, null - 1)
        keep = (labels != null).astype(x.dtype)[:, None, None, None]
        mask = mask_table[idx] * keep
        observed = observed_table[idx] * mask
        v = model.apply(params, x, t, observed, mask)
        tb = jnp.reshape(jnp.broadcast_to(t, (x.shape[0],)), (-1, 1, 1, 1))
        exact = (observed - x) / jnp.maximum(1.0 - tb, 1e-3)
        return mask * exact + (1 - mask) * v

    return infill_apply


def train_infill(
    key: jax.Array,
    images,
    *,
    model: InfillVelocity,
    workdir: str,
    spec: dict,
    mask_kind: str = "bottom",
    masks_per_image: int = 1,
    num_steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup_steps: int = 100,
    p_uncond: float = 0.2,
) -> tuple[Any, np.ndarray]:
    """Trains (or restores from the ``train_or_restore`` cache) an infilling flow.

    Every image appears ``masks_per_image`` times, each with its own mask
    (``make_masks(mask_kind, ...)``, drawn from a key folded from ``key``).

    Returns:
        ``(params, losses)``.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images: expected shape [N, 8, 8, 1], got {images.shape}")
    if masks_per_image < 1:
        raise ValueError(f"masks_per_image: expected a positive int, got {masks_per_image}")
    table = jnp.tile(images, (masks_per_image, 1, 1, 1))
    masks = make_masks(mask_kind, table.shape[0], jax.random.fold_in(key, 7))
    labels = jnp.arange(table.shape[0], dtype=jnp.int32)
    n = 2
    params0 = model.init(jax.random.key(0), table[:n], jnp.zeros(n), table[:n], masks[:n])
    return train.train_or_restore(
        key,
        workdir=workdir,
        spec={
            **spec,
            "mask_kind": mask_kind,
            "masks_per_image": masks_per_image,
            "model": repr(model),
        },  # fmt: skip
        apply_fn=training_apply(model, table * masks, masks),
        params_init=params0,
        data=table,
        labels=labels,
        optimizer=train.make_optimizer(lr, num_steps, warmup_steps=warmup_steps),
        num_steps=num_steps,
        batch_size=batch_size,
        p_uncond=p_uncond,
        null_label=int(table.shape[0]),
        checkpoint_every=max(num_steps // 2, 1),
        log_every=max(num_steps // 4, 1),
    )


def initial_state(noise, observed, mask):
    """The sampler's start: observed pixels at their values, unknown pixels at the noise."""
    return mask * observed + (1 - mask) * noise


def infill_velocity(model, params, observed, mask, guidance_scale: float = 0.0):
    """The sampling velocity ``(x, t) -> v``, zero on observed pixels (so they stay exact).

    With ``guidance_scale`` w > 0, classifier-free guidance v_c + w (v_c - v_u) on the
    unknown pixels, the unconditional branch seeing no observed pixels (mask 0), as
    one doubled batch (``guidance.cfg``; 2 NFE per call, declared with ``cost``).
    """
    observed = observed * mask
    free = 1 - mask

    def cond_v(x, t, c):
        return model.apply(params, x, t, c[0], c[1])

    if guidance_scale == 0:
        return lambda x, t: free * cond_v(x, t, (observed, mask))
    guided = guidance.cfg(cond_v, (observed, mask), (0.0, 0.0), guidance_scale)
    return cost.with_cost(lambda x, t: free * guided(x, t), 2)
