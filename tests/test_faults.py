"""Faults and absurd inputs: refused before any work, torn files never left, damaged checkpoints skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sparse_lab import app
from sparse_lab.atomic import atomic_write_text
from sparse_lab.checkpoint_io import AtomicCheckpointIO
from sparse_lab.callbacks.preemption import is_preemption
from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from sparse_lab.protocols.train import resume_checkpoint
from sparse_lab.report.__main__ import main as report_main
from tests.conftest import REPO, make_cfg
from tests.helpers import SimulatedCrash, epoch_rows, final_state
from tests.malformed_inputs import MALFORMED, applicable, with_base

SMALL = ["model.hidden=[16]", "data.train_size=256", "data.val_size=0"]


@pytest.mark.parametrize(("overrides", "key"), MALFORMED, ids=[" ".join(o) for o, _ in MALFORMED])
def test_malformed_input_is_refused_before_anything_is_built(tmp_path: Path, overrides: list[str], key: str) -> None:
    if not applicable(overrides):
        pytest.skip("malformed only on a machine without a GPU")
    out = tmp_path / "run"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        train(make_cfg(out, *with_base(overrides), fast=False))
    assert time.perf_counter() - t0 < 10
    assert key in str(err.value)
    assert not out.exists()


def test_every_problem_of_a_protocol_and_the_knobs_is_in_one_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        train(make_cfg(tmp_path / "run", "method=lottery", "lr=inf", "method.protocol.rounds=0",
                       "method.protocol.prune_percent=150", "batch_size=100000"))
    message = str(err.value)
    for key in ("lr=inf", "method.protocol.rounds=0", "method.protocol.prune_percent=150", "batch_size=100000"):
        assert key in message


def test_a_memory_estimate_is_in_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSE_LAB_MEMORY_GB", "0.001")  # 1 MiB: the default MLP's 235k parameters need 3.6 MiB
    with pytest.raises(ConfigError, match=r"model.hidden=\[256, 128\] needs about 3.6 MiB .*more than this machine's 1.0 MiB"):
        train(make_cfg(tmp_path / "run"))


def test_a_missing_launcher_plugin_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None if m.startswith("hydra_plugins") else real(m))
    problems = app.plugin_problems(["hydra/launcher=slurm", "seed=1", "experiment=rw_fewest_paths"])
    assert problems[0].startswith("hydra/launcher=slurm needs the Hydra plugin hydra-submitit-launcher")
    assert "pip install" in problems[0]
    assert "experiment=rw_fewest_paths (it sets hydra/sweeper) needs the Hydra plugin hydra-optuna-sweeper" in problems[1]
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert app.plugin_problems(["hydra/launcher=slurm"]) == []


@pytest.mark.slow
def test_cli_refuses_a_missing_plugin_and_absurd_values_with_exit_2(tmp_path: Path) -> None:
    hide = (
        "import importlib.util as u, sys; real = u.find_spec; "
        "u.find_spec = lambda m, *a: None if m.startswith('hydra_plugins.hydra_submitit') else real(m, *a); "
        "sys.argv = ['sparse_lab', *sys.argv[1:]]; from sparse_lab.app import run_cli; run_cli()"
    )
    result = subprocess.run([sys.executable, "-c", hide, "-m", "hydra/launcher=slurm", "data=synthetic"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        'sparse_lab: error: hydra/launcher=slurm needs the Hydra plugin hydra-submitit-launcher, which is not installed: '
        'pip install -e ".[cluster]" (or pip install hydra-submitit-launcher)'
    ]
    result = subprocess.run([sys.executable, "-m", "sparse_lab", "data=synthetic", "hardware=cpu", "method=rw_target",
                             "paths=1000000000000", "lr=inf", f"hydra.run.dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "paths=1000000000000 needs about 174.6 TiB" in result.stderr and "lr=inf is invalid" in result.stderr


# ---- files written whole or not at all ----

def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": 1}')

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, '{"new": 2}')
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_runs_save_checkpoints_through_the_atomic_checkpoint_io(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "run", *SMALL)
    trainer = app.build(cfg.trainer, callbacks=[], logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ---- damaged checkpoints ----

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_last_ckpt_resumes_from_the_intact_epoch_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    common = [*SMALL, "epochs=3", "data.test_each_epoch=true"]
    whole = tmp_path / "whole"
    train(make_cfg(whole, *common))
    stopped = tmp_path / "stopped"
    train(make_cfg(stopped, *common, "epochs=2"))
    (epoch_ckpt,) = (stopped / "checkpoints").glob("epoch=*.ckpt")
    _truncate(stopped / "checkpoints" / "last.ckpt")
    os.utime(epoch_ckpt, ns=(1, 1))  # older than last.ckpt: it is taken only because last.ckpt does not load

    resumed = tmp_path / "resumed"
    with caplog.at_level("INFO", logger="sparse_lab"):
        train(make_cfg(resumed, *common, f"resume={stopped}"))
    assert f"skipped {stopped / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert f"continuing from {epoch_ckpt}" in caplog.text
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "metrics.json").read_text())["test"] == json.loads((whole / "metrics.json").read_text())["test"]


def test_an_explicit_ckpt_that_does_not_load_is_refused_with_its_path_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(ConfigError, match=rf"resume={bad} does not load \(.*zip"):
        train(make_cfg(tmp_path / "run", f"resume={bad}"))
    assert not (tmp_path / "run").exists()


def test_a_run_dir_whose_checkpoints_are_all_damaged_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "last.ckpt").write_bytes(b"torn")
    with pytest.raises(ConfigError, match="none of its checkpoints loads \\(last.ckpt: "):
        resume_checkpoint(str(tmp_path / "old"))


def test_a_lottery_stopped_in_its_control_resumes_with_the_winning_ticket_of_the_first_run(tmp_path: Path) -> None:
    lth = ["method=lottery", "model.hidden=[8,4]", "epochs=2", "data.val_size=0", "data.test_each_epoch=true",
           "method.protocol.rounds=2", "method.protocol.round_epoch_cap=2", "target_acc=null"]
    train(make_cfg(tmp_path / "whole", *lth))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *lth, "+callbacks.crash._target_=tests.helpers.CrashInRun", "+callbacks.crash.run_name=control"))
    train(make_cfg(tmp_path / "resumed", *lth, f"resume={crashed}"))  # the winner's ticket lies in crashed/round_01
    whole = json.loads((tmp_path / "whole" / "lottery.json").read_text())
    assert json.loads((tmp_path / "resumed" / "lottery.json").read_text()) == whole
    assert "control" in whole


# ---- preemption ----

def assert_resume_ends_like_the_whole_run(tmp_path: Path, cut: Path, common: list[str]) -> None:
    """``resume=cut`` ends bit-identical to ``tmp_path/whole``: weights and every metrics.json row (the
    interrupted epoch's train metrics included)."""
    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={cut}"))
    a, b = final_state(tmp_path / "whole"), final_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert epoch_rows(resumed) == epoch_rows(tmp_path / "whole")


@pytest.mark.parametrize("method", ["full", "rw_target"])
def test_sigterm_saves_at_the_step_boundary_and_resume_is_bit_identical(tmp_path: Path, method: str) -> None:
    common = [f"method={method}", *SMALL, "epochs=3", "batch_size=32", "paths=20", "data.test_each_epoch=true"]
    train(make_cfg(tmp_path / "whole", *common))
    cut = tmp_path / "cut"
    with pytest.raises(SIGTERMException):  # 8 steps an epoch: SIGTERM during step 11, in the middle of epoch 1
        train(make_cfg(cut, *common, "+callbacks.sig._target_=tests.helpers.SigtermAtStep", "+callbacks.sig.step=11"))
    ckpt = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 12 and ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "served": 4}]
    assert json.loads((cut / "metrics.json").read_text())["status"] == "interrupted"
    assert_resume_ends_like_the_whole_run(tmp_path, cut, common)


