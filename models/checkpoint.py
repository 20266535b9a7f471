"""Verified checkpoints and directory locks; the only module of inferax that imports orbax.

``Checkpointer`` keeps a numbered series of pytree checkpoints in one
directory through ``orbax.checkpoint.CheckpointManager`` with
``StandardSave`` / ``StandardRestore``. Restores go against an abstract
target (a tree of ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``), so
the caller never has to allocate a throw-away copy of the state. If the orbax
API changes, this file is the one to change.

A checkpoint cannot silently poison a result:

* ``save`` refuses a state with a NaN or infinite floating-point leaf
  (``NonFiniteError``), so the checkpoints on disk, and therefore the ones
  orbax's rotation keeps, are finite;
* every save writes an integrity record, ``<directory>/integrity/<step>.json``:
  the path, dtype and shape of every leaf and a SHA-256 over the leaves' bytes;
* ``restore`` compares the target's leaves with the record before reading
  (one-line ``ValueError`` on a different architecture, instead of orbax's
  long trace), then recomputes the SHA-256 and checks the values are finite
  (one-line ``CorruptCheckpointError`` naming the step directory);
* ``restore_latest`` falls back from a bad step to the previous good one.

Typical use::

    with Checkpointer(workdir, max_to_keep=2) as ckpt:
        found = ckpt.restore_latest(jax.eval_shape(init_fn))  # (step, state) or None
        ...
        ckpt.save(step, state)
    # leaving the block waits for pending (asynchronous) saves and closes.

``DirectoryLock`` is an exclusive ``fcntl.flock`` on ``<directory>/.lock``
that a second process (or a second lock in the same process) cannot take:
it fails at once naming the lock file and the holder's PID.
"""

from __future__ import annotations

import hashlib
import json
import logging as py_logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from inferax.models.lock import DirectoryLock, DirectoryLockedError  # noqa: F401 (re-exported)
from inferax.sampling import _checks

_RECORDS = "integrity"
_ITEM = "default"  # the folder orbax writes a single-item step's arrays into


class NonFiniteError(FloatingPointError):
    """A state (loss or parameters) holds NaN or infinite values."""


class DivergedError(NonFiniteError):
    """Training diverged: a loss above the run's ceiling, or no improvement on the first losses."""


class CorruptCheckpointError(RuntimeError):
    """A saved checkpoint fails its integrity check (or has no record to check)."""


class _OrbaxInfoFilter(py_logging.Filter):
    """Drops orbax's INFO/DEBUG records (a dozen per save); warnings and errors pass."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_orbax_logging() -> None:
    """Filters orbax's per-save INFO lines out of absl logging (idempotent).

    Called by the experiment binaries at run time; importing inferax changes
    no logging configuration.
    """
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxInfoFilter())


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step: expected a non-negative int, got {step!r}")
    return int(step)


def abstract_tree(tree: Any) -> Any:
    """The ``jax.ShapeDtypeStruct`` skeleton of a pytree of arrays (or of structs)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


