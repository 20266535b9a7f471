"""Training Energy-Based Transformers as the paper does (Gladstone et al. 2025, Sec. 3-4).

For a batch, predictions are made by ``energy.minimize`` from random starts
(or replayed earlier predictions) with the learnable step size ``alpha``; the
task loss (smooth-L1 for images, cross-entropy for tokens) is applied to the
prediction after *every* step and averaged. Its gradient runs through
``grad_y E`` (second order: Hessian-vector products, which ``jax.grad`` of a
function containing ``jax.grad`` gives). By default ``y`` is detached at the
start of each step (one-step-deep backpropagation, ``truncate=True``);
``truncate=False`` backpropagates through the whole unrolled chain.

``alpha`` is a parameter with its own learning-rate multiplier, no weight
decay, clamped to ``>= 1e-4`` after each update. The "System 2" regularisers
are options: a random step size ``alpha * U[1/2, 2]`` per example, a random
number of steps in ``[steps_min, steps_max]`` per batch, unscaled Langevin
noise before each step, and a replay buffer of earlier final predictions
(with the data row they belong to) used as starts for part of each batch.

``fit`` is resumable like ``lm_train.fit``: each step's randomness is
``fold_in(key, step)``, the whole training state (parameters, optimizer,
replay buffer) is checkpointed through ``checkpoint.Checkpointer``, and a
resumed run ends with the parameters of an uninterrupted one.
``fit_or_restore`` caches a finished run under a hash of everything that
determines it. The feed-forward baseline trains through the same ``fit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.models import ebt, lm_train
from inferax.models.cache import cache_record
from inferax.models.checkpoint import DirectoryLock
from inferax.sampling import _checks, energy


@dataclasses.dataclass(frozen=True)
class EBTTraining:
    """How an EBT is trained (fields as in the paper's recipe; see the module docstring).

    Attributes:
        lr: peak learning rate of the network (AdamW, warm-up then cosine).
        weight_decay: AdamW weight decay of the network (never of ``alpha``).
        warmup_steps: linear warm-up steps.
        clip_norm: global gradient-norm clip of the network.
        alpha_init: initial step size.
        alpha_lr_mult: learning-rate multiplier of ``alpha`` (Adam, no decay).
        steps_min / steps_max: optimisation steps per training prediction
            (random in between per batch when they differ).
        truncate: detach ``y`` at every step's start (one-step backprop).
        random_alpha: per-example step size ``alpha * U[1/2, 2]``.
        noise: std of the unscaled Langevin noise before each step (0: none).
        replay_fraction: fraction of a batch started from the replay buffer.
        replay_size: buffer slots.
        init_scale: std of the random starts ``y_0 ~ N(0, init_scale^2)``.
    """

    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    clip_norm: float = 1.0
    alpha_init: float = 0.5
    alpha_lr_mult: float = 3.0
    steps_min: int = 2
    steps_max: int = 2
    truncate: bool = True
    random_alpha: bool = False
    noise: float = 0.0
    replay_fraction: float = 0.0
    replay_size: int = 1024
    init_scale: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> EBTTraining:
        """From a dict / ConfigDict; unknown keys are ignored."""
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def validate(self, name: str = "training") -> None:
        _checks.positive_int(self.steps_min, f"{name}.steps_min")
        if _checks.positive_int(self.steps_max, f"{name}.steps_max") < self.steps_min:
            raise ValueError(f"{name}.steps_max: expected >= steps_min = {self.steps_min}, "
                             f"got {self.steps_max}")  # fmt: skip
        if not self.alpha_init >= ebt.ALPHA_MIN:
            raise ValueError(f"{name}.alpha_init: expected >= {ebt.ALPHA_MIN}, got "
                             f"{self.alpha_init}")  # fmt: skip
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"{name}.replay_fraction: expected a number in [0, 1), got "
                             f"{self.replay_fraction}")  # fmt: skip
        if self.noise < 0:
            raise ValueError(f"{name}.noise: expected >= 0, got {self.noise}")


def _schedule(cfg: EBTTraining, num_steps: int):
    warm = min(cfg.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warm, num_steps, end_value=0.0)


def network_optimizer(cfg: EBTTraining, num_steps: int) -> optax.GradientTransformation:
    """Gradient clipping then AdamW with warm-up and cosine decay (also the baseline's)."""
    adam = optax.adamw(_schedule(cfg, num_steps), weight_decay=cfg.weight_decay)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam)


def optimizer(cfg: EBTTraining, num_steps: int) -> optax.GradientTransformation:
    """AdamW for ``params["net"]``; Adam with ``lr * alpha_lr_mult`` and no decay for ``alpha``."""
    net = network_optimizer(cfg, num_steps)
    sched = _schedule(cfg, num_steps)
    alpha = optax.adam(lambda s: sched(s) * cfg.alpha_lr_mult)
    return optax.multi_transform({"net": net, "alpha": alpha},
                                 lambda p: {k: k for k in p})  # fmt: skip


def ebt_params(net_params: Any, cfg: EBTTraining) -> dict:
    return {"net": net_params, "alpha": jnp.asarray(cfg.alpha_init, jnp.float32)}


def ebt_loss(
    energy_apply: Callable, task_loss: Callable, cfg: EBTTraining, encode: Callable | None = None
) -> Callable:
    """``loss(params, batch, key, start) -> (loss, final predictions)``.

    ``energy_apply(net_params, context_row, y) -> scalar``; ``task_loss(pred,
    target) -> scalar`` (a batch mean); ``start`` the ``[B, *event]`` starts;
    ``encode(net_params, context) -> context`` (optional) runs once per batch
    before the minimisation (the part of the network that does not see ``y``).
    """

    def loss(params, batch, key, start):
        context = batch["context"] if encode is None else encode(params["net"], batch["context"])
        k_alpha, k_steps, k_noise = jax.random.split(key, 3)
        b = start.shape[0]
        alpha = ebt.alpha_of(params)
        if cfg.random_alpha:
            alpha = alpha * jax.random.uniform(k_alpha, (b,), minval=0.5, maxval=2.0)
        steps = jax.random.randint(k_steps, (), cfg.steps_min, cfg.steps_max + 1)
        _, info = energy.minimize(
            k_noise, lambda c, y: energy_apply(params["net"], c, y), context, start,
            num_steps=cfg.steps_max, step_size=alpha,
            noise="unscaled" if cfg.noise > 0 else "none", noise_scale=cfg.noise,
            num_active_steps=steps, truncate=cfg.truncate, trajectory=True,
        )  # fmt: skip
        preds = info.trajectory[1:]  # every step's prediction
        per_step = jax.vmap(lambda p: task_loss(p, batch["target"]))(preds)
        w = (jnp.arange(cfg.steps_max) < steps).astype(per_step.dtype)
        return jnp.sum(per_step * w) / jnp.sum(w), info.trajectory[-1]

    return loss


def ff_loss(apply: Callable, task_loss: Callable) -> Callable:
    """The baseline's ``loss(params, batch, key, start)``: one forward prediction."""

    def loss(params, batch, key, start):
        pred = apply(params, batch["context"])
        return task_loss(pred, batch["target"]), pred

    return loss


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


class _Static(NamedTuple):
    """The static part of a training step: one compiled step per distinct value, so that
    ``fit`` called again with the same loss and optimizer objects (another seed, a
    resumed run) reuses the compiled step."""

    loss_fn: Callable
    opt: Any
    batch_size: int
    m: int
    n_rep: int
    size: int
    init_scale: float
    event_shape: tuple
    clamp_alpha: bool


@partial(jax.jit, static_argnames=("st",))
def _update(state, step, data, key, st: _Static):
    k_idx, k_start, k_rep, k_loss = jax.random.split(jax.random.fold_in(key, step), 4)
    idx = jax.random.randint(k_idx, (st.batch_size,), 0, st.m)
    start = st.init_scale * jax.random.normal(k_start, (st.batch_size,) + st.event_shape)
    if st.n_rep:  # replayed rows: their data row and their earlier final prediction
        filled = jnp.minimum(step * st.batch_size, st.size)
        slot = jax.random.randint(k_rep, (st.n_rep,), 0, jnp.maximum(filled, 1))
        use = filled > 0
        idx = idx.at[: st.n_rep].set(jnp.where(use, state["buf_row"][slot], idx[: st.n_rep]))
        start = start.at[: st.n_rep].set(jnp.where(use, state["buf_y"][slot], start[: st.n_rep]))
    batch = _take(data, idx)
    (loss, final), grads = jax.value_and_grad(st.loss_fn, has_aux=True)(
        state["params"], batch, k_loss, start
    )
    upd, opt_state = st.opt.update(grads, state["opt"], state["params"])
    new_params = optax.apply_updates(state["params"], upd)
    if st.clamp_alpha:
        new_params = {**new_params, "alpha": jnp.maximum(new_params["alpha"], ebt.ALPHA_MIN)}
    new = {**state, "params": new_params, "opt": opt_state}
    if st.n_rep:
        slots = (step * st.batch_size + jnp.arange(st.batch_size)) % st.size
        new["buf_y"] = state["buf_y"].at[slots].set(jax.lax.stop_gradient(final))
        new["buf_row"] = state["buf_row"].at[slots].set(idx)
    return new, loss


def fit(
    key: jax.Array,
    *,
    loss_fn: Callable,
    params: Any,
    data: dict,
    opt: optax.GradientTransformation,
    event_shape: tuple,
    num_steps: int,
    batch_size: int,
    cfg: EBTTraining | None = None,
    workdir: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    log_every: int = 100,
    max_loss: float | None = None,
) -> tuple[Any, np.ndarray]:
    """Trains by minibatch updates of ``loss_fn(params, batch, key, start)``, resumably.

    Args:
        key: run key (step ``s`` uses ``fold_in(key, s)``).
        loss_fn: ``ebt_loss(...)`` or ``ff_loss(...)``.
        params: initial parameters (``{"net", "alpha"}`` for an EBT).
        data: ``{"context": pytree [M, ...], "target": [M, ...]}``.
        opt: optax transformation (``optimizer(cfg, num_steps)`` for an EBT).
        event_shape: shape of one prediction ``y`` (the starts and the buffer).
        num_steps: number of updates.
        batch_size: rows per update.
        cfg: the EBT options (starts, replay buffer, alpha clamp); None for a
            baseline (no alpha, no buffer).
        workdir: checkpoints under ``workdir/checkpoints``; None for none.

    Returns:
        ``(params, losses [num_steps])``.

    Raises:
        NonFiniteError: at the first non-finite loss (the step is named).
        DivergedError: a loss above ``max_loss`` (default: 1000x the first
            loss), or a run of >= 50 steps whose loss did not go down.
    """
    num_steps = _checks.positive_int(num_steps, "num_steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    m = int(np.shape(data["target"])[0])
    data = jax.tree_util.tree_map(jnp.asarray, data)
    n_rep = int(cfg.replay_fraction * batch_size) if cfg is not None else 0
    size = cfg.replay_size if n_rep else 1
    init_scale = cfg.init_scale if cfg is not None else 1.0
    state = {
        "params": params,
        "opt": opt.init(params),
        "buf_y": jnp.zeros((size,) + tuple(event_shape), jnp.float32),
        "buf_row": jnp.zeros((size,), jnp.int32),
    }

    static = _Static(loss_fn, opt, batch_size, m, n_rep, size, float(init_scale),
                     tuple(event_shape), cfg is not None)  # fmt: skip

    def update(state, step, data):
        return _update(state, step, data, key, static)

    state, losses = lm_train.run_updates(
        update, state, data, num_steps=num_steps, workdir=workdir,
        checkpoint_every=checkpoint_every, log_every=log_every, tag="ebt fit",
        max_loss=max_loss,
    )  # fmt: skip
    return state["params"], losses


def fit_or_restore(key: jax.Array, *, workdir: str | os.PathLike, spec: Any, **kwargs):
    """``fit`` cached under ``workdir/<hash>`` of the key, ``spec``, initial params and data.

    ``spec`` (JSON-like) must describe what the arguments do not show: the
    model's fields, the task, the training options (``EBTTraining``).
    """
    flat = [np.asarray(v).reshape(len(v), -1).astype(np.float32)
            for v in jax.tree_util.tree_leaves(kwargs["data"])]  # fmt: skip
    cfg = kwargs.get("cfg")
    record = cache_record(
        key,
        spec={"spec": spec, "cfg": None if cfg is None else dataclasses.asdict(cfg),
              "event_shape": list(kwargs["event_shape"])},
        apply_fn=None,
        params_init=kwargs["params"],
        data=np.concatenate(flat, 1),
        num_steps=kwargs["num_steps"],
        batch_size=kwargs["batch_size"],
    )  # fmt: skip
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    entry = os.path.join(os.path.abspath(os.fspath(workdir)), digest)
    with DirectoryLock(entry, what="model cache entry"):
        with open(os.path.join(entry, "spec.json"), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        return fit(key, workdir=entry, **kwargs)


def predict(
    key: jax.Array | None,
    energy_apply: Callable,
    params: dict,
    context: Any,
    event_shape: tuple,
    *,
    num_steps: int,
    num_candidates: int = 1,
    init_scale: float = 1.0,
    encode: Callable | None = None,
    **kwargs,
):
    """EBT inference: ``G`` random starts per context, ``num_steps`` of descent with the
    learned ``alpha``, keep the lowest final energy (``energy.self_verify``).

    Returns ``(chosen [B, *event], all [B, G, *event], VerifyInfo)``.
    """

    def init(k, _):
        return init_scale * jax.random.normal(k, tuple(event_shape))

    if encode is not None:
        context = encode(params["net"], context)

    return energy.self_verify(
        key, lambda c, y: energy_apply(params["net"], c, y), context, init,
        num_candidates=num_candidates, num_steps=num_steps, step_size=ebt.alpha_of(params),
        **kwargs,
    )  # fmt: skip
