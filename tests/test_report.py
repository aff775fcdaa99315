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
    epoch = {"epoch": 0, "updates/density": 0.01, "updates/density/net.0": 0.02, "val/acc": 0.5, "train_time_s": 1.0}
    record = {"status": status, "epochs": [epoch], "test": None, "peak_rss_mb": 900.0}
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


def test_a_method_chosen_by_a_preset_groups_with_one_chosen_on_the_command_line(tmp_path: Path) -> None:
    """experiment=rw_mnist_rows picks rw_random in its defaults (a config group choice, no override);
    its full runs come from ``method=full``: the table tells them apart by method all the same."""
    for name, overrides, method, acc in (("0", ["paths=10", "seed=0"], "rw_random", 0.9), ("1", ["paths=10", "seed=1"], "rw_random", 0.8),
                                         ("full/0", ["method=full", "paths=10", "seed=0"], "full", 0.97)):
        fake_run(tmp_path, name, ["experiment=rw_mnist_rows", *overrides], acc)
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(
            f"hydra:\n  runtime:\n    choices:\n      experiment: rw_mnist_rows\n      method: {method}\n      hydra/launcher: basic\n")
    runs = find_runs(tmp_path)
    assert swept_keys(runs) == ["method"]
    _, rows = aggregate(runs)
    assert {r["method"]: (r["test/acc n"], r["test/acc mean"]) for r in rows} == {"full": (1, 0.97), "rw_random": (2, pytest.approx(0.85))}


def test_cli_writes_markdown_and_csv(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(sweep)]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "| rw_target | 10 | 2/2 | 0.85 ± 0.07071 |" in md
    assert "Runs not completed:" in md and "4: failed" in md
    rows = list(csv.DictReader(open(sweep / "report" / "report.csv")))
    assert len(rows) == 4 and float(rows[2]["test/acc mean"]) == pytest.approx(0.85)