@pytest.mark.parametrize("method, where", [("full", "test batch 2"), ("full", "last training step"), ("snip", "test batch 2"),
                                           ("rigl", "test batch 2"), ("progressive", "test batch 2"), ("rw_target", "test batch 2"),
                                           ("noprop_dt", "test batch 2")])
def test_sigterm_in_the_epoch_end_evaluation_runs_it_again_on_resume_bit_identically(tmp_path: Path, method: str, where: str) -> None:
    """SIGTERM at test batch 2 of the evaluation after epoch 1, or during epoch 1's last training step
    (Lightning then stops after the evaluation's first batch): the resumed run evaluates epoch 1 again
    from its first batch. Before, the resume skipped the rest of that evaluation (epoch 1's row had no
    test metrics), and the batches evaluated before the stop, restored on the CPU, went into epoch 2's
    test metrics on the CPU and failed a GPU run (tests/test_gpu.py runs this there). The masking
    methods' effective sparsity of epoch 1 needs the input shape, which the resumed run, training no
    batch before that epoch's end, takes from the checkpoint."""
    check_sigterm_in_the_epoch_end_evaluation(tmp_path, where, method=method)


def check_sigterm_in_the_epoch_end_evaluation(tmp_path: Path, where: str, *extra: str, method: str = "full") -> None:
    from tests.test_method_contract import overrides

    common = [*extra, *overrides(method), "epochs=3", "data.train_size=256", "batch_size=32", "data.test_each_epoch=true",
              "data.eval_batch_size=64", "data.test_size=320"]  # 8 training steps and 5 test batches an epoch
    train(make_cfg(tmp_path / "whole", *common))
    cut = tmp_path / "cut"
    signal = (["+callbacks.sig._target_=tests.helpers.SigtermInValidation", "+callbacks.sig.epoch=1", "+callbacks.sig.batch=2"]
              if where == "test batch 2" else ["+callbacks.sig._target_=tests.helpers.SigtermAtStep", "+callbacks.sig.step=15"])
    with pytest.raises(SIGTERMException):
        train(make_cfg(cut, *common, *signal))
    ckpt = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] >= 16 and ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 8
    queued = ckpt["running_metrics"]["queued"]
    assert queued is None or (len(queued["train"]) == 8 and queued["test"] == [])
    assert_resume_ends_like_the_whole_run(tmp_path, cut, common)


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("rank", [None, 1], ids=["every rank", "rank 1 alone"])
def test_sigterm_under_ddp_spawn_saves_on_every_rank_and_resume_is_bit_identical(tmp_path: Path, rank: int | None) -> None:
    """SIGTERM during step 10 of a 2-process run, to both ranks (as SLURM sends it to every task) or to
    rank 1 alone: the ranks save together at that step's end and stop; the main process gets the
    preemption instead of waiting forever for the workers (Lightning's SIGTERMException ends a spawned
    worker with exit code 0). With rank 1 alone, Lightning's handler hung both ranks (a broadcast
    inside the handler that rank 0 never joins)."""
    from tests.test_ddp import DDP

    common = [*DDP, "method=full", "epochs=3", "data.test_each_epoch=true"]
    train(make_cfg(tmp_path / "whole", *common))
    cut = tmp_path / "cut"
    signal = ["+callbacks.sig._target_=tests.helpers.SigtermAtStep", "+callbacks.sig.step=10", f"+callbacks.sig.rank={'null' if rank is None else rank}"]
    with pytest.raises(BaseException) as stopped:  # 7 steps an epoch: step 10 is in epoch 1
        train(make_cfg(cut, *common, *signal))
    assert is_preemption(stopped.value), repr(stopped.value)
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 11
    assert json.loads((cut / "metrics.json").read_text())["status"] == "interrupted"
    assert_resume_ends_like_the_whole_run(tmp_path, cut, common)


