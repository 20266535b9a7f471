"""Rewards (verifiers) for search: classifier log-probabilities and analytic rewards.

Every reward is batched, ``reward_fn(x [N, *event]) -> [N]``, higher is better,
and Flax-free: a model enters as a plain callable (``logits_fn = lambda x:
model.apply(params, x)``). Combine several with ``base.ensemble``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from inferax.sampling import _checks

__all__ = ["classifier_log_prob", "flat", "quadratic"]


def classifier_log_prob(
    logits_fn: Callable[[jax.Array], jax.Array], target: int, *, num_classes: int | None = None
) -> Callable[[jax.Array], jax.Array]:
    """r(x) = log p(target | x) = log_softmax(logits_fn(x))[:, target].

    Args:
        logits_fn: batched ``x [N, *event] -> logits [N, num_classes]``.
        target: the class whose log-probability is the reward.
        num_classes: if given, ``target`` is checked against it now.

    Returns:
        The reward ``x [N, *event] -> [N]`` (float32 log-probabilities); it raises
            ValueError when the logits are not ``[N, C]`` with ``C > target``.

    Raises:
        TypeError: ``logits_fn`` is not callable.
        ValueError: a negative ``target``, or ``target >= num_classes``.
    """
    if not callable(logits_fn):
        raise TypeError(f"logits_fn: expected a callable x -> logits, got {logits_fn!r}")
    target = _checks.non_negative_int(target, "target")
    if num_classes is not None and target >= _checks.positive_int(num_classes, "num_classes"):
        raise ValueError(f"target: expected a class index < {num_classes}, got {target}")

    def reward(x):
        logits = logits_fn(x)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0] or target >= logits.shape[1]:
            raise ValueError(
                f"logits_fn: expected logits [{x.shape[0]}, C] with C > target = {target}, "
                f"got {logits.shape}"
            )
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, target]

    return reward


def quadratic(center, scale: float = 1.0):
    """r(x) = -(scale / 2) ||x - center||^2 (an analytic reward for tests and toys).

    For data p(x), p(x) exp(alpha r(x)) with a Gaussian mixture p is again a
    Gaussian mixture in closed form.
    """
    center = _checks.floating_array(center, "center")
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise TypeError(f"scale: expected a real number, got {scale!r}")

    def reward(x):
        d = (x - center.astype(x.dtype)).reshape(x.shape[0], -1)
        return -0.5 * scale * jnp.sum(d * d, axis=1)

    return reward


def flat():
    """r(x) = 0: every search then returns samples with the model's marginals."""

    def reward(x):
        return jnp.zeros((x.shape[0],), jnp.float32)

    return reward