def leaf_signature(tree: Any) -> list[list]:
    """``[[path, dtype, shape], ...]`` of every leaf, in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract_tree(tree))
    return [[jax.tree_util.keystr(p), str(x.dtype), list(x.shape)] for p, x in flat]


def tree_sha256(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (host copies)."""
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.ascontiguousarray(np.asarray(x))
        h.update(f"{jax.tree_util.keystr(path)}|{x.dtype}|{x.shape}|".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def first_non_finite(tree: Any) -> str | None:
    """The path of the first floating-point leaf holding NaN or +-inf, else None."""
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        if jnp.issubdtype(dtype, jnp.inexact):
            x = np.asarray(x)
            if x.dtype.itemsize < 4:  # bfloat16 / float16 via float32
                x = x.astype(np.float32)
            if not np.all(np.isfinite(x)):
                return jax.tree_util.keystr(path) or "<root>"
    return None


def host_copy(tree: Any) -> Any:
    """NumPy copies of every leaf; arrays sharded over several processes are all-gathered.

    With JAX's multi-controller runtime (``inferax.sampling.multiprocess``) every
    process gets the whole values, so every process computes the same SHA-256.
    """
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(one, tree)


class Checkpointer:
    """Numbered, integrity-checked pytree checkpoints in ``directory`` (asynchronous saves).

    Args:
        directory: where the step folders live; created if missing. Relative
            paths are made absolute (orbax requires it).
        max_to_keep: number of most recent checkpoints kept on disk.
        save_interval_steps: ``save`` without ``force`` writes only at steps
            that are multiples of this.
    """

    def __init__(
        self, directory: str | os.PathLike, max_to_keep: int = 2, save_interval_steps: int = 1
    ):
        if not isinstance(directory, str | os.PathLike) or not str(directory):
            raise TypeError(f"directory: expected a non-empty path, got {directory!r}")
        self.max_to_keep = _checks.positive_int(max_to_keep, "max_to_keep")
        self.save_interval_steps = _checks.positive_int(save_interval_steps, "save_interval_steps")
        self.directory = os.path.abspath(os.fspath(directory))
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=self.max_to_keep,
            save_interval_steps=self.save_interval_steps,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._closed = False

    def _reopen(self) -> None:
        """Replaces the orbax manager by a fresh one over the same directory.

        A failed orbax restore can leave the manager's item bookkeeping in a
        state where every later restore fails too (a step whose item folder
        is missing switches it to multi-item mode: "Must provide `args` of
        type `Composite`"), so after any failed read the manager is rebuilt
        and an intact older step restores as it would alone.
        """
        self._manager.close()
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def step_dir(self, step: int) -> str:
        """The folder of checkpoint ``step``."""
        return os.path.join(self.directory, str(step))

    def _record_path(self, step: int) -> str:
        return os.path.join(self.directory, _RECORDS, f"{step}.json")

    def save(self, step: int, pytree: Any, force: bool = False, *, allow_non_finite=False) -> bool:
        """Starts saving ``pytree`` as checkpoint ``step``; returns whether it saves.

        The integrity record is written at once; the arrays are written
        asynchronously: call ``wait()`` (or ``close()``) before reading them
        back from another process or exiting.

        Raises:
            NonFiniteError: if a floating-point leaf holds NaN or +-inf (unless
                ``allow_non_finite``); nothing is written then.
        """
        step = _check_step(step)
        self._check_open()
        host = host_copy(pytree)
        if not allow_non_finite:
            bad = first_non_finite(host)
            if bad is not None:
                raise NonFiniteError(
                    f"checkpoint {self.step_dir(step)} not saved: leaf {bad} is not finite"
                )
        record = {"step": step, "leaves": leaf_signature(host), "sha256": tree_sha256(host)}
        saved = bool(self._manager.save(step, args=ocp.args.StandardSave(pytree), force=force))
        if saved and jax.process_index() == 0:  # one writer across processes (orbax: primary host)
            path = self._record_path(step)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
        return saved

    def latest_step(self) -> int | None:
        """The largest saved step, or ``None`` when the directory has none."""
        self._check_open()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All saved steps, ascending."""
        self._check_open()
        return sorted(self._manager.all_steps())

    def restore(self, step: int, target: Any, *, check_finite: bool = True) -> Any:
        """Reads and verifies checkpoint ``step`` into the structure of ``target``.

        Args:
            step: a saved step (see ``all_steps``).
            target: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
                ``jax.eval_shape``) with the structure that was saved.
            check_finite: also require every floating-point leaf to be finite.

        Raises:
            ValueError: if ``step`` is not saved here, or ``target``'s leaves
                (paths, dtypes, shapes) differ from the saved ones.
            CorruptCheckpointError: if the step has no integrity record, cannot
                be read, or its contents differ from the record.
        """
        step = _check_step(step)
        self._check_open()
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if step not in steps:
            raise ValueError(
                f"step: expected one of the saved steps {steps} in {self.directory}, got {step}"
            )
        where = self.step_dir(step)
        try:
            with open(self._record_path(step)) as f:
                record = json.load(f)
        except (OSError, ValueError) as e:
            raise CorruptCheckpointError(
                f"checkpoint {where} has no readable integrity record ({type(e).__name__})"
            ) from None
        _check_same_leaves(record["leaves"], leaf_signature(target), where)
        item = os.path.join(where, _ITEM)
        if not os.path.isdir(item):
            raise CorruptCheckpointError(
                f"checkpoint {where} cannot be read: its item folder {item} is missing"
            )
        try:
            tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_tree(target)))
        except Exception as e:  # orbax / tensorstore raise many types on damaged files
            self._reopen()  # a failed read must not poison the restores of other steps
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise CorruptCheckpointError(
                f"checkpoint {where} cannot be read: {type(e).__name__}: {first}"
            ) from None
        host = host_copy(tree)
        if tree_sha256(host) != record["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {where} is corrupted: its SHA-256 differs from the integrity record"
            )
        if check_finite and (bad := first_non_finite(host)) is not None:
            raise CorruptCheckpointError(f"checkpoint {where} holds non-finite values in {bad}")
        return tree

    def restore_latest(self, target: Any, *, delete_bad: bool = False) -> tuple[int, Any] | None:
        """The newest checkpoint that passes ``restore``'s checks, as ``(step, tree)``.

        ``target`` is as in ``restore``, or a function ``step -> target`` for
        states whose shapes depend on the step (e.g. a loss history).

        A step that fails its integrity check is logged (absl warning) and
        skipped for the previous one; with ``delete_bad`` it is also deleted
        (so that a resumed run can save that step again).

        Returns:
            ``(step, tree)``, or ``None`` when the directory holds no checkpoint.

        Raises:
            CorruptCheckpointError: when every saved step fails (one line naming
                the step directories).
            ValueError: when ``target``'s leaves differ from the saved ones.
        """
        steps = self.all_steps()
        bad = []
        for step in reversed(steps):
            try:
                tree = self.restore(step, target(step) if callable(target) else target)
            except CorruptCheckpointError as e:
                logging.warning("%s; falling back to an earlier step", e)
                bad.append(step)
                continue
            if delete_bad:
                for b in bad:
                    self.delete(b)
            return step, tree
        if not steps:
            return None
        raise CorruptCheckpointError(
            "no usable checkpoint: every step failed its integrity check: "
            + ", ".join(self.step_dir(s) for s in reversed(steps))
        )

    def delete(self, step: int) -> None:
        """Deletes checkpoint ``step`` and its integrity record."""
        step = _check_step(step)
        self._check_open()
        self._manager.wait_until_finished()
        self._manager.delete(step)
        if jax.process_index() == 0 and os.path.exists(self._record_path(step)):
            os.remove(self._record_path(step))

    def wait(self) -> None:
        """Blocks until every pending save is on disk."""
        if not self._closed:
            self._manager.wait_until_finished()
            self._prune_records()

    def close(self) -> None:
        """Waits for pending saves and releases the manager (idempotent)."""
        if not self._closed:
            self.wait()
            self._manager.close()
            self._closed = True

    def _prune_records(self) -> None:
        """Removes the records of steps that orbax's rotation deleted."""
        folder = os.path.join(self.directory, _RECORDS)
        if jax.process_index() != 0 or not os.path.isdir(folder):
            return
        kept = {f"{s}.json" for s in self._manager.all_steps()}
        for name in os.listdir(folder):
            if name not in kept:
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Checkpointer for {self.directory} is closed")

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpointer({self.directory!r}, max_to_keep={self.max_to_keep}, "
            f"save_interval_steps={self.save_interval_steps})"
        )


def _check_same_leaves(saved: list, wanted: list, where: str) -> None:
    """One-line ValueError naming the first leaf where the target differs from the save."""
    if saved == wanted:
        return
    saved_by_path = {p: (d, tuple(s)) for p, d, s in saved}
    for p, d, s in wanted:
        if p not in saved_by_path:
            detail = f"the target's leaf {p} is not in the checkpoint"
            break
        if saved_by_path[p] != (d, tuple(s)):
            sd, ss = saved_by_path[p]
            detail = f"leaf {p} is {sd}{list(ss)} there, {d}{list(s)} in the target"
            break
    else:
        detail = f"the checkpoint has {len(saved)} leaves, the target {len(wanted)}"
    raise ValueError(
        f"target: checkpoint {where} was saved from a different model or state: {detail}"
    )
