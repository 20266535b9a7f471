"""Plots of per-seed results with error bars (mean and t-interval over seeds).

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing
this module never selects a global matplotlib backend.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inferax.experiments.multihost import is_main_process


def _save(fig: Figure, path: str) -> str:
    if not is_main_process():  # one process writes the plots of a multi-process run
        return path
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _style(ax, title: str, xlabel: str, ylabel: str, logx: bool, logy: bool) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def errorbar_plot(
    path: str,
    panels: list[tuple[str, dict[str, tuple[list, list[dict]]]]],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = True,
    logy: bool = False,
    hline: float | None = None,
    hline_label: str = "",
) -> str:
    """One row of panels; each maps a series name to ``(xs, [t_interval dict per x])``.

    Points are the means over seeds, bars the confidence intervals; a
    non-finite point is left out and marked in the legend ("n non-finite").
    With ``logy`` the bars are clipped to positive values.
    """
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels, strict=True):
        for k, (name, (xs, summaries)) in enumerate(series.items()):
            ok = [i for i, s in enumerate(summaries) if s["finite"]]
            x = np.asarray(xs, np.float64)[ok] * (1.0 + 0.03 * (k - len(series) / 2))  # dodge
            m = np.array([summaries[i]["mean"] for i in ok])
            lo = np.array([summaries[i]["lo"] for i in ok])
            hi = np.array([summaries[i]["hi"] for i in ok])
            lo = np.where(np.isfinite(lo), lo, m)  # one seed: no bar
            hi = np.where(np.isfinite(hi), hi, m)
            if logy:
                lo = np.maximum(lo, 0.5 * np.min(m[m > 0], initial=1e-6))
            bad = len(summaries) - len(ok)
            label = name + (f" ({bad} non-finite)" if bad else "")
            ax.errorbar(x, m, yerr=[m - lo, hi - m], marker="o", ms=3, capsize=2, label=label)
        if hline is not None and math.isfinite(hline):
            ax.axhline(hline, color="gray", lw=0.8, ls="--", label=hline_label or None)
        _style(ax, title, xlabel, ylabel, logx, logy)
    return _save(fig, path)


def scatter_grid(path: str, panels: list[tuple[str, np.ndarray]], lim: float = 3.5) -> str:
    """2-D sample clouds side by side, each titled (say what produced it and N)."""
    fig = Figure(figsize=(2.8 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, pts) in zip(axes, panels, strict=True):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def image_grid(path: str, rows: list[tuple[str, np.ndarray]]) -> str:
    """Each row: a title and images ``[n, H, W, 1]`` in [0, 1]."""
    ncol = max(len(imgs) for _, imgs in rows)
    fig = Figure(figsize=(0.7 * ncol, 0.85 * len(rows)))
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(np.asarray(imgs[c])[..., 0], cmap="gray_r", vmin=0, vmax=1)
        axes[r, 0].set_title(title, fontsize=6, loc="left")
    return _save(fig, path)


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
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", ms=3, label=name)
        _style(ax, title, xlabel, ylabel, logx, logy)
    return _save(fig, path)
