"""Turn run dirs into tables (and, later, figures)."""

from sparse_lab.report.runs import Run, find_runs
from sparse_lab.report.table import aggregate, swept_keys

__all__ = ["Run", "aggregate", "find_runs", "swept_keys"]
