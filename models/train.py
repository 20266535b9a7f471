"""A resumable flow-matching training loop with orbax checkpoints.

Every step's randomness is derived from the run key and the step number,
``k_batch, k_loss = split(fold_in(key, step))``, and batches are drawn by
index from the data array (or from a sampler ``data(k_batch, batch_size)``).
No Python RNG state exists, so a run stopped after any checkpoint and started
again with the same arguments and ``workdir`` continues from the saved
``TrainState`` and ends with bit-identical parameters to an uninterrupted run.

Each update is one call of a single jitted function (batch selection, loss,
gradient, optax update), compiled once per ``train`` call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from inferax.models.checkpoint import Checkpointer
from inferax.models.flow_matching import (
    ApplyFn,
    TrainState,
    init_train_state,
    make_train_step,
)

DataSampler = Callable[[jax.Array, int], Any]


def make_optimizer(
    learning_rate: float = 1e-3,
    num_steps: int = 10_000,
    *,
    warmup_steps: int = 100,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0 at ``num_steps``, and grad clipping."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    if num_steps < 1 or warmup_steps < 0 or warmup_steps >= max(num_steps, 1):
        raise ValueError(
            f"warmup_steps: expected 0 <= warmup_steps < num_steps = {num_steps}, "
            f"got {warmup_steps!r}"
        )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps, num_steps, end_value=0.0
    )
    adam = optax.adamw(schedule, weight_decay=weight_decay)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _batch_fn(data: Any, batch_size: int) -> Callable:
    """``batch(k, data_arr, labels_arr) -> (x1, labels or None)``."""
    if callable(data):

        def from_sampler(k, _, __):
            out = data(k, batch_size)
            return tuple(out) if isinstance(out, tuple | list) else (out, None)

        return from_sampler

    def from_array(k, data_arr, labels_arr):
        idx = jax.random.randint(k, (batch_size,), 0, data_arr.shape[0])
        return data_arr[idx], (None if labels_arr is None else labels_arr[idx])

    return from_array


def _checked_data(data: Any, labels: Any) -> tuple[jax.Array | None, jax.Array | None]:
    if callable(data):
        if labels is not None:
            raise ValueError("labels: must be None when data is a sampler (it returns its labels)")
        return None, None
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data: expected an array [M, *event] with M >= 1, got shape {data.shape}")
    if labels is not None:
        labels = jnp.asarray(labels)
        if labels.shape != (data.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"labels: expected integer labels of shape ({data.shape[0]},) to match data, "
                f"got {labels.dtype} {labels.shape}"
            )
    return data, labels


def train(
    key: jax.Array,
    *,
    apply_fn: ApplyFn,
    params_init: Any,
    data: jax.Array | np.ndarray | DataSampler,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    workdir: str | os.PathLike | None,
    checkpoint_every: int = 1000,
    labels: jax.Array | np.ndarray | None = None,
    p_uncond: float = 0.0,
    null_label: int | None = None,
    ema_decay: float | None = None,
    log_every: int = 500,
    max_to_keep: int = 2,
    progress: bool = False,
) -> tuple[Any, np.ndarray]:
    """Trains a velocity network by flow matching, resuming from ``workdir``.

    Checkpoints ``{"state": TrainState, "losses": [step]}`` under
    ``workdir/checkpoints`` every ``checkpoint_every`` steps and at
    ``num_steps``. Called again with the same ``workdir``, it restores the
    latest checkpoint and continues; with a checkpoint at ``num_steps`` it
    trains nothing and returns the saved result.

    Args:
        key: PRNG key of the run.
        apply_fn: ``apply_fn(params, x, t [N], labels [N] | absent) -> v``.
        params_init: initial parameters (also the structure for restoring).
        data: ``[M, *event]`` array, batches are drawn by uniform random index
            (with replacement); or a sampler ``data(key, batch_size)`` returning
            ``x1`` or ``(x1, labels)``.
        optimizer: optax transformation, e.g. ``make_optimizer(...)``.
        num_steps: total number of updates of the run.
        batch_size: samples per update.
        workdir: directory for checkpoints; ``None`` trains without any.
        checkpoint_every: steps between checkpoints.
        labels: int ``[M]`` labels aligned with ``data`` (array data only).
        p_uncond: label-dropout probability for classifier-free guidance.
        null_label: NULL label index (required when ``p_uncond > 0``).
        ema_decay: if set, keep an EMA of the parameters and return it.
        log_every: steps between absl log lines of the mean loss.
        max_to_keep: checkpoints kept on disk.
        progress: show a tqdm progress bar.

    Returns:
        ``(params, losses)``: the final parameters (their EMA when
        ``ema_decay`` is set) and the ``[num_steps]`` float32 loss of every step.

    Raises:
        ValueError: on bad arguments, or when ``workdir`` holds a checkpoint
            beyond ``num_steps``.
    """
    num_steps = _int_arg("num_steps", num_steps, 0)
    batch_size = _int_arg("batch_size", batch_size, 1)
    checkpoint_every = _int_arg("checkpoint_every", checkpoint_every, 1)
    log_every = _int_arg("log_every", log_every, 1)
    data_arr, labels_arr = _checked_data(data, labels)
    step_fn = make_train_step(
        apply_fn, optimizer, p_uncond=p_uncond, null_label=null_label, ema_decay=ema_decay
    )
    state = init_train_state(params_init, optimizer, ema_decay=ema_decay)
    history: list[np.ndarray] = []
    ckpt = None
    if workdir is not None:
        ckpt = Checkpointer(
            os.path.join(os.fspath(workdir), "checkpoints"),
            max_to_keep=max_to_keep,
            save_interval_steps=checkpoint_every,
        )
    try:
        start = 0
        latest = ckpt.latest_step() if ckpt is not None else None
        if latest is not None:
            if latest > num_steps:
                raise ValueError(
                    f"num_steps: expected >= the latest checkpoint step {latest} in {workdir}, "
                    f"got {num_steps}"
                )
            target = {"state": state, "losses": jax.ShapeDtypeStruct((latest,), jnp.float32)}
            restored = ckpt.restore(latest, target)
            state, start = restored["state"], latest
            history.append(np.asarray(restored["losses"]))
            logging.info("train: resumed from step %d in %s", latest, ckpt.directory)
        if start < num_steps:
            state = _run(
                state, key, step_fn, data, data_arr, labels_arr, batch_size,
                start, num_steps, checkpoint_every, log_every, ckpt, history, progress,
            )  # fmt: skip
    finally:
        if ckpt is not None:
            ckpt.close()
    losses = np.concatenate(history) if history else np.zeros((0,), np.float32)
    params = state.ema_params if ema_decay is not None else state.params
    return params, losses


def _run(
    state, key, step_fn, data, data_arr, labels_arr, batch_size,
    start, num_steps, checkpoint_every, log_every, ckpt, history, progress,
) -> TrainState:  # fmt: skip
    batch = _batch_fn(data, batch_size)

    # One jitted update per Python iteration rather than a lax.scan over steps:
    # XLA:CPU runs the gradient of a convolution inside a loop body up to 100x
    # slower than outside one (jax-ml/jax#12868), and per-step dispatch costs
    # little next to an update. Every step runs the same executable, which is
    # what makes resumed runs bit-identical.
    @jax.jit
    def update(state, key, data_arr, labels_arr):
        k_batch, k_loss = jax.random.split(jax.random.fold_in(key, state.step))
        x1, lab = batch(k_batch, data_arr, labels_arr)
        return step_fn(state, k_loss, x1, lab)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start, desc="train", unit="step")
    t0 = time.perf_counter()
    pending: list[jax.Array] = []
    for step in range(start + 1, num_steps + 1):
        state, loss = update(state, key, data_arr, labels_arr)
        pending.append(loss)
        at_log = step % log_every == 0 or step == num_steps
        at_ckpt = ckpt is not None and (step % checkpoint_every == 0 or step == num_steps)
        if not (at_log or at_ckpt):
            continue
        history.append(np.asarray(jnp.stack(pending), np.float32))
        if bar is not None:
            bar.update(len(pending))
        pending = []
        if at_log:
            recent = np.concatenate(history)[-log_every:]
            logging.info(
                "train: step %d/%d  loss %.5f  (%.1f s)",
                step, num_steps, float(recent.mean()), time.perf_counter() - t0,
            )  # fmt: skip
        if at_ckpt:
            ckpt.save(step, {"state": state, "losses": np.concatenate(history)}, force=True)
    if bar is not None:
        bar.close()
    return state


def train_or_restore(
    key: jax.Array, *, workdir: str | os.PathLike, **kwargs
) -> tuple[Any, np.ndarray]:
    """``train`` with a cache: a finished run in ``workdir`` is restored, not retrained.

    Takes the arguments of ``train`` (``workdir`` is required). When
    ``workdir`` holds a checkpoint at exactly ``num_steps``, the saved
    parameters and losses are returned without compiling or running a step;
    otherwise training starts or resumes there.
    """
    if workdir is None:
        raise ValueError("workdir: expected a directory to cache the trained model in, got None")
    num_steps = kwargs.get("num_steps")
    path = os.path.join(os.fspath(workdir), "checkpoints")
    cached = False
    if os.path.isdir(path):
        with Checkpointer(path) as ckpt:
            cached = ckpt.latest_step() == num_steps
    if cached:
        logging.info("train_or_restore: using the finished run cached in %s", path)
    return train(key, workdir=workdir, **kwargs)