@pytest.mark.slow  # starts processes
def test_sigterm_to_one_rank_in_the_evaluation_under_ddp_spawn_stops_both_after_the_next_step(tmp_path: Path) -> None:
    """Under data parallel training Lightning does not see the signal (SaveOnSigterm records it), so
    the evaluation under way finishes on both ranks: rank 1 signalled at test batch 1 after epoch 0
    ends that evaluation and epoch 0 with the other rank, trains step 7 (epoch 1's first) and stops
    there with it; the resume is bit-identical. The interrupted run's metrics.json keeps epoch 0's
    row (ddp_spawn's main process wrote its own empty record over the workers' file), and the
    resumed epoch 1 counts its first step (a checkpoint after an epoch's first step restored no
    running metrics: the batch is not yet counted completed in on_train_batch_end)."""
    from tests.test_ddp import DDP

    common = [*DDP, "method=full", "epochs=3", "data.test_each_epoch=true", "data.eval_batch_size=32"]
    train(make_cfg(tmp_path / "whole", *common))
    cut = tmp_path / "cut"
    signal = ["+callbacks.sig._target_=tests.helpers.SigtermInValidation", "+callbacks.sig.epoch=0",
              "+callbacks.sig.batch=1", "+callbacks.sig.rank=1"]
    with pytest.raises(BaseException) as stopped:  # 7 steps an epoch
        train(make_cfg(cut, *common, *signal))
    assert is_preemption(stopped.value), repr(stopped.value)
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    assert "test/acc" in json.loads((cut / "metrics.json").read_text())["epochs"][0]
    assert_resume_ends_like_the_whole_run(tmp_path, cut, common)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    from benchmarks.kill_resume import main as kill_resume

    out = tmp_path / "kill_resume.json"  # one kill of each kind: from outside, in validation, then a torn checkpoint
    assert kill_resume(["--methods", "rw_target", "--trials", "3", "--seed", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rw_target"] == {"kills": 3, "bit_identical": 3}
    assert [r["kind"] for r in result["trials"]["rw_target"] if r["killed"]] == ["random", "validation", "torn"]
    assert any(r["torn"] for r in result["trials"]["rw_target"])


@pytest.mark.slow
def test_cli_sigterm_exits_143_with_a_checkpoint_to_resume_from(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "sparse_lab", "data=synthetic", "hardware=cpu", *SMALL, "epochs=3", "batch_size=32",
            "+callbacks.sig._target_=tests.helpers.SigtermAtStep", "+callbacks.sig.step=11", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr[-2000:]
    assert "SIGTERM: saved" in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12


def test_a_requeued_slurm_job_continues_in_its_own_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    common = [*SMALL, "epochs=3", "data.test_each_epoch=true"]
    train(make_cfg(tmp_path / "whole", *common))
    job = tmp_path / "job"  # 2 steps an epoch: the first attempt stops in epoch 2, its last.ckpt holds epoch 1
    with pytest.raises(SimulatedCrash):
        train(make_cfg(job, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=5"))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in a requeued job; the same command again
    with caplog.at_level("INFO", logger="sparse_lab"):
        train(make_cfg(job, *common))
    assert f"continuing the run in {job}" in caplog.text and "continuing from" in caplog.text
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert epoch_rows(job) == epoch_rows(tmp_path / "whole")


# ---- entry points that did nothing useful ----

def test_report_exits_non_zero_when_no_run_has_results(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)  # a job that failed before writing metrics.json
    assert report_main([str(tmp_path)]) == 1
    assert report_main([str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "report").exists()
