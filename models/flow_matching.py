"""Rectified-flow / OT-CFM training objective and an optax train step.

Conditional flow matching with the linear interpolant (Lipman et al. 2023,
eq. 22-23 with sigma_min = 0; Liu et al. 2023, rectified flow; REFERENCES
sec. 1), in inferax's time convention (t = 0 noise, t = 1 data):

    x0 ~ N(0, I),  t ~ U[0, 1],  x_t = (1 - t) x0 + t x1,
    L(theta) = E || v_theta(x_t, t, y) - (x1 - x0) ||^2.

For classifier-free guidance (Ho & Salimans 2022) each label is replaced by
the NULL label with probability ``p_uncond``, so one network learns both the
conditional and the unconditional velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

ApplyFn = Callable[..., jax.Array]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
        step: int32 scalar, the number of updates applied so far.
        params: model parameters.
        opt_state: optax optimizer state.
        ema_params: exponential moving average of ``params`` (``None`` when
            the train step keeps no EMA).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None


def init_train_state(
    params: Any, optimizer: optax.GradientTransformation, *, ema_decay: float | None = None
) -> TrainState:
    """A step-0 ``TrainState``; with ``ema_decay`` the EMA starts at ``params``."""
    ema = jax.tree.map(jnp.asarray, params) if ema_decay is not None else None
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ema)


def _check_p_uncond(p_uncond, null_label) -> None:
    if not isinstance(p_uncond, int | float) or not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond: expected a probability in [0, 1], got {p_uncond!r}")
    if p_uncond > 0 and null_label is None:
        raise ValueError(
            f"null_label: required when p_uncond > 0 (got p_uncond={p_uncond}); "
            "use inferax.models.mlp.null_label(num_classes)"
        )


def flow_matching_loss(
    params: Any,
    apply_fn: ApplyFn,
    key: jax.Array,
    x1: jax.Array,
    labels: jax.Array | None = None,
    *,
    p_uncond: float = 0.0,
    null_label: int | None = None,
) -> jax.Array:
    """Monte Carlo estimate of the rectified-flow loss on one batch.

    The key is split as ``k_x0, k_t, k_drop = jax.random.split(key, 3)``:
    ``x0 = normal(k_x0, x1.shape)``, ``t = uniform(k_t, (N,))``, and labels are
    dropped where ``bernoulli(k_drop, p_uncond, (N,))``. The loss is the mean
    squared error over every element (batch and event axes), i.e. the squared
    norm above divided by the event size.

    Args:
        params: network parameters.
        apply_fn: ``apply_fn(params, x_t, t [N])`` or, with labels,
            ``apply_fn(params, x_t, t [N], labels [N])`` -> velocity like ``x_t``.
        key: PRNG key.
        x1: ``[N, *event]`` data batch.
        labels: optional int ``[N]`` labels.
        p_uncond: probability of replacing a label by ``null_label``.
        null_label: the NULL label index (required when ``p_uncond > 0``).

    Returns:
        Scalar float32 loss.
    """
    _check_p_uncond(p_uncond, null_label)
    x1 = jnp.asarray(x1)
    if x1.ndim < 2:
        raise ValueError(f"x1: expected a batch [N, *event] with ndim >= 2, got shape {x1.shape}")
    n = x1.shape[0]
    if labels is not None and jnp.shape(labels) != (n,):
        raise ValueError(f"labels: expected shape ({n},) to match x1, got {jnp.shape(labels)}")
    k_x0, k_t, k_drop = jax.random.split(key, 3)
    x0 = jax.random.normal(k_x0, x1.shape, x1.dtype)
    t = jax.random.uniform(k_t, (n,), x1.dtype)
    tb = t.reshape((n,) + (1,) * (x1.ndim - 1))
    xt = (1.0 - tb) * x0 + tb * x1
    target = x1 - x0
    if labels is None:
        v = apply_fn(params, xt, t)
    else:
        labels = jnp.asarray(labels)
        if p_uncond > 0:
            drop = jax.random.bernoulli(k_drop, p_uncond, (n,))
            labels = jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)
        v = apply_fn(params, xt, t, labels)
    if v.shape != x1.shape:
        raise ValueError(f"apply_fn: expected a velocity of shape {x1.shape}, got {v.shape}")
    return jnp.mean(jnp.square(v - target))


def make_train_step(
    apply_fn: ApplyFn,
    optimizer: optax.GradientTransformation,
    *,
    p_uncond: float = 0.0,
    null_label: int | None = None,
    ema_decay: float | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array | None], tuple[TrainState, jax.Array]]:
    """A jitted ``step(state, key, x1, labels) -> (state, loss)`` of flow matching.

    Args:
        apply_fn: network, as in ``flow_matching_loss``.
        optimizer: any optax ``GradientTransformation``.
        p_uncond: label-dropout probability for classifier-free guidance.
        null_label: NULL label index (required when ``p_uncond > 0``).
        ema_decay: if set, ``state.ema_params <- d * ema + (1 - d) * params``
            after each update (the state must come from
            ``init_train_state(..., ema_decay=...)``).
    """
    _check_p_uncond(p_uncond, null_label)
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay: expected a number in [0, 1) or None, got {ema_decay!r}")

    def loss_fn(params, key, x1, labels):
        return flow_matching_loss(
            params, apply_fn, key, x1, labels, p_uncond=p_uncond, null_label=null_label
        )

    @jax.jit
    def step(
        state: TrainState, key: jax.Array, x1: jax.Array, labels: jax.Array | None = None
    ) -> tuple[TrainState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(state.params, key, x1, labels)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema_decay is not None:
            if ema is None:
                raise ValueError(
                    "state: ema_decay is set but state.ema_params is None; "
                    "build the state with init_train_state(..., ema_decay=...)"
                )
            ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
        return TrainState(state.step + 1, params, opt_state, ema), loss

    return step
