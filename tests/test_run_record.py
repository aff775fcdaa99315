"""The run record (metrics.json): one owner of the schema, round trips, refused statuses, atomic writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sparse_lab import run_record
from sparse_lab.report.runs import find_runs

SRC = Path(__file__).resolve().parents[1] / "sparse_lab"


def test_a_record_round_trips_through_the_file(tmp_path: Path) -> None:
    record = run_record.new()
    record["epochs"].append({"epoch": 0, "step": 10, "train_time_s": 0.5, "epoch_time_s": 0.6, "peak_rss_mb": 100.0,
                             "train/acc": 0.5, "train/loss": "nan"})
    record.update(test={"test/acc": 0.75}, status=run_record.COMPLETED, fit_time_s=1.5, oneshot=[{"percent": 10}])
    run_record.write_run(tmp_path, record)
    assert run_record.read_run(tmp_path) == record
    assert run_record.read(tmp_path / "metrics.json") == record
    assert (tmp_path / "metrics.json").read_text() == json.dumps(record, indent=2)  # the format of the files already written
    assert run_record.epoch_rows(record) == record["epochs"] and run_record.epoch_rows(None) == []


def test_a_finished_protocol_record_keeps_the_key_order_of_the_old_files() -> None:
    record = run_record.completed({"test/acc": 0.8}, lottery={"rounds": []})
    assert json.dumps(record) == '{"status": "completed", "epochs": [], "test": {"test/acc": 0.8}, "lottery": {"rounds": []}}'


def test_a_run_without_a_record_reads_as_none(tmp_path: Path) -> None:
    assert run_record.read_run(tmp_path) is None


@pytest.mark.parametrize("status", ["done", None, "COMPLETED"])
def test_an_unknown_status_is_flagged_and_never_written(tmp_path: Path, status: object) -> None:
    run_record.write_run(tmp_path, run_record.new())
    record = {**run_record.new(), "status": status}
    assert run_record.problems(record) == [f"status={status!r} is not one of running, completed, failed, interrupted"]
    with pytest.raises(run_record.RecordError, match="is not one of"):
        run_record.write_run(tmp_path, record)
    assert run_record.read_run(tmp_path) == run_record.new()  # the file as it was


def test_malformed_epochs_or_test_are_flagged() -> None:
    assert len(run_record.problems({"status": "running", "epochs": {}, "test": []})) == 2
    assert run_record.problems([]) == ["a run record is a JSON object, not list"]
    assert all(run_record.problems(run_record.new() | {"status": s}) == [] for s in run_record.STATUSES)


def test_an_old_run_dir_still_reports(tmp_path: Path) -> None:
    # written by hand as the code before the run-record module wrote it
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": [{"epoch": 0, "val/acc": 0.4}],
                                                       "test": {"test/acc": 0.5}, "fit_time_s": 2.0}, indent=2))
    (run,) = find_runs(tmp_path)
    assert run.status == "completed" and run.final("test/acc") == 0.5 and run.final("val/acc") == 0.4


def test_only_the_run_record_module_names_the_metrics_file_in_code() -> None:
    """Protocols, callbacks and the report ask ``run_record``; no other module opens metrics.json itself."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "run_record.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            # a string literal naming the file (docstrings and messages mention it in prose, in backquotes or words)
            if re.search(r"""["'](?:[^"'`]*/)?metrics\.json["']""", code) or re.search(r"/\s*[\"']metrics\.json", code):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []

