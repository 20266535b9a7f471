"""Plumbing shared by the experiment binaries: workdirs, logs, results, plots."""

from __future__ import annotations

import json
import logging as py_logging
import os
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402


def prepare_workdir(workdir: str, log_name: str) -> py_logging.Handler:
    """Creates ``workdir`` and mirrors absl logging into ``workdir/log_name``."""
    os.makedirs(workdir, exist_ok=True)
    handler = py_logging.FileHandler(os.path.join(workdir, log_name), mode="w")
    handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(handler)
    logging.set_verbosity(logging.INFO)
    return handler


def close_log(handler: py_logging.Handler) -> None:
    logging.get_absl_logger().removeHandler(handler)
    handler.close()


def cache_dir(config, workdir: str, name: str) -> str:
    """Where model ``name`` is cached: ``config.cache_dir/name`` or ``workdir/models/name``."""
    root = config.cache_dir or os.path.join(workdir, "models")
    return os.path.join(root, name)


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "tolist"):
        return np.asarray(x).tolist()
    return x


def write_results(workdir: str, results: dict) -> str:
    path = os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump(_to_jsonable(results), f, indent=1, sort_keys=True)
    return path


def line_plot(
    path: str,
    panels: list[tuple[str, dict[str, tuple[list, list]]]],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    logy: bool = False,
) -> str:
    """One row of panels; each panel maps a series name to ``(xs, ys)``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", ms=3, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_grid(path: str, panels: list[tuple[str, np.ndarray]], lim: float = 3.5) -> str:
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels, strict=True):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(path: str, rows: list[tuple[str, np.ndarray]]) -> str:
    """Each row: a title and images ``[n, H, W, 1]`` in [0, 1]."""
    ncol = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(0.7 * ncol, 0.8 * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(np.asarray(imgs[c])[..., 0], cmap="gray_r", vmin=0, vmax=1)
        axes[r, 0].set_title(title, fontsize=6, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(run: Callable[[Any, str], dict], name: str) -> None:
    """Entry point of an experiment binary: ``--config`` and ``--workdir`` flags, then
    ``run(config, workdir)``.

    The flags are defined here, when the binary starts, not at import time, so
    that every experiment module can be imported into one process (the demo,
    the tests and the notebooks do).
    """
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file(
        "config", None, f"experiments/configs/{name}.py, or ...{name}.py:quick"
    )
    workdir = flags.DEFINE_string("workdir", f"runs/{name}", "output directory")
    flags.mark_flags_as_required(["config"])

    def _main(argv):
        if len(argv) > 1:
            raise ValueError(f"unexpected positional arguments: {argv[1:]}")
        run(config.value, workdir.value)

    app.run(_main)
