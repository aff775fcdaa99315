"""Magnitude pruning core: exact counts, no regrowth, pruned weights stay zero under any optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lab.models import MLP, SmallCNN
from sparse_lab.sparsity import (
    apply_masks,
    current_masks,
    current_weights,
    keep_largest,
    keep_largest_per_layer,
    percentile_masks,
    prunable,
    sparsity_report,
)


def lth_net(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 28, 28), 10, (8, 4))  # 6,344 weights


def test_prunable_is_every_multi_dim_weight_and_no_norm_or_bias() -> None:
    assert [n for n, _ in prunable(lth_net())] == ["net.1", "net.3", "net.5"]
    assert sum(m.weight.numel() for _, m in prunable(lth_net())) == 6344
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert [type(m).__name__ for _, m in prunable(cnn)] == ["Conv2d", "Linear"]
    assert len(prunable(SmallCNN((1, 28, 28), 10))) == 4


def test_one_shot_percentile_counts_match_the_reference() -> None:
    weights = current_weights([m for _, m in prunable(lth_net())])
    kept = [int(sum(m.sum() for m in percentile_masks(weights, p))) for p in range(0, 100, 10)]
    assert kept == [6344, 5709, 5075, 4441, 3806, 3172, 2538, 1903, 1269, 635]


def test_iterative_pruning_counts_match_the_reference_and_masks_never_regrow() -> None:
    modules = [m for _, m in prunable(lth_net())]
    counts = [6344]
    previous = current_masks(modules)
    for _ in range(12):
        apply_masks(modules, percentile_masks(current_weights(modules), 20, current_masks(modules)))
        masks = current_masks(modules)
        assert all(not (new & ~old).any() for new, old in zip(masks, previous))  # only shrink
        previous = masks
        counts.append(int(sum(m.sum() for m in masks)))
    assert counts == [6344, 5075, 4060, 3248, 2598, 2078, 1662, 1329, 1063, 850, 680, 544, 435]


def test_keep_largest_is_exact_with_ties_and_respects_existing_masks() -> None:
    w = [torch.tensor([[1.0, 1.0, 1.0], [0.5, 2.0, 1.0]]), torch.tensor([[1.0, 3.0]])]
    masks = keep_largest(w, 4)
    assert sum(int(m.sum()) for m in masks) == 4
    assert masks[0].tolist() == [[True, True, False], [False, True, False]] and masks[1].tolist() == [[False, True]]
    active = [torch.tensor([[True, True, True], [True, False, True]]), torch.tensor([[True, False]])]
    masks = keep_largest(w, 3, active)
    assert not masks[0][1, 1] and not masks[1][0, 1]  # pruned weights are never chosen again
    assert sum(int(m.sum()) for m in masks) == 3
    per_layer = keep_largest_per_layer(w, 0.5)
    assert [int(m.sum()) for m in per_layer] == [3, 1]


@pytest.mark.parametrize("optimizer", ["sgd_momentum_wd", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer: str) -> None:
    model = lth_net()
    named = prunable(model)
    modules = [m for _, m in named]
    apply_masks(modules, percentile_masks(current_weights(modules), 80))
    masks = current_masks(modules)
    if optimizer == "sgd_momentum_wd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(20):
        x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for m, mask in zip(modules, masks):
        assert (m.weight[~mask] == 0).all()
        assert (m.weight[mask] != 0).all()
    report = sparsity_report([n for n, _ in named], modules)
    assert report["sparsity/kept"] == 1269 and report["sparsity/global"] == pytest.approx(1 - 1269 / 6344)
    assert set(report) == {"sparsity/net.1", "sparsity/net.3", "sparsity/net.5", "sparsity/global", "sparsity/kept"}


def test_oneshot_method_runs_and_records_each_level(tmp_path) -> None:
    import json

    from sparse_lab.app import train
    from tests.conftest import make_cfg

    final = train(make_cfg(tmp_path, "method=oneshot", "model.hidden=[8,4]", "target_acc=0.8", "epochs=2",
                           "method.protocol.percents=[0,50,90]"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["kept"] for r in record["oneshot"]] == [6344, 3172, 635]
    assert record["oneshot"][0]["test/acc"] == pytest.approx(final["test/acc"])  # 0%: the dense net
    assert record["test"]["test/acc"] == pytest.approx(final["test/acc"])
    assert record["oneshot"][2]["test/acc"] <= record["oneshot"][0]["test/acc"] + 1e-9
    stats = json.loads((tmp_path / "weight_stats.json").read_text())
    assert stats["count"] == 6344 and 0 <= stats["below_0.001"] <= stats["below_0.1"] <= 1
    for png in ("oneshot.png", "weight_histogram.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert ckpt["model.net.1.weight"].count_nonzero() == 784 * 8  # the saved model is the dense one


def test_weight_statistics_on_known_values() -> None:
    from sparse_lab.callbacks import weight_statistics

    stats = weight_statistics([torch.tensor([[0.0005, -0.005], [0.02, -0.2]])])
    assert stats["count"] == 4 and stats["min"] == pytest.approx(-0.2) and stats["max"] == pytest.approx(0.02)
    assert stats["below_0.001"] == 0.25 and stats["below_0.01"] == 0.5 and stats["below_0.05"] == 0.75
    assert stats["below_0.1"] == 0.75 and stats["mean"] == pytest.approx((0.0005 - 0.005 + 0.02 - 0.2) / 4)


def test_current_weights_follow_weight_orig_without_a_forward_pass() -> None:
    modules = [m for _, m in prunable(lth_net())]
    apply_masks(modules, percentile_masks(current_weights(modules), 50))
    with torch.no_grad():
        modules[0].weight_orig.mul_(2)
    expected = modules[0].weight_orig * modules[0].weight_mask
    assert torch.equal(current_weights(modules)[0], expected)
