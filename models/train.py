"""A resumable flow-matching training loop with orbax checkpoints.

Every step's randomness is derived from the run key and the step number,
``k_batch, k_loss = split(fold_in(key, step))``, and batches are drawn by
index from the data array (or from a sampler ``data(k_batch, batch_size)``).
No Python RNG state exists, so a run stopped after any checkpoint and started
again with the same arguments and ``workdir`` continues from the saved
``TrainState`` and ends with bit-identical parameters to an uninterrupted run.

Each update is one call of a single jitted function (batch selection, loss,
gradient, optax update), compiled once per ``train`` call.

Training stops with ``NonFiniteError`` (and an absl error line) at the first
NaN or infinite loss or parameter, before anything non-finite is saved, so the
last finite checkpoint survives; a resume restores the newest checkpoint that
passes its integrity check. ``train_or_restore`` caches a finished model under
a key that hashes everything that determines it (see ``cache_record``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from inferax.models import checkpoint
from inferax.models.cache import CACHE_VERSION, cache_record, record_differences
from inferax.models.checkpoint import Checkpointer, DirectoryLock, DivergedError, NonFiniteError
from inferax.models.flow_matching import (
    ApplyFn,
    TrainState,
    init_train_state,
    make_train_step,
)
from inferax.sampling import _checks

__all__ = [
    "CACHE_VERSION",
    "MIN_STEPS_FOR_IMPROVEMENT",
    "cache_record",
    "check_ceiling",
    "check_improvement",
    "loss_ceiling",
    "make_optimizer",
    "record_differences",
    "train",
    "train_or_restore",
]

DataSampler = Callable[[jax.Array, int], Any]


def make_optimizer(
    learning_rate: float = 1e-3,
    num_steps: int = 10_000,
    *,
    warmup_steps: int | None = None,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0 at ``num_steps``, and grad clipping.

    Args:
        learning_rate: peak learning rate.
        num_steps: length of the schedule (the run's number of updates).
        warmup_steps: steps of linear warm-up from 0; ``None`` picks
            ``min(100, num_steps // 10)``, valid for any ``num_steps >= 1``.
        weight_decay: AdamW's decoupled weight decay.
        clip_norm: global gradient-norm clip, or ``None`` for none.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    num_steps = _checks.positive_int(num_steps, "num_steps")
    if warmup_steps is None:
        warmup_steps = min(100, num_steps // 10)
    if warmup_steps < 0 or warmup_steps >= num_steps:
        raise ValueError(
            f"warmup_steps: expected 0 <= warmup_steps < num_steps = {num_steps}, "
            f"got {warmup_steps!r}"
        )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps, num_steps, end_value=0.0
    )
    adam = optax.adamw(schedule, weight_decay=weight_decay)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


# Divergence checks shared by every trainer of this package (``train``, ``lm_train``,
# ``ebt_train``): a run whose loss leaves a ceiling stops at once, and a finished run
# whose loss did not go down is refused, so an experiment never publishes verdicts on a
# model trained by gradient ascent or blown up to 1e33.
MIN_STEPS_FOR_IMPROVEMENT = 50  # shorter runs (smoke tests) are too noisy to judge
CEILING_FACTOR = 1e3


def loss_ceiling(initial: float, max_loss: float | None = None) -> float:
    """The loss above which training stops: ``max_loss`` if given, else
    ``1e3 * max(|initial loss|, 1)``."""
    if max_loss is not None:
        return float(max_loss)
    return CEILING_FACTOR * max(abs(float(initial)), 1.0)


def check_ceiling(chunk: np.ndarray, first_step: int, ceiling: float, tag: str) -> None:
    """``DivergedError`` naming the first step whose loss exceeds ``ceiling``."""
    over = np.flatnonzero(chunk > ceiling)
    if over.size:
        i = int(over[0])
        _fail(
            f"{tag}: loss {chunk[i]:.4g} at step {first_step + i} is above the ceiling "
            f"{ceiling:.4g} (max_loss); training diverged and stopped",
            DivergedError,
        )


def check_improvement(losses: np.ndarray, tag: str) -> None:
    """``DivergedError`` when a run of ``>= MIN_STEPS_FOR_IMPROVEMENT`` steps ends with a
    mean loss (last 10%, at least 5 steps) no lower than it started (first 10%)."""
    n = len(losses)
    if n < MIN_STEPS_FOR_IMPROVEMENT:
        return
    w = max(5, n // 10)
    first, last = float(np.mean(losses[:w])), float(np.mean(losses[-w:]))
    if not last < first:
        _fail(
            f"{tag}: loss did not improve over {n} steps (mean of the first {w} steps "
            f"{first:.4g}, of the last {w} {last:.4g}); training diverged",
            DivergedError,
        )


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
    max_loss: float | None = None,
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
        max_loss: stop (``DivergedError``) at the first loss above it; None:
            ``loss_ceiling`` of the first loss (1000x it).

    Returns:
        ``(params, losses)``: the final parameters (their EMA when
            ``ema_decay`` is set) and the ``[num_steps]`` float32 loss of every step.

    Raises:
        ValueError: on bad arguments, or when ``workdir`` holds a checkpoint
            beyond ``num_steps`` or of a different model.
        NonFiniteError: at the first non-finite loss or parameters (the step
            is named; nothing non-finite is saved).
        DivergedError: a loss above ``max_loss``, or a run of at least
            ``MIN_STEPS_FOR_IMPROVEMENT`` steps whose loss did not go down.
        CorruptCheckpointError: when no checkpoint in ``workdir`` passes its
            integrity check.
    """
    num_steps = _checks.non_negative_int(num_steps, "num_steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    checkpoint_every = _checks.positive_int(checkpoint_every, "checkpoint_every")
    log_every = _checks.positive_int(log_every, "log_every")
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
            abstract = checkpoint.abstract_tree(state)

            def target(step):
                return {"state": abstract, "losses": jax.ShapeDtypeStruct((step,), jnp.float32)}

            start, restored = ckpt.restore_latest(target, delete_bad=True)
            state = restored["state"]
            history.append(np.asarray(restored["losses"]))
            done = "restored the finished run" if start == num_steps else "resumed"
            logging.info("train: %s at step %d from %s", done, start, ckpt.directory)
        if start < num_steps:
            state = _run(
                state, key, step_fn, data, data_arr, labels_arr, batch_size,
                start, num_steps, checkpoint_every, log_every, ckpt, history, progress,
                max_loss,
            )  # fmt: skip
    finally:
        if ckpt is not None:
            ckpt.close()
    losses = np.concatenate(history) if history else np.zeros((0,), np.float32)
    check_improvement(losses, "train")
    params = state.ema_params if ema_decay is not None else state.params
    bad = checkpoint.first_non_finite(params)
    if bad is not None:
        _fail(f"train: parameter {bad} is not finite after step {num_steps}")
    return params, losses


def _fail(message: str, error: type = NonFiniteError) -> None:
    logging.error("%s", message)
    raise error(message)


def _run(
    state, key, step_fn, data, data_arr, labels_arr, batch_size,
    start, num_steps, checkpoint_every, log_every, ckpt, history, progress, max_loss,
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
        chunk = np.asarray(jnp.stack(pending), np.float32)
        if not np.all(np.isfinite(chunk)):
            idx = int(np.argmin(np.isfinite(chunk)))
            where = f"; the last checkpoint is step {ckpt.latest_step()}" if ckpt else ""
            if bar is not None:
                bar.close()
            _fail(
                f"train: loss {chunk[idx]} at step {step - len(pending) + 1 + idx} "
                f"(of {num_steps}) is not finite; training stopped{where}"
            )
        first = np.concatenate(history)[0] if history else chunk[0]
        check_ceiling(chunk, step - len(pending) + 1, loss_ceiling(first, max_loss), "train")
        history.append(chunk)
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
            try:
                ckpt.save(step, {"state": state, "losses": np.concatenate(history)}, force=True)
            except NonFiniteError as e:
                _fail(f"train: step {step}: {e}; training stopped")
    if bar is not None:
        bar.close()
    return state


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def train_or_restore(
    key: jax.Array,
    *,
    workdir: str | os.PathLike,
    spec: Any = None,
    refuse_mismatch: bool = False,
    **kwargs: Any,
) -> tuple[Any, np.ndarray]:
    """``train`` with a cache keyed by everything that determines the model.

    The run goes to ``workdir/<key>/`` where ``<key>`` is a hash of
    ``cache_record(key, spec=spec, **kwargs)`` (written beside it as
    ``spec.json``): a finished entry is restored without compiling a step, an
    interrupted one resumes, and a different seed, architecture, data or
    ``spec`` trains into a new entry. The entry is locked (``DirectoryLock``)
    for the duration, so a concurrent run with the same key fails at once.

    Args:
        key: PRNG key of the run (part of the cache key).
        workdir: cache root for this model.
        spec: JSON-like description of what the arguments do not show (config
            section with the optimizer settings, data definition, code version).
        refuse_mismatch: if ``workdir`` holds entries and none matches, raise
            instead of training a new one.
        **kwargs: the other arguments of ``train``.

    Raises:
        ValueError: with ``refuse_mismatch``, one line naming the fields in
            which the newest cached entry differs.
        DirectoryLockedError: if another run is training this entry.
    """
    if workdir is None:
        raise ValueError("workdir: expected a directory to cache the trained model in, got None")
    defaults = {
        name: p.default
        for name, p in inspect.signature(train).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    record = cache_record(key, spec=spec, **{**defaults, **kwargs})
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    root = os.path.abspath(os.fspath(workdir))
    entry = os.path.join(root, digest)
    others = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name, "spec.json")
            if name != digest and os.path.isfile(path):
                others.append((os.path.getmtime(path), name, path))
    if others and not os.path.isfile(os.path.join(entry, "spec.json")):
        _, name, path = max(others)
        diff = record_differences(_read_json(path) or {}, record)
        if refuse_mismatch:
            raise ValueError(
                f"workdir: the model cached in {os.path.join(root, name)} differs in: {diff}"
            )
        logging.info("train_or_restore: new cache entry %s (differs from %s in: %s)",
                     digest, name, diff)  # fmt: skip
    with DirectoryLock(entry, what="model cache entry"):
        spec_path = os.path.join(entry, "spec.json")
        if not os.path.isfile(spec_path):
            with open(spec_path + ".tmp", "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.replace(spec_path + ".tmp", spec_path)
        return train(key, workdir=entry, **kwargs)
