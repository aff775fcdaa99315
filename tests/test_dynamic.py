"""Dynamic sparse training: drop-and-grow counts, RigL's cosine and gradient growth, SET, constant
density through training, grown weights at 0 with zero optimizer state, resume across updates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from sparse_lab.app import train
from sparse_lab.callbacks import DynamicSparsity
from sparse_lab.sparsity import MaskSet, layer_counts
from sparse_lab.sparsity.dynamic import DropFraction
from sparse_lab.sparsity.select import drop_and_grow
from tests.conftest import make_cfg
from tests.helpers import SimulatedCrash


def test_drop_and_grow_keeps_each_count_drops_the_lowest_and_grows_the_highest() -> None:
    active = {"a": torch.tensor([True, True, True, True, False, False]), "b": torch.tensor([True, False, False])}
    drop = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0, 9.0, 9.0]), "b": torch.tensor([1.0, 0.0, 0.0])}
    grow = {"a": torch.tensor([0.0, 5.0, 0.0, 0.0, 1.0, 7.0]), "b": torch.tensor([9.0, 1.0, 2.0])}
    new, moved = drop_and_grow(active, drop, grow, 0.5)
    # a: drop floor(0.5 * 4) = 2 lowest active (indices 1 and 3), grow 2 highest among the rest: 5 and 1 (just dropped)
    assert new["a"].tolist() == [True, True, True, False, False, True]
    assert new["b"].tolist() == [True, False, False] and moved == 2  # floor(0.5 * 1) = 0 moves in b
    assert all(int(new[n].sum()) == int(active[n].sum()) for n in active)


def test_rigl_drop_fraction_follows_the_cosine_and_set_is_constant() -> None:
    f = DropFraction(0.3, "cosine")
    assert f(0, 1000) == pytest.approx(0.3) and f(500, 1000) == pytest.approx(0.15) and f(1000, 1000) == 0.0
    assert f(250, 1000) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert DropFraction(0.3, "constant")(999, 1000) == 0.3


def test_rigl_grows_where_the_dense_gradient_is_largest() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    masks = MaskSet(model)
    cb = DynamicSparsity(0.5, distribution="uniform", growth="gradient", drop_fraction=DropFraction(0.5, "constant"), masks=masks)
    mask = torch.tensor([[True, True, False, False], [True, True, False, False], [True, True, False, False]])
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.1, 0, 0], [0.2, 2.0, 0, 0], [3.0, 0.3, 0, 0]]))
    masks.set({"0.weight": mask})
    masks.dense_grads = {"0.weight": torch.tensor([[0.0, 0.0, -5.0, 0.1], [0.0, 9.0, 0.2, 0.3], [0.0, 0.0, 0.1, 4.0]])}
    cb.on_train_start(SimpleNamespace(estimated_stepping_batches=100), None)
    moved = cb.move(0)
    # drop floor(0.5 * 6) = 3: the smallest active |w| (0.1, 0.2, 0.3); grow 3 where |g| is largest among
    # the entries not kept: 5.0 at (0, 2), 4.0 at (2, 3), 0.3 at (1, 3) (9.0 at (1, 1) is kept already)
    assert moved == 3
    assert masks.masks["0.weight"].tolist() == [[True, False, True, False], [False, True, False, True], [True, False, False, True]]
    w = model[0].weight
    assert w[0, 2] == 0 and w[2, 3] == 0 and w[1, 3] == 0 and w[0, 1] == 0 and w[0, 0] == 1.0  # grown and dropped at 0
    assert masks.dense_grads is None and not masks.keep_dense_grads


class DensityProbe(Callback):
    """Before every step: per-layer kept counts, and grown entries at 0 with zero optimizer state."""

    def __init__(self) -> None:
        self.counts: list[dict[str, int]] = []
        self.grown = 0
        self.previous: dict[str, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        cb = next(c for c in trainer.callbacks if isinstance(c, DynamicSparsity))
        if not cb.started:
            return
        masks = cb.masks
        self.counts.append({n: int(m.sum()) for n, m in masks.masks.items()})
        optimizer = trainer.optimizers[0]
        for n, p in masks.params.items():
            assert (p[~masks.masks[n]] == 0).all()
            if self.previous is not None:
                born = masks.masks[n] & ~self.previous[n]
                self.grown += int(born.sum())
                assert (p[born] == 0).all()
                for value in optimizer.state[p].values():
                    if value.shape == p.shape:
                        assert (value[born] == 0).all()
        self.previous = {n: m.clone() for n, m in masks.masks.items()}


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_density_stays_constant_and_grown_weights_start_at_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    import sparse_lab.app as app

    probe = DensityProbe()
    original = app.build_callbacks
    monkeypatch.setattr(app, "build_callbacks", lambda cfg: [*original(cfg), probe])
    every = ["method.callbacks.dynamic_sparsity.update_every=2"] if method == "rigl" else []
    train(make_cfg(tmp_path, f"method={method}", "model=lenet300", "sparsity=0.9", "epochs=3", "data.val_size=0",
                   "method.module.optimizer._target_=torch.optim.SGD", "~method.module.optimizer.fused",
                   "+method.module.optimizer.momentum=0.9", "lr=0.05", *every))
    distribution = "erk" if method == "rigl" else "er"
    shapes = {"net.1.weight": (300, 784), "net.3.weight": (100, 300), "net.5.weight": (10, 100)}
    expected = layer_counts(shapes, 0.1, distribution)
    assert probe.counts and all(c == expected for c in probe.counts)
    assert probe.grown > 0  # masks moved
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]
    assert row["sparsity/kept"] == sum(expected.values())


def test_resumed_rigl_run_equals_an_uninterrupted_one_across_mask_updates(tmp_path: Path) -> None:
    common = ["method=rigl", "model.hidden=[32,16]", "sparsity=0.8", "epochs=3", "data.val_size=0", "data.test_each_epoch=true",
              "method.callbacks.dynamic_sparsity.update_every=3"]
    train(make_cfg(tmp_path / "whole", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg(crashed, *common, "+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=13"))
    train(make_cfg(tmp_path / "resumed", *common, f"resume={crashed}"))
    load = lambda run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)  # noqa: E731
    whole, again = load(tmp_path / "whole"), load(tmp_path / "resumed")
    assert all(torch.equal(whole["state_dict"][k], again["state_dict"][k]) for k in whole["state_dict"])
    a, b = whole["callbacks"]["DynamicSparsity"], again["callbacks"]["DynamicSparsity"]
    assert a["updates"] == b["updates"] > 2 and all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
