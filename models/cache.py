"""Cache keys for trained models: a JSON record of everything that determines one.

``train.train_or_restore`` stores a model under the SHA-256 of
``cache_record(...)``, so a different seed, architecture, data set or config
trains a new entry instead of silently reusing another run's model, and
``record_differences`` names the fields in which two records differ.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jax
import numpy as np

from inferax.models import checkpoint

# Part of every cache key: bump when a change to the training code changes the
# parameters a given set of arguments produces.
CACHE_VERSION = "train-2"


def _array_record(x: Any) -> dict:
    x = np.asarray(x)
    return {"shape": list(x.shape), "dtype": str(x.dtype), "sha256": checkpoint.tree_sha256(x)}


def _describe_fn(fn: Any) -> str:
    """A stable description of ``apply_fn``: the bound module's repr, or the qualified name."""
    owner = getattr(fn, "__self__", None)
    text = repr(owner) if owner is not None else getattr(fn, "__qualname__", type(fn).__name__)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", re.sub(r"\s+", " ", text))


def _jsonable(x: Any, name: str) -> Any:
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        x = x.to_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v, f"{name}.{k}") for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v, name) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise TypeError(
        f"{name}: expected JSON-like values (numbers, strings, lists, dicts), got {x!r}"
    )


def cache_record(key: jax.Array, *, spec: Any = None, **kwargs) -> dict:
    """Everything that determines a trained model, as a JSON-able dict (the cache key's input).

    Derived from the arguments of ``train``: the key's data, ``apply_fn``
    (the Flax module's fields), ``params_init`` (leaf paths, shapes, dtypes and
    a SHA-256 of the values, so the architecture and the initialisation), the
    data and labels (shape, dtype, SHA-256; a sampler only by name), and
    ``num_steps``, ``batch_size``, ``p_uncond``, ``null_label``,
    ``ema_decay``, plus ``CACHE_VERSION``. What cannot be read off the
    arguments goes in ``spec``: the optimizer's settings, a sampler's data
    definition, a model code version; an experiment passes its config section
    and seed. Arguments that do not change the result (``checkpoint_every``,
    ``log_every``, ``max_to_keep``, ``progress``) are left out.
    """
    data = kwargs.get("data")
    labels = kwargs.get("labels")
    params_init = kwargs.get("params_init")
    return {
        "version": CACHE_VERSION,
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
        "apply_fn": _describe_fn(kwargs.get("apply_fn")),
        "params_init": {
            "leaves": checkpoint.leaf_signature(params_init),
            "sha256": checkpoint.tree_sha256(jax.device_get(params_init)),
        },
        "data": {"sampler": _describe_fn(data)} if callable(data) else _array_record(data),
        "labels": None if labels is None else _array_record(labels),
        **{
            k: _jsonable(kwargs.get(k), k)
            for k in ("num_steps", "batch_size", "p_uncond", "null_label", "ema_decay")
        },
        "spec": _jsonable(spec, "spec"),
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and not (prefix.endswith("params_init") and "leaves" in d):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out if d else {prefix: {}}
    return {prefix: d}


def record_differences(old: dict, new: dict) -> str:
    """``"spec.lr (0.002 -> 0.001), key"``: the fields where two cache records differ."""
    a, b = _flatten(old), _flatten(new)
    parts = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = json.dumps(a.get(k)), json.dumps(b.get(k))
            parts.append(f"{k} ({va} -> {vb})" if len(va) + len(vb) <= 60 else k)
    return ", ".join(parts)
