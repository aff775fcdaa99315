"""The sweep report: grouping by swept keys, means over seeds, failed runs listed, files written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sparse_lab.report.__main__ import main
from sparse_lab.report.runs import find_runs
from sparse_lab.report.table import aggregate, swept_keys


def fake_run(root: Path, name: str, overrides: list[str], acc: float | None, status: str = "completed") -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"status": status, "epochs": [{"epoch": 0, "updates/density": 0.01}], "test": None}
    if acc is not None:
        record["test"] = {"test/acc": acc, "test/loss": 1 - acc}
    (d / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    fake_run(tmp_path, "0", ["method=rw_target", "paths=10", "seed=0"], 0.80)
    fake_run(tmp_path, "1", ["method=rw_target", "paths=10", "seed=1"], 0.90)
    fake_run(tmp_path, "2", ["method=rw_target", "paths=200", "seed=0"], 0.95)
    fake_run(tmp_path, "3", ["method=rw_random", "paths=10", "seed=0"], 0.70)
    fake_run(tmp_path, "4", ["method=rw_random", "paths=10", "seed=1"], None, status="failed")
    (tmp_path / "5" / ".hydra").mkdir(parents=True)  # started, no metrics yet
    (tmp_path / "5" / ".hydra" / "overrides.yaml").write_text("- method=rw_random\n- paths=200\n- seed=0\n")
    return tmp_path


def test_groups_by_the_two_swept_keys_and_averages_over_seeds(sweep: Path) -> None:
    runs = find_runs(sweep)
    assert len(runs) == 6 and swept_keys(runs) == ["method", "paths"]
    keys, rows = aggregate(runs)
    by = {(r["method"], r["paths"]): r for r in rows}
    assert by[("rw_target", "10")]["test/acc mean"] == pytest.approx(0.85)
    assert by[("rw_target", "10")]["test/acc std"] == pytest.approx(0.0707107, rel=1e-5)
    assert by[("rw_target", "10")]["test/acc n"] == 2
    assert by[("rw_target", "200")]["test/acc mean"] == pytest.approx(0.95)
    assert by[("rw_random", "10")]["test/acc n"] == 1 and by[("rw_random", "10")]["completed"] == 1
    assert "4: failed" in by[("rw_random", "10")]["not_completed"]
    assert by[("rw_random", "200")]["test/acc mean"] is None
    assert "5: no metrics" in by[("rw_random", "200")]["not_completed"]
    assert [(r["method"], r["paths"]) for r in rows] == [
        ("rw_random", "10"), ("rw_random", "200"), ("rw_target", "10"), ("rw_target", "200")
    ]


def test_cli_writes_markdown_and_csv(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(sweep)]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "| rw_target | 10 | 2/2 | 0.85 ± 0.07071 |" in md
    assert "Runs not completed:" in md and "4: failed" in md
    rows = list(csv.DictReader(open(sweep / "report" / "report.csv")))
    assert len(rows) == 4 and float(rows[2]["test/acc mean"]) == pytest.approx(0.85)


def test_empty_dir_is_an_error(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 1
