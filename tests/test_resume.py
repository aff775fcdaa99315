"""An interrupted run resumed with resume=RUN_DIR ends exactly where an uninterrupted one does (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparse_lab.app import train
from sparse_lab.errors import ConfigError
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash, epoch_rows, final_state

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
    assert epoch_rows(resumed) == epoch_rows(tmp_path / "whole")  # same per-epoch metrics, the first one carried over
    record = json.loads((resumed / "metrics.json").read_text())
    assert record["status"] == "completed"


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no checkpoint"):
        train(make_cfg(tmp_path / "run", f"resume={tmp_path / 'nowhere'}"))
    assert not (tmp_path / "run").exists()


def masks(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["Pruner"]["masks"]


PROGRESSIVE = [
    "method=progressive", "sparsity=0.5", "epochs=4", "data.val_size=0", "data.test_each_epoch=true",
    "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule",
]  # fmt: skip


# 8 steps per epoch, LinearExact to 50% over 4 epochs: 0, 1/6, 1/3, 1/2 at the start of epochs 0..3.
# Step 20 is the middle of epoch 2 (last.ckpt: end of epoch 1, masks at 1/6); step 24 is the first
# batch of epoch 3, right after its pruning update to 50% (last.ckpt: end of epoch 2, masks at 1/3).
@pytest.mark.parametrize("crash_step", [20, 24], ids=["mid_epoch", "epoch_boundary_after_prune"])
def test_resumed_progressive_run_equals_uninterrupted_run(tmp_path: Path, crash_step: int) -> None:
    common = PROGRESSIVE
    train(make_cfg(tmp_path / "whole", *common))

    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", f"+callbacks.crash.step={crash_step}"))
    at_crash = masks(crashed)
    assert at_crash and 0 < sum(int((~m).sum()) for m in at_crash.values())  # the checkpoint holds real masks

    resumed = tmp_path / "resumed"
    train(make_cfg(resumed, *common, f"resume={crashed}"))
    whole, again = final_state(tmp_path / "whole"), final_state(resumed)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit-identical weights
    whole_masks, again_masks = masks(tmp_path / "whole"), masks(resumed)
    assert all(torch.equal(whole_masks[k], again_masks[k]) for k in whole_masks)  # and masks
    assert epoch_rows(resumed) == epoch_rows(tmp_path / "whole")  # per-epoch metrics, sparsity/* included
    assert epoch_rows(resumed)[-1]["sparsity/global"] == pytest.approx(0.5, abs=1e-4)
    # no weight pruned before the interruption came back after it
    assert all(not (again_mask & ~at_crash[k]).any() for k, again_mask in again_masks.items())
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["callbacks"]["Pruner"]["level"] == pytest.approx(0.5)
    for name, mask in again_masks.items():  # the saved model's weights are zero where masked
        assert (again["model." + name][~mask] == 0).all()


def _to_prune_format(ckpt: Path, out: Path) -> None:
    """Rewrite a checkpoint as the earlier torch.nn.utils.prune-based code wrote it: ``weight_orig``
    (non-zero junk where pruned) and ``weight_mask`` in the model, no masks in the callback state."""
    checkpoint = torch.load(ckpt, weights_only=False)
    pruner = checkpoint["callbacks"].pop("Pruner")
    state = checkpoint["state_dict"]
    for name, mask in pruner["masks"].items():
        weight = state.pop("model." + name)
        state["model." + name.removesuffix("weight") + "weight_orig"] = torch.where(mask, weight, torch.full_like(weight, 0.5))
        state["model." + name.removesuffix("weight") + "weight_mask"] = mask.float()
    checkpoint["callbacks"]["PruningSchedule"] = {"level": pruner["level"], "step": pruner["step"]}
    out.parent.mkdir(parents=True)
    torch.save(checkpoint, out)


def test_a_checkpoint_of_the_old_prune_based_code_resumes_converted_or_is_refused(tmp_path: Path) -> None:
    common = PROGRESSIVE
    train(make_cfg(tmp_path / "whole", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=20"))
    old = tmp_path / "old" / "last.ckpt"
    _to_prune_format(crashed / "checkpoints" / "last.ckpt", old)

    train(make_cfg(tmp_path / "resumed", *common, f"resume={old}"))
    whole, again = final_state(tmp_path / "whole"), final_state(tmp_path / "resumed")
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # the same run as if never interrupted
    assert epoch_rows(tmp_path / "resumed")[-1]["sparsity/global"] == pytest.approx(0.5, abs=1e-4)

    from sparse_lab.errors import SparseLabError

    with pytest.raises(SparseLabError, match="earlier sparse_lab"):
        train(make_cfg(tmp_path / "as_full", "method=full", "epochs=4", "data.val_size=0", f"resume={old}"))


def test_resumed_oneshot_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    common = ["method=oneshot", "model.hidden=[8,4]", "epochs=3", "data.val_size=0", "method.protocol.percents=[0,50,90]"]
    train(make_cfg(tmp_path / "whole", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=12"))
    train(make_cfg(tmp_path / "resumed", *common, f"resume={crashed}"))
    levels = [json.loads((run / "metrics.json").read_text())["oneshot"] for run in (tmp_path / "whole", tmp_path / "resumed")]
    assert [r["kept"] for r in levels[0]] == [6344, 3172, 635]
    assert levels[0] == levels[1]  # the same pruned nets, to the last digit of every metric
    whole, again = final_state(tmp_path / "whole"), final_state(tmp_path / "resumed")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
