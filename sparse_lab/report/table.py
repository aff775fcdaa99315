"""Group runs by the keys a sweep varied and aggregate their final metrics."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

from sparse_lab.report.runs import Run

DEFAULT_METRICS = ("test/acc", "best test/acc", "test/loss", "sparsity/global", "sparsity/effective", "updates/density",
                   "updates/cumulative", "updates/rows_x_fan_in", "updates/cumulative_rows_x_fan_in", "updates/changed")
SEED_KEYS = ("seed",)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Settings (config group choices and overrides: :attr:`Run.values`) whose values differ between
    runs, seeds excluded, in a stable order (a preset's method and a ``method=`` override compare alike)."""
    keys: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        for k, v in run.values.items():
            keys[k].add(v)
    return [k for k in sorted(keys) if len(keys[k]) > 1 and k not in SEED_KEYS]


def as_number(v: str) -> float | str:
    """An override value as a float when it reads as one (``"1e-3"``, ``"699"``), else as it is."""
    try:
        return float(v)
    except ValueError:
        return v


def aggregate(runs: Sequence[Run], metrics: Sequence[str] = DEFAULT_METRICS) -> tuple[list[str], list[dict]]:
    """One row per setting (values of the swept keys): mean, std and count of each metric over seeds."""
    keys = swept_keys(runs)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.values.get(k, "") for k in keys)].append(run)
    rows = []
    for setting in sorted(groups, key=lambda s: tuple((isinstance(as_number(v), str), as_number(v)) for v in s)):
        members = groups[setting]
        done = [r for r in members if r.status == "completed"]
        common = {k: v for k, v in members[0].values.items() if all(m.values.get(k) == v for m in members)}
        row: dict = {**dict(zip(keys, setting)), "_values": common}
        row["runs"] = len(members)
        row["completed"] = len(done)
        row["not_completed"] = ", ".join(f"{r.path.name}: {r.status}" for r in members if r.status != "completed")
        for m in metrics:
            values = [v for v in (r.final(m) for r in done) if isinstance(v, (int, float)) and math.isfinite(v)]
            row[f"{m} mean"] = statistics.fmean(values) if values else None
            row[f"{m} std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
            row[f"{m} n"] = len(values)
        rows.append(row)
    return keys, rows
