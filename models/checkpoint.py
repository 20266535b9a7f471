"""A small checkpointing wrapper; the only module of inferax that imports orbax.

``Checkpointer`` keeps a numbered series of pytree checkpoints in one
directory through ``orbax.checkpoint.CheckpointManager`` with
``StandardSave`` / ``StandardRestore``. Restores go against an abstract
target (a tree of ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``), so
the caller never has to allocate a throw-away copy of the state. If the orbax
API changes, this file is the one to change. Orbax's per-save INFO log lines
are filtered out of absl logging (its warnings and errors still show).

Typical use::

    with Checkpointer(workdir, max_to_keep=2) as ckpt:
        if ckpt.latest_step() is not None:
            state = ckpt.restore(ckpt.latest_step(), jax.eval_shape(init_fn))
        ...
        ckpt.save(step, state)
    # leaving the block waits for pending (asynchronous) saves and closes.
"""

from __future__ import annotations

import logging as py_logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class _OrbaxInfoFilter(py_logging.Filter):
    """Drops orbax's INFO/DEBUG records (a dozen per save); warnings and errors pass."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def _install_orbax_filter() -> None:
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxInfoFilter())


_install_orbax_filter()


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


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


class Checkpointer:
    """Numbered pytree checkpoints in ``directory`` (asynchronous saves).

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
        self.max_to_keep = _check_positive_int("max_to_keep", max_to_keep)
        self.save_interval_steps = _check_positive_int("save_interval_steps", save_interval_steps)
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.max_to_keep,
            save_interval_steps=self.save_interval_steps,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._closed = False

    def save(self, step: int, pytree: Any, force: bool = False) -> bool:
        """Starts saving ``pytree`` as checkpoint ``step``; returns whether it saves.

        The write is asynchronous: call ``wait()`` (or ``close()``) before
        reading it back from another process or exiting.
        """
        step = _check_step(step)
        self._check_open()
        return bool(self._manager.save(step, args=ocp.args.StandardSave(pytree), force=force))

    def latest_step(self) -> int | None:
        """The largest saved step, or ``None`` when the directory has none."""
        self._check_open()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All saved steps, ascending."""
        self._check_open()
        return sorted(self._manager.all_steps())

    def restore(self, step: int, target: Any) -> Any:
        """Reads checkpoint ``step`` into the structure, shapes and dtypes of ``target``.

        Args:
            step: a saved step (see ``all_steps``).
            target: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
                ``jax.eval_shape``) with the structure that was saved.

        Raises:
            ValueError: if ``step`` is not saved in this directory.
        """
        step = _check_step(step)
        self._check_open()
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if step not in steps:
            raise ValueError(
                f"step: expected one of the saved steps {steps} in {self.directory}, got {step}"
            )
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_tree(target)))

    def wait(self) -> None:
        """Blocks until every pending save is on disk."""
        if not self._closed:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager (idempotent)."""
        if not self._closed:
            self._manager.wait_until_finished()
            self._manager.close()
            self._closed = True

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
