"""Resumable supervised training for the token models (language model, reward models).

``fit`` minimises ``loss_fn(params, batch)`` with optax over minibatches drawn
by index from a dict of arrays, with the step's randomness derived from the run
key and the step number, so that a run resumed from its last checkpoint ends
with the same parameters as an uninterrupted one (as ``train.train`` does for
flow matching). Checkpoints go through ``checkpoint.Checkpointer`` (integrity
records, no non-finite saves); a NaN loss stops training with
``NonFiniteError`` naming the step. ``fit_or_restore`` caches a finished run
under a hash of everything that determines it (``cache.cache_record``).

Losses: ``lm_loss`` (next-token cross-entropy on the solution positions) and
``reward_loss`` (binary cross-entropy of per-position labels, the process
reward model of Lightman et al. 2023 trained on checker labels).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from inferax.models import checkpoint, train
from inferax.models.cache import cache_record
from inferax.models.checkpoint import Checkpointer, DirectoryLock, NonFiniteError
from inferax.sampling import _checks


def lm_loss(apply_fn: Callable) -> Callable:
    """``loss(params, batch)``: mean next-token cross-entropy where ``batch["loss_mask"]``.

    ``batch["tokens"] [B, L]``; the mask at position ``t`` weights the
    prediction of token ``t + 1``.
    """

    def loss(params, batch):
        toks, m = batch["tokens"], batch["loss_mask"][:, :-1]
        logits = apply_fn(params, toks)[:, :-1]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:])
        return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)

    return loss


def reward_loss(apply_fn: Callable) -> Callable:
    """``loss(params, batch)``: binary cross-entropy of ``batch["labels"] [B, L, C]``
    against ``apply_fn(params, tokens, mask) [B, L, C]`` logits, where
    ``batch["label_mask"] [B, L, C]``."""

    def loss(params, batch):
        logits = apply_fn(params, batch["tokens"], batch["mask"])
        bce = optax.sigmoid_binary_cross_entropy(logits, batch["labels"])
        m = batch["label_mask"]
        return jnp.sum(bce * m) / jnp.maximum(jnp.sum(m), 1.0)

    return loss


def fit(
    key: jax.Array,
    *,
    loss_fn: Callable[[Any, dict], jax.Array],
    params: Any,
    data: dict,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    workdir: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    log_every: int = 100,
    max_loss: float | None = None,
) -> tuple[Any, np.ndarray]:
    """Trains ``params`` by minibatch optax updates, resuming from ``workdir``.

    Args:
        key: PRNG key of the run (batches from ``fold_in(key, step)``).
        loss_fn: ``loss(params, batch) -> scalar``.
        params: initial parameters.
        data: dict of arrays sharing the leading axis ``M``.
        optimizer: optax transformation.
        num_steps: updates in the run.
        batch_size: rows per update (drawn uniformly with replacement).
        workdir: checkpoints under ``workdir/checkpoints``; None for none.
        checkpoint_every: steps between checkpoints.
        log_every: steps between absl log lines.
        max_loss: loss ceiling (see ``run_updates``).

    Returns:
        ``(params, losses [num_steps])``.

    Raises:
        NonFiniteError: at the first non-finite loss (the step is named).
        DivergedError: a loss above ``max_loss`` (default: 1000x the first
            loss), or a run of >= 50 steps whose loss did not go down.
        ValueError: on bad arguments.
    """
    num_steps = _checks.positive_int(num_steps, "num_steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    sizes = {k: np.shape(v)[0] for k, v in data.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(f"data: expected arrays sharing a leading axis M >= 1, got {sizes}")
    m = next(iter(sizes.values()))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    state = {"params": params, "opt": optimizer.init(params)}

    @jax.jit
    def update(state, step, data):
        idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, m)
        batch = {k: v[idx] for k, v in data.items()}
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        upd, opt = optimizer.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], upd), "opt": opt}, loss

    state, losses = run_updates(
        update, state, data, num_steps=num_steps, workdir=workdir,
        checkpoint_every=checkpoint_every, log_every=log_every, tag="fit",
        max_loss=max_loss,
    )  # fmt: skip
    return state["params"], losses


def run_updates(
    update: Callable, state: Any, data: Any, *, num_steps: int,
    workdir: str | os.PathLike | None, checkpoint_every: int, log_every: int, tag: str,
    max_loss: float | None = None,
) -> tuple[Any, np.ndarray]:  # fmt: skip
    """The resumable training loop shared by the trainers of this package.

    Calls ``state, loss = update(state, step, data)`` for the steps not yet done,
    checkpoints ``{"state", "losses"}`` under ``workdir/checkpoints`` every
    ``checkpoint_every`` steps (and at the end), resumes from the latest
    checkpoint, and stops at the first non-finite loss or the first loss
    above ``max_loss`` (default ``train.loss_ceiling``: 1000x the first loss),
    and refuses a finished run whose loss did not go down
    (``train.check_improvement``).

    Returns:
        ``(state, losses [num_steps])``.

    Raises:
        NonFiniteError: at the first non-finite loss (the step is named).
        DivergedError: a loss above the ceiling, or no improvement.
    """
    ckpt, history, start = None, [], 0
    if workdir is not None:
        ckpt = Checkpointer(os.path.join(os.fspath(workdir), "checkpoints"), max_to_keep=2)
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            abstract = checkpoint.abstract_tree(state)

            def target(step):
                return {"state": abstract, "losses": jax.ShapeDtypeStruct((step,), jnp.float32)}

            start, restored = ckpt.restore_latest(target, delete_bad=True)
            state = restored["state"]
            history.append(np.asarray(restored["losses"]))
            logging.info("%s: resumed at step %d from %s", tag, start, ckpt.directory)
        pending = []
        for step in range(start, num_steps):
            state, loss = update(state, step, data)
            pending.append(loss)
            done = step + 1
            if done % log_every and done % checkpoint_every and done != num_steps:
                continue
            chunk = np.asarray(jnp.stack(pending), np.float32)
            pending = []
            if not np.all(np.isfinite(chunk)):
                bad = done - len(chunk) + int(np.argmin(np.isfinite(chunk))) + 1
                msg = f"{tag}: loss {chunk[~np.isfinite(chunk)][0]} at step {bad} is not finite"
                logging.error("%s", msg)
                raise NonFiniteError(msg)
            first = np.concatenate(history)[0] if history else chunk[0]
            train.check_ceiling(chunk, done - len(chunk) + 1, train.loss_ceiling(first, max_loss),
                                tag)  # fmt: skip
            history.append(chunk)
            if done % log_every == 0 or done == num_steps:
                logging.info("%s: step %d/%d loss %.4f", tag, done, num_steps, float(chunk.mean()))
            if ckpt is not None and (done % checkpoint_every == 0 or done == num_steps):
                ckpt.save(done, {"state": state, "losses": np.concatenate(history)}, force=True)
    finally:
        if ckpt is not None:
            ckpt.close()
    losses = np.concatenate(history)
    train.check_improvement(losses, tag)
    return state, losses


def fit_or_restore(key: jax.Array, *, workdir: str | os.PathLike, spec: Any, **kwargs):
    """``fit`` cached under ``workdir/<hash>`` of the key, ``spec``, initial params and data.

    ``spec`` (JSON-like) must describe what the arguments do not show: the
    model's fields, the loss, the optimizer settings. The entry is locked
    while training; an interrupted entry resumes.
    """
    record = cache_record(
        key,
        spec=spec,
        apply_fn=None,
        params_init=kwargs["params"],
        data=np.concatenate(
            [np.asarray(v).reshape(len(v), -1) for v in kwargs["data"].values()], 1
        ).astype(np.float32),
        num_steps=kwargs["num_steps"],
        batch_size=kwargs["batch_size"],
    )
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    entry = os.path.join(os.path.abspath(os.fspath(workdir)), digest)
    with DirectoryLock(entry, what="model cache entry"):
        with open(os.path.join(entry, "spec.json"), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        return fit(key, workdir=entry, **kwargs)