def test_empty_dir_is_an_error(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 1


def test_reference_deltas_and_tolerance(sweep: Path) -> None:
    from sparse_lab.report.reference import compare, load_reference

    ref = sweep / "ref.yaml"
    ref.write_text(
        "tolerance:\n  test/acc: {abs: 0.005}\n  test/loss: {rel: 0.1}\n"
        "settings:\n  method=rw_target,paths=10: {test/acc: 0.84}\n  method=rw_target,paths=200: {test/acc: 0.951, test/loss: 0.04}\n"
    )
    _, rows = aggregate(find_runs(sweep))
    result = {(c["setting"], c["metric"]): c for c in compare(rows, load_reference(ref))}
    assert result[("method=rw_target,paths=10", "test/acc")]["delta"] == pytest.approx(0.01)
    assert result[("method=rw_target,paths=10", "test/acc")]["ok"] is False
    assert result[("method=rw_target,paths=200", "test/acc")]["ok"] is True
    assert result[("method=rw_target,paths=200", "test/loss")]["delta"] == pytest.approx(0.01)
    assert result[("method=rw_target,paths=200", "test/loss")]["ok"] is False  # 25% off, 10% allowed
    assert main([str(sweep), "--reference", str(ref)]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "**NO**" in md and "2 of 3 cells outside tolerance" in md


def test_figures_are_valid_pngs_and_tensorboard_images(sweep: Path) -> None:
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main([str(sweep)])
    for name in ("accuracy_vs_paths", "density_vs_paths", "training_curves", "methods", "density_per_layer"):
        path = sweep / "report" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plt.imread(path).ndim == 3
    events = EventAccumulator(str(sweep / "report" / "tb"))
    events.Reload()
    assert "report/accuracy_vs_paths" in events.Tags()["images"]


@pytest.mark.slow
def test_report_of_a_real_synthetic_sweep_with_a_failing_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run(
        [sys.executable, "-m", "sparse_lab", "-m", "model=mlp,cnn", "seed=0,1", "method=rw_target", "paths=5",
         "data=synthetic", "hardware=cpu", "epochs=1", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 1  # the cnn jobs fail (random walks need a chain of Linear layers); the sweep goes on
    runs = find_runs(tmp_path)
    assert sorted(r.status for r in runs) == ["completed", "completed", "no metrics", "no metrics"]
    keys, rows = aggregate(runs)
    mlp_row = next(r for r in rows if r.get("model") == "mlp")
    accs = [json.loads((tmp_path / d / "metrics.json").read_text())["test"]["test/acc"] for d in ("0", "1")]
    assert mlp_row["test/acc mean"] == pytest.approx(sum(accs) / 2)
    assert mlp_row["test/acc n"] == 2
    assert main([str(tmp_path)]) == 0
    assert "no metrics" in (tmp_path / "report" / "report.md").read_text()


def test_console_script_dispatches_report(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sparse_lab.app import cli

    monkeypatch.setattr(sys, "argv", ["sparse-lab", "report", str(sweep)])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 0 and (sweep / "report" / "report.md").exists()


def test_sparsity_sweep_gets_an_accuracy_vs_sparsity_figure(tmp_path: Path) -> None:
    for i, (sparsity, acc) in enumerate(((0.0, 0.83), (0.5, 0.80), (0.9, 0.60))):
        fake_run(tmp_path, str(i), [f"sparsity={sparsity}"], acc)
    assert main([str(tmp_path), "--target", "0.8"]) == 0
    assert (tmp_path / "report" / "accuracy_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "report" / "accuracy_vs_paths.png").exists()


def test_oneshot_levels_are_averaged_over_seeds(tmp_path: Path) -> None:
    for seed, accs in enumerate(((0.83, 0.80), (0.81, 0.70))):
        fake_run(tmp_path, str(seed), [f"seed={seed}"], accs[0])
        path = tmp_path / str(seed) / "metrics.json"
        record = json.loads(path.read_text())
        record["oneshot"] = [
            {"percent": 0, "kept": 6344, "sparsity": 0.0, "test/acc": accs[0]},
            {"percent": 50, "kept": 3172, "sparsity": 0.5, "test/acc": accs[1]},
        ]
        path.write_text(json.dumps(record))
    assert main([str(tmp_path), "--target", "0.8"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| 50 | 3172 | 50.0% | 0.7500 ± 0.0707 | 0.7000 | 0.8000 | 2 |" in md
    assert (tmp_path / "report" / "pruning_accuracy_vs_sparsity.png").exists()


def test_lottery_rounds_are_tabled_and_plotted(tmp_path: Path) -> None:
    fake_run(tmp_path, "0", ["seed=0"], 0.81)
    path = tmp_path / "0" / "metrics.json"
    record = json.loads(path.read_text())
    record["lottery"] = {
        "rounds": [{"round": 0, "kept": 6344, "sparsity": 0.0, "epochs": 10, "test/acc": 0.83, "reached": True},
                   {"round": 1, "kept": 5075, "sparsity": 0.2, "epochs": 3, "test/acc": 0.81, "reached": True}],
        "control": {"round": 1, "kept": 5075, "sparsity": 0.2, "epochs": 40, "test/acc": 0.78, "reached": False},
    }
    path.write_text(json.dumps(record))
    assert main([str(tmp_path), "--target", "0.8"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| 1 | 5075 | 20.0% | 3 | 0.8100 | True |" in md and "| control | 5075 | 20.0% | 40 | 0.7800 | False |" in md
    assert (tmp_path / "report" / "pruning_accuracy_vs_sparsity.png").exists()


def test_search_result_names_the_best_trial_and_its_run(tmp_path: Path) -> None:
    """An Optuna sweep: the best trial's params, objective and run dir; long float settings shortened."""
    for i, (sparsity, acc) in enumerate(((0.509963891096216, 0.979), (0.936968770383219, 0.9763), (0.9555237739636369, 0.9737))):
        fake_run(tmp_path, str(i), [f"sparsity={sparsity}"], acc)
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  sparsity: 0.936968770383219\nbest_value: 0.936968770383219\n"
    )
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| 0.937 | 1/1 | 0.9763 |" in md and "0.936968770383219" not in md
    assert "## Search result" in md and "| sparsity | objective | run |\n|---|---|---|\n| 0.937 | 0.937 | 1 |" in md


def test_search_result_of_a_multi_objective_study_lists_the_pareto_front(tmp_path: Path) -> None:
    fake_run(tmp_path, "0", ["paths=10", "lr=0.001"], 0.86)
    fake_run(tmp_path, "1", ["paths=500", "lr=0.001"], 0.95)
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nsolutions:\n- params: {paths: 10}\n  values: [10, 0.86]\n- params: {paths: 500}\n  values: [500, 0.95]\n"
    )
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| paths | objective | run |" in md
    assert "| 10 | 10, 0.86 | 0 |" in md and "| 500 | 500, 0.95 | 1 |" in md


def test_a_plain_sweep_has_no_search_section(sweep: Path) -> None:
    assert main([str(sweep)]) == 0
    assert "Search result" not in (sweep / "report" / "report.md").read_text()


def test_a_zoo_sweep_tables_method_by_sparsity_against_one_sided_references(tmp_path: Path) -> None:
    from sparse_lab.report.reference import compare, load_reference

    accs = {("snip", 0.95): (0.981, 0.983), ("snip", 0.98): (0.971, 0.976), ("rigl", 0.98): (0.985, 0.983)}
    for i, ((method, sparsity), values) in enumerate(accs.items()):
        for seed, acc in enumerate(values):
            fake_run(tmp_path, f"{i}_{seed}", [f"method={method}", f"sparsity={sparsity}", f"seed={seed}"], acc)
    ref = tmp_path / "ref.yaml"
    ref.write_text("tolerance:\n  test/acc: {abs_below: 0.003}\nsettings:\n  method=snip,sparsity=0.95: {test/acc: 0.984}\n"
                   "  method=snip,sparsity=0.98: {test/acc: 0.976}\n  method=rigl,sparsity=0.98: {test/acc: 0.9801}\n")
    keys, rows = aggregate(find_runs(tmp_path))
    assert keys == ["method", "sparsity"] and len(rows) == 3
    ok = {c["setting"]: c["ok"] for c in compare(rows, load_reference(ref))}
    # 0.982 is 0.002 below 0.984 and 0.9735 0.0025 below 0.976: within; rigl above: within
    assert ok == {"method=snip,sparsity=0.95": True, "method=snip,sparsity=0.98": True, "method=rigl,sparsity=0.98": True}
    ref.write_text(ref.read_text().replace("0.976", "0.9775"))
    assert not {c["setting"]: c["ok"] for c in compare(rows, load_reference(ref))}["method=snip,sparsity=0.98"]
    assert main([str(tmp_path), "--reference", str(ref)]) == 0
    assert (tmp_path / "report" / "accuracy_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"


def test_a_pruning_sweep_tables_nominal_and_effective_sparsity(tmp_path: Path) -> None:
    """The mask callbacks' last-epoch sparsity/global and sparsity/effective, averaged over seeds."""
    for seed, effective in enumerate((0.996, 0.998)):
        for method, eff in (("grasp", effective), ("synflow", 0.99)):
            name = f"{method}_{seed}"
            fake_run(tmp_path, name, [f"method={method}", "sparsity=0.99", f"seed={seed}"], 0.9)
            record = json.loads((tmp_path / name / "metrics.json").read_text())
            record["epochs"][0].update({"sparsity/global": 0.99, "sparsity/effective": eff})
            (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    _, rows = aggregate(find_runs(tmp_path))
    by = {r["method"]: r for r in rows}
    assert by["grasp"]["sparsity/effective mean"] == pytest.approx(0.997) and by["synflow"]["sparsity/effective mean"] == 0.99
    assert by["grasp"]["sparsity/global mean"] == 0.99
    main([str(tmp_path)])
    header = (tmp_path / "report" / "report.md").read_text().split("\n| method")[1].split("\n")[0]
    assert "sparsity/effective" in header and "sparsity/global" in header


def test_best_test_accuracy_over_epochs_is_tabled_when_the_epochs_were_tested(tmp_path: Path) -> None:
    for seed, (accs, final) in enumerate([([0.90, 0.97, 0.95], 0.95), ([0.92, 0.93, 0.99], 0.99)]):
        d = tmp_path / str(seed)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- method=snip\n- seed={seed}\n")
        epochs = [{"epoch": i, "test/acc": a, "train_time_s": 1.0} for i, a in enumerate(accs)]
        (d / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": epochs, "test": {"test/acc": final}}))
    _, rows = aggregate(find_runs(tmp_path))
    assert rows[0]["test/acc mean"] == pytest.approx(0.97) and rows[0]["best test/acc mean"] == pytest.approx(0.98)
    assert main([str(tmp_path)]) == 0
    assert "best test/acc" in (tmp_path / "report" / "report.md").read_text()
    fake_run(tmp_path / "untested", "0", ["method=snip", "seed=0"], 0.9)  # epochs without test/acc: no best
    _, rows = aggregate(find_runs(tmp_path / "untested"))
    assert rows[0]["test/acc n"] == 1 and rows[0]["best test/acc n"] == 0


def test_epochs_without_an_evaluation_are_skipped_by_the_curves_and_the_best(tmp_path: Path) -> None:
    """trainer.check_val_every_n_epoch=2 (or a run that stopped within an evaluation) leaves epoch rows
    without test/acc: the report plots and takes the best over the rows that have it (it raised a
    KeyError on such a sweep)."""
    from sparse_lab.report.figures import training_curves

    d = tmp_path / "0"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("- method=snip\n- seed=0\n")
    epochs = [{"epoch": 0, "train/acc": 0.5}, {"epoch": 1, "train/acc": 0.6, "test/acc": 0.93},
              {"epoch": 2, "train/acc": 0.7}, {"epoch": 3, "train/acc": 0.8, "test/acc": 0.91}]
    (d / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": epochs, "test": {"test/acc": 0.91}}))
    runs = find_runs(tmp_path)
    figure = training_curves(runs, ["method"])
    (line,) = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [2, 4] and list(line.get_ydata()) == [0.93, 0.91]
    assert aggregate(runs)[1][0]["best test/acc mean"] == pytest.approx(0.93)
    (d / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs": epochs[:3], "test": None}))
    (d / ".hydra" / "overrides.yaml").write_text(f"- method=snip\n- seed=0\n- resume={d}\n")  # resumed: no new setting
    assert swept_keys(find_runs(tmp_path)) == []
    assert main([str(tmp_path)]) == 0  # an interrupted run: its last evaluated epoch in the per-run table
    assert "| 0 | interrupted | 3 |  | 0.93 | 0.93 |" in (tmp_path / "report" / "report.md").read_text()
