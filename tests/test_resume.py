"""An interrupted run resumed with resume=RUN_DIR ends exactly where an uninterrupted one does (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from sparse_lab.models.mlp import MLP
from sparse_lab.sparsity import apply_masks, keep_largest, prunable, restore_masks
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


def masks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.bool() for k, v in state.items() if k.endswith("weight_mask")}


# 8 steps per epoch, LinearExact to 50% over 4 epochs: 0, 1/6, 1/3, 1/2 at the start of epochs 0..3.
# Step 20 is the middle of epoch 2 (last.ckpt: end of epoch 1, masks at 1/6); step 24 is the first
# batch of epoch 3, right after its pruning update to 50% (last.ckpt: end of epoch 2, masks at 1/3).
@pytest.mark.parametrize("crash_step", [20, 24], ids=["mid_epoch", "epoch_boundary_after_prune"])
def test_resumed_progressive_run_equals_uninterrupted_run(tmp_path: Path, crash_step: int) -> None:
    common = [
        "method=progressive", "sparsity=0.5", "epochs=4", "data.val_size=0", "data.test_each_epoch=true",
        "method.callbacks.pruning_schedule.schedule._target_=sparse_lab.sparsity.LinearExactSchedule",
    ]  # fmt: skip
    train(make_cfg(tmp_path / "whole", *common))

    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", f"+callbacks.crash.step={crash_step}"))
    at_crash = masks(final_state(crashed))
    assert at_crash and 0 < sum(int((~m).sum()) for m in at_crash.values())  # the checkpoint holds real masks

    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={crashed}"))
    whole, again = final_state(tmp_path / "whole"), final_state(resumed)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit-identical weights and masks
    assert rows(resumed) == rows(tmp_path / "whole")  # per-epoch metrics, sparsity/* included
    assert rows(resumed)[-1]["sparsity/global"] == pytest.approx(0.5, abs=1e-4)
    # no weight pruned before the interruption came back after it
    assert all(not (again_mask & ~at_crash[k]).any() for k, again_mask in masks(again).items())
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["callbacks"]["PruningSchedule"]["level"] == pytest.approx(0.5)



def test_pruned_state_dict_loads_into_a_fresh_model_with_the_parameter_order_kept() -> None:
    """Optimizer state is saved by parameter position: pruning must not move ``weight`` after ``bias``."""
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, hidden=(8,))
    dense_order = [n for n, _ in model.named_parameters()]
    modules = [m for _, m in prunable(model)]
    apply_masks(modules, keep_largest([m.weight for m in modules], 60))
    assert [n.removesuffix("_orig") for n, _ in model.named_parameters()] == dense_order
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    model(torch.randn(4, 1, 4, 4)).sum().backward()
    optimizer.step()

    fresh = MLP((1, 4, 4), 3, hidden=(8,))
    assert restore_masks(fresh, model.state_dict()) == 2 and restore_masks(fresh, model.state_dict()) == 0
    fresh.load_state_dict(model.state_dict())  # strict: every weight_orig / weight_mask key finds its place
    again = torch.optim.Adam(fresh.parameters(), fused=True)
    again.load_state_dict(optimizer.state_dict())  # by position: the moments land on same-named tensors
    for (name, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(p, q) and torch.equal(optimizer.state[p]["exp_avg"], again.state[q]["exp_avg"]), name
    x = torch.randn(5, 1, 4, 4)
    assert torch.equal(fresh(x), model(x))
    assert int(sum(m.weight_mask.sum() for _, m in prunable(fresh))) == 60
