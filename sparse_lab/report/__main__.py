"""``python -m sparse_lab.report DIR``: a sweep's runs as a markdown table and a CSV in ``DIR/report/``."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from sparse_lab.report.runs import find_runs
from sparse_lab.report.table import DEFAULT_METRICS, aggregate


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def markdown(keys: list[str], rows: list[dict], metrics: tuple[str, ...]) -> str:
    present = [m for m in metrics if any(r[f"{m} n"] for r in rows)]
    header = [*keys, "runs", *present]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r[k] for k in keys] + [f"{r['completed']}/{r['runs']}"]
        for m in present:
            mean, std, n = r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"]
            cells.append("" if mean is None else _fmt(mean) + (f" ± {_fmt(std)}" if n > 1 else ""))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    failed = [f"- {r['not_completed']}" for r in rows if r["not_completed"]]
    return "\n".join(lines + (["", "Runs not completed:", *failed] if failed else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_lab.report", description=__doc__)
    parser.add_argument("dir", type=Path, help="a multirun dir (or any dir holding run dirs)")
    args = parser.parse_args(argv)
    runs = find_runs(args.dir)
    if not runs:
        print(f"no runs found under {args.dir}", file=sys.stderr)
        return 1
    keys, rows = aggregate(runs)
    out = args.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(keys, rows, DEFAULT_METRICS)
    (out / "report.md").write_text(f"# Report: {args.dir}\n\n{text}")
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(text, end="")
    print(f"wrote {out / 'report.md'} and {out / 'report.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
