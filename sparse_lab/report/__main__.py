"""``python -m sparse_lab.report DIR [--reference FILE]``: a sweep as tables and figures in ``DIR/report/``.

Writes ``report.md`` (the table; with ``--reference``, reference values, deltas and the cells
outside tolerance), ``report.csv``, PNG figures, and the figures as TensorBoard images under
``DIR/report/tb``. Runs that failed or are still running are listed, never fatal; exit code 1 when
no run has any result (nothing was reported), 2 when ``DIR`` is not a folder.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from sparse_lab.report.figures import make_figures, oneshot_levels
from sparse_lab.report.reference import compare, load_reference
from sparse_lab.report.runs import BEST, Run, find_runs, search_result
from sparse_lab.report.table import DEFAULT_METRICS, as_number, aggregate
from sparse_lab.run_record import epoch_rows


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def _fmt_setting(value: str) -> str:
    """A swept value as typed, unless it is a long float (a sampler's draw): then as :func:`_fmt` writes it."""
    number = as_number(value)
    if isinstance(number, str) or len(value) <= 8 or value.lstrip("-").isdigit():
        return value
    return _fmt(number)


def markdown(keys: list[str], rows: list[dict], metrics: tuple[str, ...]) -> str:
    present = [m for m in metrics if any(r[f"{m} n"] for r in rows)]
    header = [*keys, "runs", *present]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_fmt_setting(r[k]) for k in keys] + [f"{r['completed']}/{r['runs']}"]
        for m in present:
            mean, std, n = r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"]
            cells.append("" if mean is None else _fmt(mean) + (f" ± {_fmt(std)}" if n > 1 else ""))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    failed = [f"- {r['not_completed']}" for r in rows if r["not_completed"]]
    return "\n".join(lines + (["", "Runs not completed:", *failed] if failed else [])) + "\n"


