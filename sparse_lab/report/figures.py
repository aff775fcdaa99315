"""Figures for a sweep, chosen by what its runs contain. Each returns the saved PNG paths."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sparse_lab.report.runs import Run  # noqa: E402

ACC = "test/acc"


def _label(run: Run, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={run.overrides.get(k, '')}" for k in keys) or run.path.name


def training_curves(runs: Sequence[Run], keys: Sequence[str]) -> Figure | None:
    """Per-epoch accuracy of every run that has epochs (test if evaluated each epoch, else val)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for run in runs:
        epochs = run.metrics.get("epochs") or []
        metric = next((m for m in ("test/acc", "val/acc", "train/acc") if epochs and m in epochs[0]), None)
        if metric is None:
            continue
        ax.plot([e["epoch"] + 1 for e in epochs], [e[metric] for e in epochs], marker=".", label=f"{_label(run, keys)} ({metric})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("Training curves")
    if drawn <= 16:
        ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return fig


def _by_method(rows: Sequence[dict], x_key: str, y_key: str) -> dict[str, list[tuple[float, float, float]]]:
    out: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        y = r.get(f"{y_key} mean")
        if y is None:
            continue
        x = float(r[x_key]) if x_key in r else r.get(f"{x_key} mean")
        if x is None:
            continue
        out[r.get("method", "")].append((x, y, r.get(f"{y_key} std") or 0.0))
    return {m: sorted(v) for m, v in out.items()}


def metric_vs(rows: Sequence[dict], x_key: str, y_key: str, baseline: str = "full", log_x: bool = True) -> Figure | None:
    """``y_key`` (mean and std over seeds) against ``x_key`` per method; ``baseline`` as a level."""
    series = _by_method(rows, x_key, y_key)
    sparse = {m: v for m, v in series.items() if m != baseline}
    if not sparse:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, points in sorted(sparse.items()):
        xs, ys, es = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    if baseline in series and x_key in ("paths",):
        level = sum(y for _, y, _ in series[baseline]) / len(series[baseline])
        ax.axhline(level, color="k", linestyle="--", label=f"{baseline} ({level:.4g})")
    elif baseline in series:
        xs, ys, es = zip(*series[baseline])
        ax.errorbar(xs, ys, yerr=es, marker="s", color="k", linestyle="none", label=baseline)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.set_title(f"{y_key} vs {x_key}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def make_figures(runs: Sequence[Run], keys: Sequence[str], rows: Sequence[dict], out: Path) -> dict[str, Figure]:
    """Build the figures that apply to this sweep, save them as PNG in ``out``; return them by name."""
    figures: dict[str, Figure | None] = {"training_curves": training_curves(runs, keys)}
    if "paths" in keys:
        figures["accuracy_vs_paths"] = metric_vs(rows, "paths", ACC)
        figures["density_vs_paths"] = metric_vs(rows, "paths", "updates/density")
    if any(r.get("updates/cumulative mean") for r in rows):
        figures["accuracy_vs_cumulative_updates"] = metric_vs(rows, "updates/cumulative", ACC)
    saved = {}
    for name, fig in figures.items():
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=120)
            saved[name] = fig
    return saved
