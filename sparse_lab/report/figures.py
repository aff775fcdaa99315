"""Every figure sparse_lab draws from results: a sweep's, chosen by what its runs contain, and the ones
a protocol saves in its own run dir as it ends (``lottery.png``, ``control_curve.png``, ``oneshot.png``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sparse_lab import run_record
from sparse_lab.plots import decorate, new_axes, plt, save
from sparse_lab.report.runs import Run

ACC = "test/acc"


def _label(run: Run, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={run.values.get(k, '')}" for k in keys) or run.path.name


def training_curves(runs: Sequence[Run], keys: Sequence[str]) -> Figure | None:
    """Per-epoch accuracy of every run that has epochs (test if evaluated each epoch, else val)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for run in runs:
        epochs = run.metrics.get("epochs") or []
        metric = next((m for m in ("test/acc", "val/acc", "train/acc") if any(m in e for e in epochs)), None)
        if metric is None:
            continue
        points = [(e["epoch"] + 1, e[metric]) for e in epochs if metric in e]  # epochs without an evaluation skipped
        ax.plot(*zip(*points), marker=".", label=f"{_label(run, keys)} ({metric})")
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


def metric_vs(
    rows: Sequence[dict], x_key: str, y_key: str, baseline: str | None = "full", log_x: bool = True,
    target: float | None = None,
) -> Figure | None:
    """``y_key`` (mean and std over seeds) against ``x_key`` per method; ``baseline`` as a level."""
    series = _by_method(rows, x_key, y_key)
    sparse = {m: v for m, v in series.items() if baseline is None or m != baseline}
    if not sparse:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method, points in sorted(sparse.items()):
        xs, ys, es = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method or y_key)
    if baseline in series and x_key in ("paths",):
        level = sum(y for _, y, _ in series[baseline]) / len(series[baseline])
        ax.axhline(level, color="k", linestyle="--", label=f"{baseline} ({level:.4g})")
    elif baseline in series:
        xs, ys, es = zip(*series[baseline])
        ax.errorbar(xs, ys, yerr=es, marker="s", color="k", linestyle="none", label=baseline)
    if log_x:
        ax.set_xscale("log")
        positive = [x for points in series.values() for x, _, _ in points if x > 0]
        if positive and max(positive) >= 10 * min(positive):  # a labelled decade in view: unlabelled minor ticks (their labels overlap)
            ax.xaxis.set_minor_formatter(NullFormatter())
    decorate(ax, x_key, y_key, f"{y_key} vs {x_key}", target)
    return fig