def runs_markdown(runs: list[Run], root: Path) -> str:
    """One line per run that has epochs: its status, how far it trained, and its final and best test
    accuracy (an interrupted or failed run's last evaluated epoch: the table above counts completed runs only)."""
    lines = ["| run | status | epochs | step | test/acc (final, or last epoch) | best test/acc |", "|---|---|---|---|---|---|"]
    for run in runs:
        epochs = epoch_rows(run.metrics)
        if not epochs:
            continue
        tested = [e for e in epochs if "test/acc" in e]
        final = run.final("test/acc") if run.status == "completed" else (tested[-1]["test/acc"] if tested else None)
        lines.append(f"| {run.path.relative_to(root).as_posix() or '.'} | {run.status} | {len(epochs)} | {epochs[-1].get('step', '')} "
                     f"| {_fmt(final)} | {_fmt(run.final(BEST + 'test/acc'))} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def reference_markdown(keys: list[str], comparisons: list[dict]) -> str:
    lines = ["| " + " | ".join([*keys, "metric", "reference", "measured", "delta", "within tolerance"]) + " |"]
    lines.append("|" + "---|" * (len(keys) + 5))
    outside = 0
    for c in comparisons:
        ok = c.get("ok")
        outside += ok is False
        mark = "" if ok is None else ("yes" if ok else "**NO**")
        delta = c.get("delta")
        cells = [str(c["row"].get(k, "")) for k in keys]
        cells += [c["metric"], _fmt(c["reference"]), _fmt(c["measured"]), "" if delta is None else f"{delta:+.4g}", mark]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{outside} of {len(comparisons)} cells outside tolerance.\n"


def _runs_with(params: dict, runs: list[Run]) -> str:
    """Names of the run dirs whose overrides set every key of ``params`` to its value."""
    return ", ".join(
        run.path.name for run in runs if all(as_number(run.overrides.get(k, "")) == v for k, v in params.items())
    )


def search_markdown(result: dict, runs: list[Run]) -> str:
    """The sweeper's best trial (or its Pareto front), with the run dir that ran it."""
    solutions = result.get("solutions") or [{"params": result.get("best_params") or {}, "values": [result.get("best_value")]}]
    keys = sorted({k for s in solutions for k in s["params"]})
    lines = ["| " + " | ".join([*keys, "objective", "run"]) + " |", "|" + "---|" * (len(keys) + 2)]
    for s in solutions:
        cells = [_fmt(s["params"].get(k)) for k in keys]
        cells += [", ".join(_fmt(v) for v in s["values"]), _runs_with(s["params"], runs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tensorboard_images(figures: dict, log_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for name, fig in figures.items():
            writer.add_figure(f"report/{name}", fig, close=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_lab.report", description=__doc__)
    parser.add_argument("dir", type=Path, help="a multirun dir (or any dir holding run dirs)")
    parser.add_argument("--reference", type=Path, help="YAML with reference numbers (see conf/reference/)")
    parser.add_argument("--target", type=float, help="accuracy target drawn on accuracy-vs-sparsity figures")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if not args.dir.is_dir():
        print(f"sparse_lab.report: error: {args.dir} is not a folder: give a run or multirun dir", file=sys.stderr)
        return 2
    runs = find_runs(args.dir)
    if not runs:
        print(f"no runs found under {args.dir}", file=sys.stderr)
        return 1
    if not any(run.metrics.get("epochs") or run.metrics.get("test") for run in runs):
        statuses = ", ".join(f"{run.path.name}: {run.status}" for run in runs)
        print(f"no run under {args.dir} has results to report ({statuses})", file=sys.stderr)
        return 1
    keys, rows = aggregate(runs)
    out = args.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(keys, rows, DEFAULT_METRICS)
    reference = load_reference(args.reference) if args.reference else None
    if reference is not None:
        comparisons = compare(rows, reference)
        text += f"\n## Against the reference ({args.reference})\n\n" + reference_markdown(keys, comparisons)
    search = search_result(args.dir)
    if search:
        text += "\n## Search result (optimization_results.yaml: the sweeper's best trial)\n\n" + search_markdown(search, runs)
    levels = oneshot_levels(runs)
    if levels:
        text += "\n## One-shot pruning (no retraining)\n\n| percent | kept | sparsity | test/acc mean ± std | min | max | runs |\n|---|---|---|---|---|---|---|\n"
        text += "".join(
            f"| {r['percent']:g} | {r['kept']} | {100 * r['sparsity']:.1f}% | {r['test/acc mean']:.4f} ± {r['test/acc std']:.4f} "
            f"| {r['test/acc min']:.4f} | {r['test/acc max']:.4f} | {r['n']} |\n"
            for r in levels
        )
    for run in runs:
        state = run.metrics.get("lottery")
        if state:
            text += f"\n## Lottery ticket rounds ({run.path})\n\n| round | kept | sparsity | epochs | test/acc | reached target |\n|---|---|---|---|---|---|\n"
            for r in state["rounds"] + ([{**state["control"], "round": "control"}] if "control" in state else []):
                text += (f"| {r['round']} | {r['kept']} | {100 * r['sparsity']:.1f}% | {r['epochs']} | {r['test/acc']:.4f} "
                         f"| {r.get('reached')} |\n")
    per_run = runs_markdown(runs, args.dir)
    if per_run:
        text += "\n## Runs\n\n" + per_run
    figures = make_figures(runs, keys, rows, out, target=args.target, reference=reference)
    text += "".join(f"\n![{name}]({name}.png)\n" for name in figures)
    (out / "report.md").write_text(f"# Report: {args.dir}\n\n{len(runs)} runs.\n\n{text}")
    with open(out / "report.csv", "w", newline="") as f:
        fields = [k for k in rows[0] if not k.startswith("_")]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_tensorboard_images(figures, out / "tb")
    print(text, end="")
    print(f"wrote {out}/report.md, report.csv, {len(figures)} figures in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
