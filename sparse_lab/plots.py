"""Headless matplotlib: the shared look of sparse_lab's figures, saved as PNG (and to TensorBoard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def new_axes(figsize: tuple[float, float] = (6, 4.2)) -> tuple[Figure, Axes]:
    return plt.subplots(figsize=figsize)


def decorate(ax: Axes, xlabel: str, ylabel: str, title: str, target: float | None = None, legend: bool = True) -> None:
    """Labels, title, grid, an optional target line (red, dotted) and the legend."""
    if target is not None:
        ax.axhline(target, color="r", linestyle=":", label=f"target {target:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend(fontsize=8)


def save(fig: Figure, path: Path, experiment: Any = None, tag: str | None = None, close: bool = True) -> None:
    """Write ``fig`` to ``path``; also to a TensorBoard ``experiment`` (SummaryWriter) under ``tag``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    if tag is not None and hasattr(experiment, "add_figure"):
        experiment.add_figure(tag, fig, close=False)
    if close:
        plt.close(fig)
