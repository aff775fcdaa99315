"""Progressive pruning: schedule values, exact kept counts, no regrowth, pruned weights stay zero."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sparse_lab.app import train
from sparse_lab.sparsity import CubicSchedule, LinearEpochSchedule, LinearExactSchedule, OneShotAtSchedule
from tests.conftest import make_cfg


def test_linear_epoch_is_the_reference_schedule_with_its_off_by_one() -> None:
    cifar = LinearEpochSchedule(0.8, 200)
    assert [cifar(e) for e in (0, 1, 100)] == pytest.approx([0.0, 0.004, 0.4])
    assert cifar(199) == pytest.approx(0.796)  # the reference's 79.6%
    assert LinearEpochSchedule(0.77, 30)(29) == pytest.approx(0.77 * 29 / 30)  # 74.4%
    assert round(100 * LinearEpochSchedule(0.77, 30)(29), 1) == 74.4


def test_linear_exact_reaches_the_target_and_oneshot_at_jumps() -> None:
    s = LinearExactSchedule(0.9, 5)
    assert [s(e) for e in range(5)] == pytest.approx([0.0, 0.225, 0.45, 0.675, 0.9])
    o = OneShotAtSchedule(0.5, 2)
    assert [o(e) for e in range(4)] == [0.0, 0.0, 0.5, 0.5]


def test_cubic_schedule_values_and_update_steps() -> None:
    c = CubicSchedule(0.8, start_step=10, end_step=110, frequency=25)
    assert c(0, 5) == 0.0 and c(0, 10) == pytest.approx(0.0)
    assert c(0, 60) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert c(0, 110) == 0.8 and c(0, 500) == 0.8
    assert [t for t in range(200) if c.is_update_step(t)] == [10, 35, 60, 85, 110]


class CheckPruned(Callback):
    """After every optimizer step: pruned weights are exactly zero and masks never regrow."""

    def __init__(self) -> None:
        self.previous: list[torch.Tensor] | None = None
        self.kept: list[int] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        from sparse_lab.callbacks import Pruner

        pruner = next(cb for cb in trainer.callbacks if isinstance(cb, Pruner))
        masks = [m.clone() for m in pruner.masks.masks.values()]
        optimizer = trainer.optimizers[0]
        for param, mask in zip(pruner.masks.params.values(), masks):
            assert (param[~mask] == 0).all() and (param.grad[~mask] == 0).all()
            assert (optimizer.state[param]["momentum_buffer"][~mask] == 0).all()
        if self.previous is not None:
            assert all(not (new & ~old).any() for new, old in zip(masks, self.previous))
        self.previous = masks
        if batch_idx == 0:
            self.kept.append(int(sum(int(m.sum()) for m in masks)))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_progressive_run_keeps_exact_counts_with_momentum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str) -> None:
    check = CheckPruned()
    import sparse_lab.app as app

    original = app.build_callbacks
    monkeypatch.setattr(app, "build_callbacks", lambda cfg: [*original(cfg), check])
    train(make_cfg(
        tmp_path, "method=progressive", "sparsity=0.8", "epochs=4", "model.hidden=[32,16]",
        f"method.callbacks.pruner.scope={scope}",
        "method.module.optimizer._target_=torch.optim.SGD", "~method.module.optimizer.fused",
        "+method.module.optimizer.momentum=0.9", "+method.module.optimizer.weight_decay=5e-4", "lr=0.05",
    ))
    n = 784 * 32 + 32 * 16 + 16 * 10
    if scope == "global":
        assert check.kept == [round((1 - s) * n) for s in (0.0, 0.2, 0.4, 0.6)]
    else:
        per_layer = [784 * 32, 32 * 16, 16 * 10]
        assert check.kept == [sum(round((1 - s) * k) for k in per_layer) for s in (0.0, 0.2, 0.4, 0.6)]
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]
    assert row["sparsity/global"] == pytest.approx(1 - check.kept[-1] / n)
    assert {"sparsity/net.1", "sparsity/net.3", "sparsity/net.5"} <= row.keys()
    assert row["sparsity/global"] <= row["sparsity/effective"] < 1


def test_resnet18_shapes_and_reference_size() -> None:
    from sparse_lab.models import ResNet18

    net = ResNet18((3, 32, 32), 10)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962  # the CIFAR ResNet-18
    small = ResNet18((1, 32, 32), 10, width=8)
    assert small(torch.randn(2, 1, 32, 32)).shape == (2, 10)


# The full-size presets (ResNet-18 at width 64) on a few batches of a subset.
SHORT = ["hardware=cpu", "epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]


def test_cifar10_preset_runs_end_to_end_on_a_built_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_lab.data import CIFAR10DataModule
    from tests.test_data import _fake_cifar

    monkeypatch.setattr(CIFAR10DataModule, "dataset_cls", _fake_cifar(tmp_path / "data", n_train=1000, n_test=100))
    train(make_cfg(tmp_path / "run", "experiment=progressive_cifar10", f"data.data_dir={tmp_path / 'data'}",
                   "data.download=false", "data.val_size=110", "batch_size=32", *SHORT, fast=False))
    row = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"][-1]
    assert row["sparsity/global"] == pytest.approx(0.8 / 2, abs=1e-4)  # linear_epoch at epoch 1 of 2
    assert "val/acc" in row and "sparsity/fc" in row
    assert row["sparsity/kept"] == round((1 - 0.4) * 11_164_352)  # prunable: every conv and the final Linear


@pytest.mark.real_data
def test_mnist_preset_runs_end_to_end(tmp_path: Path, real_data_dir: Path) -> None:
    train(make_cfg(tmp_path, "experiment=progressive_mnist", f"data.data_dir={real_data_dir}", *SHORT, fast=False))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["epochs"][-1]["sparsity/global"] == pytest.approx(0.77 / 2, abs=1e-4)


def favour_one_layer(masks: Any, batch: Any = None, layer: str = "net.5.weight") -> dict[str, torch.Tensor]:
    """A criterion defined outside sparse_lab: ``layer`` ranks above everything, the rest by |w|."""
    return {n: p.detach().abs() + (1e3 if n == layer else 0.0) for n, p in masks.params.items()}


@pytest.mark.parametrize("layer", ["net.5.weight", "net.3.weight"])
def test_a_criterion_from_a_test_file_prunes_end_to_end_through_config(tmp_path: Path, layer: str) -> None:
    train(make_cfg(
        tmp_path, "method=progressive", "sparsity=0.5", "epochs=2", "model.hidden=[32,16]",
        "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule",
        "method.callbacks.pruner.score._target_=tests.test_progressive.favour_one_layer", f"+method.callbacks.pruner.score.layer={layer}",
    ))
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]
    n = 784 * 32 + 32 * 16 + 16 * 10
    assert row["sparsity/kept"] == round(0.5 * n) and row[f"sparsity/{layer.removesuffix('.weight')}"] == 0.0
    other = "net.3" if layer == "net.5.weight" else "net.5"
    assert row[f"sparsity/{other}"] > 0
