"""Scaling out: launcher and sweeper configs compose, joblib and Optuna sweeps run, compile=true trains.

The Hydra plugins come from the ``cluster`` extra (``pip install -e ".[dev,cluster]"``, as CI does).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sparse_lab.app import CONFIG_DIR, objective, train
from sparse_lab.errors import ConfigError
from sparse_lab.objectives import constrained
from tests.conftest import FAST, REPO, make_cfg

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason='needs the cluster extra: pip install -e ".[cluster]"')
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs the cluster extra: pip install -e ".[cluster]"')
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='needs the cluster extra: pip install -e ".[cluster]"')

# Tiny jobs for the subprocess sweeps: synthetic data, a 784-32-10 MLP, one epoch, nothing but metrics.json.
TINY = [*FAST, "model.hidden=[32]", "logger=null"]

LAUNCHERS = {
    "basic": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SEARCHES = {  # experiment preset -> (method, searched knob, study direction)
    "rw_fewest_paths": ("rw_target", "paths", "minimize"),
    "progressive_max_sparsity": ("progressive", "sparsity", "maximize"),
}


def hydra_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The whole config, ``hydra`` node included, as a multirun would compose it."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={tmp_path}", *overrides], return_hydra_config=True)


def run_app(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparse_lab", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


# ---- composition ----


def test_every_launcher_option_is_listed() -> None:
    ours = {p.stem for p in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")}
    assert ours <= set(LAUNCHERS), f"add {ours - set(LAUNCHERS)} to LAUNCHERS"


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_options_compose_and_instantiate(tmp_path: Path, launcher: str) -> None:
    cfg = hydra_cfg(tmp_path, f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_ == LAUNCHERS[launcher]
    if launcher != "basic":  # Hydra builds its own basic launcher; declarative configs may not target hydra._internal
        assert type(instantiate(cfg.hydra.launcher)).__name__ == LAUNCHERS[launcher].rsplit(".", 1)[1]


def test_joblib_n_jobs_from_the_command_line(tmp_path: Path) -> None:
    cfg = hydra_cfg(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert instantiate(cfg.hydra.launcher).joblib["n_jobs"] == 2


def test_slurm_launcher_resources(tmp_path: Path) -> None:
    cfg = hydra_cfg(
        tmp_path, "hydra/launcher=slurm", "hardware=gpu", "trainer.devices=4", "+trainer.num_nodes=2",
        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.timeout_min=120", "hydra.launcher.mem_gb=64",
    )
    params = instantiate(cfg.hydra.launcher).params  # what the launcher hands to submitit
    assert params["partition"] == "gpu" and params["timeout_min"] == 120 and params["mem_gb"] == 64
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)  # nodes: trainer.num_nodes
    assert params["submitit_folder"].endswith(".submitit/%j")


def test_slurm_launcher_defaults(tmp_path: Path) -> None:
    params = instantiate(hydra_cfg(tmp_path, "hydra/launcher=slurm").hydra.launcher).params
    assert params["partition"] is None  # the cluster's default partition
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (1, 1, 1)
    assert params["timeout_min"] == 60 and params["name"] == "sparse_lab"
    assert params["signal_delay_s"] == 120 and params["max_num_timeout"] == 3  # requeued on time limits too


def test_submitit_local_launcher(tmp_path: Path) -> None:
    cfg = hydra_cfg(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    params = instantiate(cfg.hydra.launcher).params
    assert params["timeout_min"] == 5 and params["cpus_per_task"] == 2 and params["gpus_per_node"] is None
    assert params["submitit_folder"] == f"{tmp_path / 'sweep'}/.submitit/%j"  # logs and pickles beside the runs


def test_optuna_sweeper_composes(tmp_path: Path) -> None:
    cfg = hydra_cfg(tmp_path, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=random")
    assert cfg.hydra.sweeper._target_ == OPTUNA
    assert cfg.hydra.sweeper.n_trials == 3 and cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.RandomSampler"


@pytest.mark.parametrize("preset", sorted(SEARCHES))
def test_optuna_presets_compose(tmp_path: Path, preset: str) -> None:
    method, knob, direction = SEARCHES[preset]
    cfg = hydra_cfg(tmp_path, f"experiment={preset}")
    assert cfg.hydra.runtime.choices["method"] == method
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == OPTUNA and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert str(sweeper.direction) == direction == cfg.objective.direction
    assert list(sweeper.params) == [knob]
    # The objective follows the searched knob and ranks every miss of the target after every hit.
    score = instantiate(cfg.objective)
    target = cfg.target_acc
    hit, miss = score({"test/acc": target + 0.001}), score({"test/acc": target - 0.001})
    assert hit == pytest.approx(cfg[knob])
    assert (miss > cfg.objective.worst) if direction == "minimize" else (miss < cfg.objective.worst)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_gpu_precision_options_compose(tmp_path: Path, precision: str) -> None:
    cfg = make_cfg(tmp_path, "hardware=gpu", f"trainer.precision={precision}", "compile=true")
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.compile) == ("gpu", precision, True)


# ---- objectives ----


def test_constrained_objective_ranks_misses_after_hits() -> None:
    def paths(n: int, acc: float) -> float | None:
        return constrained({"test/acc": acc}, value=n, at_least=0.95, direction="minimize", worst=2000, scale=1e4)

    assert paths(300, 0.96) < paths(1000, 0.951) < paths(10, 0.949) < paths(10, 0.90)
    sparsity = constrained({"test/acc": 0.97}, value=0.9, at_least=0.975, direction="maximize", worst=0.0, scale=10)
    assert sparsity == pytest.approx(-0.05)
    assert constrained({}, value=1, at_least=0.5, direction="minimize", worst=2) is None
    # 9,500 of 10,000 correct, as torchmetrics returns it (float32): exactly on the floor, so it counts
    on_floor = torch.tensor(9500 / 10000, dtype=torch.float32).item()
    assert on_floor < 0.95 and paths(699, on_floor) == 699
    assert paths(699, torch.tensor(9499 / 10000, dtype=torch.float32).item()) > 2000  # one sample short
    with pytest.raises(ConfigError, match="direction"):
        constrained({"test/acc": 1.0}, value=1, at_least=0.5, direction="down", worst=2)


def test_default_objective_is_the_final_test_accuracy(tmp_path: Path) -> None:
    final = {"test/acc": 0.9, "test/loss": 0.3}
    assert objective(make_cfg(tmp_path), final) == 0.9  # what main returned before the knob existed
    assert objective(make_cfg(tmp_path, "objective=test/loss"), final) == 0.3
    assert objective(make_cfg(tmp_path, "objective=test/nope"), final) is None
    assert objective(make_cfg(tmp_path), {"test/acc": math.nan}) is None  # optuna 2.x cannot take NaN


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compile=maybe"], "compile='maybe' is invalid: it must be true or false"),
        (["compile_backend=''"], "compile_backend='' is invalid"),
        (["objective=''"], "objective='' is invalid"),
        (["compile=true", "method=rw_target", "rw_backward=rows"], "compile=true cannot be combined with rw_backward=rows"),
        (["experiment=rw_fewest_paths", "objective.direction=down"], "objective.direction='down' is invalid"),
    ],
)
def test_bad_scale_out_knobs_are_refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        train(make_cfg(tmp_path / "run", *overrides))
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


# ---- torch.compile ----


def _has_cxx() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))


@pytest.mark.parametrize(
    ("method", "backend", "extra"),
    [
        pytest.param(
            "progressive", "inductor", ["sparsity=0.5", "epochs=2"], id="progressive-inductor",
            marks=[
                pytest.mark.slow,  # inductor's C++ compilation: about 30 s on a 2-core CPU
                pytest.mark.skipif(not _has_cxx(), reason="torch.compile's inductor backend needs a C++ compiler on CPU"),
            ],
        ),
        pytest.param("rw_target", "aot_eager", ["paths=50", "epochs=2"], id="rw_target-aot_eager"),
    ],
)
def test_compile_trains_end_to_end(tmp_path: Path, method: str, backend: str, extra: list[str]) -> None:
    """compile=true trains the same model: pruning and random-walk masks find their layers, results match eager."""
    from torch._dynamo.utils import counters

    common = [f"method={method}", "model.hidden=[32]", "logger=null", *extra]
    eager = train(make_cfg(tmp_path / "eager", *common))
    counters.clear()
    compiled = train(make_cfg(tmp_path / "compiled", "compile=true", f"compile_backend={backend}", *common))
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really compiled the model
    assert compiled["test/acc"] == pytest.approx(eager["test/acc"], abs=0.02)
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=1e-3)
    last = [json.loads((tmp_path / run / "metrics.json").read_text())["epochs"][-1] for run in ("eager", "compiled")]
    key = "sparsity/global" if method == "progressive" else "updates/density"
    assert last[1][key] == pytest.approx(last[0][key], rel=1e-6)  # the same masks in force
    state = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in k for k in state)  # checkpoints keep the plain layer names


# ---- real sweeps (subprocess) ----


@pytest.mark.slow
def test_joblib_runs_two_jobs_in_parallel(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_app("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    for job in ("0", "1"):
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == "completed" and "test/acc" in record["test"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.slow
def test_optuna_sweep_survives_a_failed_trial(tmp_path: Path) -> None:
    """3 trials of the rw_fewest_paths search on synthetic data; trial 1 crashes (main returns None).

    Optuna records it as a failed trial and the sweep goes on to its third trial and its results
    file; FailureSummary then lists the failure and exits 1.
    """
    sweep = tmp_path / "sweep"
    result = run_app(
        "-m", "experiment=rw_fewest_paths", *TINY, "target_acc=0.05", "hydra.sweeper.n_trials=3",
        "paths=tag(log, int(interval(10, 100)))",
        "+callbacks.crash._target_=tests.helpers.CrashInRun", "+callbacks.crash.run_name='1'",  # job 1's dir
        f"hydra.sweep.dir={sweep}",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    assert "1 job(s) of the sweep failed" in result.stderr and "Failed experiment" in log
    assert (sweep / "1" / "error.txt").is_file()
    for job in ("0", "2"):
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "completed"
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results["name"] == "optuna" and 10 <= results["best_params"]["paths"] <= 100
    assert results["best_value"] == results["best_params"]["paths"]  # test/acc >= 0.05: the objective is the paths
