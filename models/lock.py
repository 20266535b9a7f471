"""An exclusive lock on a directory, held for the life of a run.

A workdir or a model-cache entry is locked so that a second run on it exits at
once with a message naming the lock and the PID that holds it, instead of
training into the same checkpoint directory and interleaving its logs.
"""

from __future__ import annotations

import fcntl
import os

import jax


class DirectoryLockedError(RuntimeError):
    """Another run holds the lock of a directory."""


class DirectoryLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<directory>/.lock``.

    Held for the life of a run (use as a context manager, or ``acquire`` /
    ``release``); the operating system releases it if the process dies. The
    lock file holds the holder's PID for the message a refused run prints.
    """

    def __init__(self, directory: str | os.PathLike, what: str = "directory"):
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, ".lock")
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Takes the lock, or raises ``DirectoryLockedError`` at once if it is held."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this DirectoryLock")
        if jax.distributed.is_initialized() and jax.process_index() != 0:
            return self  # multi-process run (shared filesystem): process 0 holds it for all
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryLockedError(
                f"{self.what} {self.directory} is in use by another run: lock {self.path} is "
                f"held by PID {holder}; wait for it to finish or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Releases the lock (idempotent)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