def metric_vs_sparsity(rows: Sequence[dict], target: float | None, reference: dict | None = None) -> Figure | None:
    """Test accuracy against the swept ``sparsity`` per method, with the target accuracy as a line and
    the ``reference`` settings that name a method and a sparsity as marked points."""
    fig = metric_vs(rows, "sparsity", ACC, baseline=None, log_x=False, target=target)
    points = [
        (pairs["method"], float(pairs["sparsity"]), metrics[ACC])
        for pairs, metrics in (reference or {}).get("settings", {}).values()
        if {"method", "sparsity"} <= pairs.keys() and ACC in metrics
    ]
    if fig is not None and points:
        ax = fig.axes[0]
        for i, (method, sparsity, acc) in enumerate(points):
            ax.plot([sparsity], [acc], marker="*", markersize=12, color="k", linestyle="none",
                    label="published (reference)" if i == 0 else None)
            ax.annotate(method, (sparsity, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.legend(fontsize=8)
    return fig


def layer_bars(runs: Sequence[Run], keys: Sequence[str], prefix: str) -> Figure | None:
    """Bars of every ``<prefix>/<layer>`` metric of each run's last epoch (e.g. per-layer sparsity)."""
    per_run = []
    for run in runs:
        epochs = run.metrics.get("epochs") or []
        values = {k[len(prefix) + 1 :]: v for k, v in (epochs[-1] if epochs else {}).items() if k.startswith(prefix + "/")}
        if values:
            per_run.append((_label(run, keys), values))
    if not per_run:
        return None
    layers = list(dict.fromkeys(layer for _, values in per_run for layer in values))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) * max(1, len(per_run) ** 0.5)), 4.2))
    width = 0.8 / len(per_run)
    for i, (label, values) in enumerate(per_run[:12]):
        ax.bar([j + i * width for j in range(len(layers))], [values.get(layer, 0) for layer in layers], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(prefix)
    ax.set_title(f"{prefix} per layer (last epoch)")
    if len(per_run) <= 12:
        ax.legend(fontsize=6)
    return fig


COMPARISON = (("test/acc", "test accuracy"), ("train_time_s", "train time per epoch (s)"), ("peak_rss_mb", "peak RSS (MB)"),
              ("peak_cuda_mb", "peak CUDA memory (MB)"))


def method_bars(runs: Sequence[Run]) -> Figure | None:
    """Accuracy, time per epoch and peak memory per method (mean over its runs): e.g. NoProp vs backprop."""
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.status == "completed":
            by_method[run.values.get("method", "?")].append(run)
    if len(by_method) < 2:
        return None
    panels = []
    for key, title in COMPARISON:
        means = {}
        for method, members in by_method.items():
            vals = []
            for r in members:
                epochs = r.metrics.get("epochs") or []
                if key in ("train_time_s",):
                    vals += [sum(e[key] for e in epochs) / len(epochs)] if epochs and key in epochs[0] else []
                else:
                    v = r.final(key) if key.startswith("test/") else r.metrics.get(key)
                    vals += [v] if isinstance(v, (int, float)) else []
            if vals:
                means[method] = sum(vals) / len(vals)
        if means:
            panels.append((title, means))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, means) in zip(axes if len(panels) > 1 else [axes], panels):
        ax.bar(list(means), list(means.values()), color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    return fig


def oneshot_levels(runs: Sequence[Run]) -> list[dict]:
    """Per one-shot level (percent): kept count, sparsity, and test accuracy mean/std/n over the runs."""
    levels: dict[float, list[dict]] = defaultdict(list)
    for run in runs:
        for row in run.metrics.get("oneshot") or []:
            levels[row["percent"]].append(row)
    out = []
    for percent in sorted(levels):
        accs = [r["test/acc"] for r in levels[percent]]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
        first = levels[percent][0]
        out.append({"percent": percent, "kept": first["kept"], "sparsity": first["sparsity"], "test/acc mean": mean,
                    "test/acc std": std, "test/acc min": min(accs), "test/acc max": max(accs), "n": len(accs)})
    return out


def pruning_figure(levels: Sequence[dict], runs: Sequence[Run], target: float | None) -> Figure | None:
    """Accuracy against sparsity: one-shot levels (mean, std and range over runs) and each lottery
    run's IMP rounds with its control; the target as a line."""
    lotteries = [r for r in runs if r.metrics.get(run_record.LOTTERY)]
    if not levels and not lotteries:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if levels:
        xs = [100 * r["sparsity"] for r in levels]
        ax.errorbar(xs, [r["test/acc mean"] for r in levels], yerr=[r["test/acc std"] for r in levels], marker="o",
                    capsize=3, label=f"one-shot (mean ± std of {levels[0]['n']})")
        ax.fill_between(xs, [r["test/acc min"] for r in levels], [r["test/acc max"] for r in levels], alpha=0.2,
                        label="one-shot range")
    for run in lotteries:
        draw_lottery(ax, run.metrics[run_record.LOTTERY], f"IMP rounds ({run.path.name})", marker="s")
    decorate(ax, "sparsity (%)", "test accuracy", "Accuracy vs sparsity, magnitude pruning", target)
    return fig


def draw_lottery(ax: Axes, state: dict, label: str, marker: str = "o") -> None:
    """A lottery run's IMP rounds (test accuracy against sparsity) and its control as a black cross."""
    rounds = state["rounds"]
    ax.plot([100 * r["sparsity"] for r in rounds], [r[ACC] for r in rounds], marker=marker, label=label)
    if "control" in state:
        c = state["control"]
        ax.plot([100 * c["sparsity"]], [c[ACC]], marker="x", color="k", linestyle="none", markersize=10,
                label="layer-shuffled mask, theta_0 (control)" if c.get("kind") == "shuffle" else "random reinit (control)")


def lottery_figures(state: dict, out_dir: Path, target: float | None) -> None:
    """A lottery run's own figures in ``out_dir``: ``lottery.png`` (the IMP rounds and the control) and,
    when the control ran (``control/`` holds its run record), ``control_curve.png`` (its accuracy per epoch)."""
    fig, ax = new_axes()
    draw_lottery(ax, state, "IMP, rewound to theta_0")
    decorate(ax, "sparsity (%)", "test accuracy", "Iterative magnitude pruning", target)
    save(fig, out_dir / "lottery.png")
    control = run_record.read_run(out_dir / "control")
    if control is None:
        return
    epochs = run_record.epoch_rows(control)
    fig, ax = new_axes((6, 4))
    for key in ("test/acc", "train/acc"):
        if epochs and key in epochs[0]:
            ax.plot([e["epoch"] + 1 for e in epochs], [e[key] for e in epochs], marker=".", label=key)
    decorate(ax, "epoch", "accuracy", "Control: winning mask, fresh random init", target)
    save(fig, out_dir / "control_curve.png")


def oneshot_figure(rows: Sequence[dict], path: Path, target: float | None, experiment: Any = None) -> None:
    """A one-shot run's levels (test accuracy against sparsity) saved to ``path`` (and to the TensorBoard
    ``experiment`` as ``oneshot/accuracy_vs_sparsity``)."""
    fig, ax = new_axes()
    ax.plot([100 * r["sparsity"] for r in rows], [r[ACC] for r in rows], marker="o", label="one-shot, no retraining")
    decorate(ax, "sparsity (%)", "test accuracy", "One-shot magnitude pruning", target)
    save(fig, path, experiment, "oneshot/accuracy_vs_sparsity")


def make_figures(
    runs: Sequence[Run], keys: Sequence[str], rows: Sequence[dict], out: Path, target: float | None = None,
    reference: dict | None = None,
) -> dict[str, Figure]:
    """Build the figures that apply to this sweep, save them as PNG in ``out``; return them by name.

    ``target``: the accuracy target drawn on accuracy-vs-sparsity figures; ``reference`` (as
    :func:`~sparse_lab.report.reference.load_reference` reads it): published points marked there.
    """
    figures: dict[str, Figure | None] = {"training_curves": training_curves(runs, keys)}
    figures["methods"] = method_bars(runs)
    if "sparsity" in keys:
        figures["accuracy_vs_sparsity"] = metric_vs_sparsity(rows, target, reference)
    figures["sparsity_per_layer"] = layer_bars(runs, keys, "sparsity")
    figures["density_per_layer"] = layer_bars(runs, keys, "updates/density")
    figures["pruning_accuracy_vs_sparsity"] = pruning_figure(oneshot_levels(runs), runs, target)
    if "paths" in keys:
        figures["accuracy_vs_paths"] = metric_vs(rows, "paths", ACC)
        figures["density_vs_paths"] = metric_vs(rows, "paths", "updates/density")
    if any(r.get("updates/cumulative mean") for r in rows):
        figures["accuracy_vs_cumulative_updates"] = metric_vs(rows, "updates/cumulative", ACC)
    saved = {}
    for name, fig in figures.items():
        if fig is not None:
            save(fig, out / f"{name}.png", close=False)  # kept open for the TensorBoard images
            saved[name] = fig
    return saved


def weight_histogram(flat: Any, stats: dict[str, Any], path: Path) -> None:
    """A histogram of a model's prunable weights (``flat``, one tensor) titled with their statistics
    (:func:`sparse_lab.callbacks.weight_stats.weight_statistics`), saved to ``path``."""
    fig, ax = new_axes((6, 4))
    ax.hist(flat.numpy(), bins=100)
    title = (f"{int(stats['count'])} weights: mean {stats['mean']:.4f}, std {stats['std']:.3f}, "
             f"{100 * stats['below_0.1']:.1f}% |w|<0.1")
    decorate(ax, "weight", "count", title, legend=False)
    save(fig, path)
