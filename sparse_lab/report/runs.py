"""Find the runs under a directory and read what each one saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparse_lab import run_record

BEST = "best "
NOT_SETTINGS = ("resume",)  # overrides that continue a run rather than set up an experiment


@dataclass
class Run:
    """One run dir: its command-line overrides, its metrics.json (if any) and its status."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        """Config group choices (``method``, ``data``, ...) updated by the command-line overrides."""
        return {**self.choices, **self.overrides}

    @property
    def status(self) -> str:
        return self.metrics.get(run_record.STATUS, "no metrics")

    def final(self, key: str) -> float | None:
        """A final value: from the test results, else from the last epoch row; ``best <metric>``: the
        largest value the epoch rows reached (``best test/acc`` of a run with ``data.test_each_epoch``:
        the best test accuracy over epochs, as papers that keep their best checkpoint report it)."""
        if key.startswith(BEST):
            reached = [r.get(key[len(BEST):]) for r in run_record.epoch_rows(self.metrics)]
            numbers = [v for v in reached if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return max(numbers) if numbers else None
        test = self.metrics.get(run_record.TEST) or {}
        if key in test:
            return test[key]
        epochs = run_record.epoch_rows(self.metrics)
        return epochs[-1].get(key) if epochs else None


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    pairs = (item.split("=", 1) for item in items if "=" in item and not item.startswith("hydra."))
    return {k: v for k, v in pairs if k not in NOT_SETTINGS}


def _choices(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "hydra.yaml"
    if not path.exists():
        return {}
    text = path.read_text()
    start = text.find("  runtime:")
    block = text[start:] if start >= 0 else ""
    begin = block.find("    choices:")
    if begin < 0:
        return {}
    choices = {}
    for line in block[begin:].splitlines()[1:]:
        if not line.startswith("      "):
            break
        key, _, value = line.strip().partition(": ")
        if "/" not in key:
            choices[key] = value.strip()
    return choices


def find_runs(root: Path) -> list[Run]:
    """Every dir below ``root`` (itself included) that holds a ``.hydra`` folder or a ``metrics.json``."""
    dirs = {p.parent for p in root.rglob(run_record.FILENAME)} | {p.parent for p in root.rglob(".hydra")}
    # A run's own sub-runs (e.g. the rounds of a lottery run) are part of it, not runs of the sweep.
    dirs = {d for d in dirs if not any(parent in dirs for parent in d.parents)}
    runs = []
    for d in sorted(dirs):
        try:
            metrics = run_record.read_run(d) or {}
        except json.JSONDecodeError:
            metrics = {"status": "unreadable metrics.json"}
        runs.append(Run(d, _overrides(d), metrics, _choices(d)))
    return runs


def search_result(root: Path) -> dict[str, Any] | None:
    """What a search sweeper saved under ``root`` (Hydra's Optuna sweeper: ``optimization_results.yaml``).

    ``{"best_params": {...}, "best_value": v}`` for one objective, ``{"solutions": [{"params": {...},
    "values": [...]}, ...]}`` (the Pareto front) for several; None when the sweep was not a search.
    """
    path = root / "optimization_results.yaml"
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text()) or None
