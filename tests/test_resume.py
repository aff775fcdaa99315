"""An interrupted run resumed with resume=RUN_DIR ends exactly where an uninterrupted one does (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash

TIMING = {"train_time_s", "epoch_time_s", "peak_rss_mb", "peak_cuda_mb"}


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def rows(run: Path) -> list[dict]:
    record = json.loads((run / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k not in TIMING} for row in record["epochs"]]


@pytest.mark.parametrize("method", ["full", "rw_target", "rw_random rw_backward=rows"])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, method: str) -> None:
    common = [f"method={method.split()[0]}", *method.split()[1:], "paths=20", "epochs=3", "data.val_size=0", "data.test_each_epoch=true"]
    train(make_cfg(tmp_path / "whole", *common))

    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        # 8 steps per epoch: crash in the middle of the second epoch (last.ckpt holds epoch 1)
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=12"))
    assert json.loads((crashed / "metrics.json").read_text())["status"] == "failed"

    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={crashed}"))
    whole, again = final_state(tmp_path / "whole"), final_state(resumed)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit-identical weights
    assert rows(resumed) == rows(tmp_path / "whole")  # same per-epoch metrics, the first one carried over
    record = json.loads((resumed / "metrics.json").read_text())
    assert record["status"] == "completed"


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no checkpoint"):
        train(make_cfg(tmp_path / "run", f"resume={tmp_path / 'nowhere'}"))
    assert not (tmp_path / "run").exists()
