"""The mask core: MaskSet enforcement under every optimizer, exact selection counts, no regrowth,
growth with zeroed state, persistence by name, and old prune-based files converted."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sparse_lab.errors import ConfigError
from sparse_lab.models import MLP, SmallCNN
from sparse_lab.sparsity import (
    MaskSet,
    keep_above_percentile,
    keep_top,
    keep_top_counts,
    layer_counts,
    prunable_parameters,
    scores,
    select,
)
from sparse_lab.sparsity.legacy import convert_pruned_state_dict, masks_by_name


def lth_net(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 28, 28), 10, (8, 4))  # 6,344 weights


def test_prunable_is_every_multi_dim_weight_and_no_norm_or_bias() -> None:
    assert list(prunable_parameters(lth_net())) == ["net.1.weight", "net.3.weight", "net.5.weight"]
    assert MaskSet(lth_net()).total == 6344
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert list(prunable_parameters(cnn)) == ["0.weight", "3.weight"]
    assert len(prunable_parameters(SmallCNN((1, 28, 28), 10))) == 4
    assert list(prunable_parameters(lth_net(), exclude=["net.5.*"])) == ["net.1.weight", "net.3.weight"]
    assert list(prunable_parameters(lth_net(), include=["*.bias"])) == ["net.1.bias", "net.3.bias", "net.5.bias"]
    with pytest.raises(ConfigError, match="no parameter"):
        MaskSet(lth_net(), include=["nothing*"])


def test_one_shot_percentile_counts_match_the_reference() -> None:
    masks = MaskSet(lth_net())
    kept = [sum(int(m.sum()) for m in keep_above_percentile(scores.magnitude(masks), p).values()) for p in range(0, 100, 10)]
    assert kept == [6344, 5709, 5075, 4441, 3806, 3172, 2538, 1903, 1269, 635]


def test_iterative_pruning_counts_match_the_reference_and_masks_never_regrow() -> None:
    masks = MaskSet(lth_net())
    counts = [masks.kept]
    for _ in range(12):
        previous = masks.state_dict()
        masks.update(keep_above_percentile(scores.magnitude(masks), 20, masks.masks))
        assert all(not (masks.masks[n] & ~previous[n]).any() for n in masks.names)  # only shrink
        counts.append(masks.kept)
    assert counts == [6344, 5075, 4060, 3248, 2598, 2078, 1662, 1329, 1063, 850, 680, 544, 435]


def test_keep_top_is_exact_with_ties_and_respects_existing_masks() -> None:
    w = {"a": torch.tensor([[1.0, 1.0, 1.0], [0.5, 2.0, 1.0]]), "b": torch.tensor([[1.0, 3.0]])}
    masks = keep_top(w, 4)
    assert masks["a"].tolist() == [[True, True, False], [False, True, False]] and masks["b"].tolist() == [[False, True]]
    active = {"a": torch.tensor([[True, True, True], [True, False, True]]), "b": torch.tensor([[True, False]])}
    masks = keep_top(w, 3, active)
    assert not masks["a"][1, 1] and not masks["b"][0, 1]  # pruned entries are never chosen again
    assert sum(int(m.sum()) for m in masks.values()) == 3
    assert [int(m.sum()) for m in select(w, 0.5, "layer").values()] == [3, 1]
    assert [int(m.sum()) for m in keep_top_counts(w, {"a": 5, "b": 0}).values()] == [5, 0]
    assert sum(int(m.sum()) for m in keep_top(w, 7, active).values()) == 6  # at most every active entry


@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
def test_layer_counts_sum_exactly_and_cap_dense_layers(distribution: str, density: float) -> None:
    shapes = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    counts = layer_counts(shapes, density, distribution)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert sum(counts.values()) == round(density * sum(sizes.values()))
    assert all(0 <= counts[n] <= sizes[n] for n in shapes)
    if distribution == "uniform":
        assert all(abs(counts[n] - density * sizes[n]) <= 1 for n in shapes)


def test_erk_keeps_small_layers_dense_and_solves_the_rest_again() -> None:
    shapes = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    counts = layer_counts(shapes, 0.1, "erk")
    # sum(shape) / prod(shape): fc2 0.102, conv1 0.062, fc1 0.00325, conv2 0.0032: fc2 and conv1 would exceed 1
    assert counts["fc2"] == 5000 and counts["conv1"] == 500
    free = round(0.1 * (500 + 25000 + 400000 + 5000)) - 500 - 5000
    eps = free / (sum(shapes["conv2"]) + sum(shapes["fc1"]))  # eps * sum(shape) / prod(shape) * prod(shape)
    assert abs(counts["conv2"] - eps * 80) <= 1 and abs(counts["fc1"] - eps * 1300) <= 1  # one epsilon over the rest
    assert counts["conv2"] + counts["fc1"] == free
    er = layer_counts({"a": (100, 100), "b": (10, 1000)}, 0.1, "er")
    assert er == {"a": 331, "b": 1669}  # in the ratio (100 + 100) : (10 + 1000), 2000 in all


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 15, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_masked_weights_gradients_and_state_are_zero_after_every_step(optimizer: str) -> None:
    model = lth_net()
    masks = MaskSet(model)
    opt = OPTIMIZERS[optimizer](model.parameters())
    train_steps(model, opt, 5)  # dense steps first: the optimizer holds momentum everywhere
    masks.attach([opt])
    masks.update(keep_above_percentile(scores.magnitude(masks), 80))
    for step in range(10):
        train_steps(model, opt, 1, seed=step)
        for name, param in masks.params.items():
            off = ~masks.masks[name]
            assert (param[off] == 0).all() and (param.grad[off] == 0).all(), (name, step)
            assert (param[~off] != 0).all()
            for value in opt.state[param].values():
                if value.shape == param.shape:
                    assert (value[off] == 0).all()
    report = masks.sparsity()
    assert report["sparsity/kept"] == 1269 and report["sparsity/global"] == pytest.approx(1 - 1269 / 6344)
    assert set(report) == {"sparsity/net.1", "sparsity/net.3", "sparsity/net.5", "sparsity/global", "sparsity/kept"}
    masks.detach()
    train_steps(model, opt, 1)
    assert any((p[~masks.masks[n]] != 0).any() for n, p in masks.params.items())  # detached: no longer enforced


def test_masked_training_equals_training_a_model_whose_masked_entries_are_frozen_at_zero() -> None:
    """With Adam the active entries move exactly as under the old weight * mask reparametrization."""
    torch.manual_seed(3)
    a = lth_net()
    b = copy.deepcopy(a)
    masks = MaskSet(a, masks=keep_top(scores.magnitude(MaskSet(a)), 2000))
    masks.apply()
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    masks.attach([opt_a])
    factors = {n: m.float() for n, m in masks.masks.items()}
    orig = {n: p for n, p in b.named_parameters()}
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt_a.zero_grad()
        nn.functional.cross_entropy(a(x), y).backward()
        opt_a.step()
        opt_b.zero_grad()
        weights = {n: orig[n] * factors[n] if n in factors else orig[n] for n in orig}
        out = torch.func.functional_call(b, weights, (x,))
        nn.functional.cross_entropy(out, y).backward()
        opt_b.step()
    for n, p in a.named_parameters():
        expected = orig[n] * factors[n] if n in factors else orig[n]
        assert torch.allclose(p, expected.detach(), atol=1e-6), n


def test_update_grows_entries_at_the_given_value_with_zero_optimizer_state() -> None:
    model = lth_net()
    masks = MaskSet(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks.attach([opt])
    masks.update(keep_top(scores.magnitude(masks), 3000))
    train_steps(model, opt, 3)
    grow = {n: m.clone() for n, m in masks.masks.items()}
    w = grow["net.1.weight"]
    off = (~w).nonzero()[:7]
    drop = w.nonzero()[0]
    w[off[:, 0], off[:, 1]] = True
    w[drop[0], drop[1]] = False
    param = masks.params["net.1.weight"]
    assert masks.update(grow, grow_value=0.25) == {"pruned": 1, "grown": 7}
    assert (param[off[:, 0], off[:, 1]] == 0.25).all() and param[drop[0], drop[1]] == 0
    buf = opt.state[param]["momentum_buffer"]
    assert (buf[off[:, 0], off[:, 1]] == 0).all() and buf[drop[0], drop[1]] == 0
    assert masks.kept == 3006


def test_dense_gradients_are_kept_before_masking_when_asked() -> None:
    model = lth_net()
    masks = MaskSet(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    masks.attach([opt])
    masks.update(keep_top(scores.magnitude(masks), 1000))
    masks.keep_dense_grads = True
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    dense = {n: p.grad.clone() for n, p in masks.params.items()}
    opt.step()
    for n, p in masks.params.items():
        assert torch.equal(masks.dense_grads[n], dense[n])
        assert torch.equal(p.grad, dense[n] * masks.masks[n])
    grown = scores.gradient_magnitude(masks)
    assert torch.equal(grown["net.3.weight"], dense["net.3.weight"].abs())


def test_state_dict_round_trip_by_name_and_refuses_a_mismatch() -> None:
    model = lth_net()
    masks = MaskSet(model, masks=keep_top(scores.magnitude(MaskSet(model)), 100))
    other = MaskSet(lth_net(1))
    other.load_state_dict(masks.state_dict())
    assert all(torch.equal(other.masks[n], masks.masks[n]) for n in masks.names) and other.kept == 100
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"net.1.weight": masks.masks["net.1.weight"]})
    with pytest.raises(ValueError, match="shape"):
        MaskSet(MLP((1, 28, 28), 10, (9, 4))).load_state_dict(masks.state_dict())


def test_old_prune_based_state_dicts_and_tickets_convert() -> None:
    model = lth_net()
    mask = torch.rand(8, 784) > 0.5
    old = {k: v for k, v in model.state_dict().items() if k != "net.1.weight"}
    old["net.1.weight_orig"] = model.net[1].weight.detach() + 1
    old["net.1.weight_mask"] = mask.float()
    state, masks = convert_pruned_state_dict(old)
    assert set(state) == set(model.state_dict()) and list(masks) == ["net.1.weight"]
    assert torch.equal(state["net.1.weight"], (model.net[1].weight.detach() + 1) * mask) and torch.equal(masks["net.1.weight"], mask)
    assert convert_pruned_state_dict(model.state_dict())[1] == {}
    params = MaskSet(model).params
    listed = [torch.ones(8, 784, dtype=torch.bool), torch.ones(4, 8, dtype=torch.bool), torch.ones(10, 4, dtype=torch.bool)]
    assert list(masks_by_name(listed, params)) == list(params)
    with pytest.raises(ValueError, match="do not match"):
        masks_by_name(listed[:2], params)


def test_weight_statistics_on_known_values() -> None:
    from sparse_lab.callbacks import weight_statistics

    stats = weight_statistics([torch.tensor([[0.0005, -0.005], [0.02, -0.2]])])
    assert stats["count"] == 4 and stats["min"] == pytest.approx(-0.2) and stats["max"] == pytest.approx(0.02)
    assert stats["below_0.001"] == 0.25 and stats["below_0.01"] == 0.5 and stats["below_0.05"] == 0.75
    assert stats["below_0.1"] == 0.75 and stats["mean"] == pytest.approx((0.0005 - 0.005 + 0.02 - 0.2) / 4)


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


def test_effective_sparsity_counts_weights_on_no_input_to_output_path() -> None:
    from sparse_lab.sparsity.masks import effective_masks

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    w1 = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)  # unit 1 gets no input
    w2 = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)  # units 2 and 3 reach no output
    effective = effective_masks(model, {"0.weight": w1, "2.weight": w2}, (3,))
    assert effective["0.weight"].tolist() == [[True, True, False], [False] * 3, [False] * 3, [False] * 3]
    assert effective["2.weight"].tolist() == [[True, False, False, False], [False] * 4]  # (·, 1) has no input
    masks = MaskSet(model, masks={"0.weight": w1, "2.weight": w2})
    report = masks.sparsity((3,))
    assert report["sparsity/global"] == pytest.approx(1 - 7 / 20) and report["sparsity/effective"] == pytest.approx(1 - 3 / 20)
    cnn = SmallCNN((1, 28, 28), 10)  # max-pools and convolutions: a dense net is fully effective
    dense = MaskSet(cnn)
    assert dense.sparsity((1, 28, 28))["sparsity/effective"] == 0.0


def test_an_optimizer_outside_keep_zeros_has_its_weights_masked_after_each_step() -> None:
    class Noisy(torch.optim.SGD):
        """Moves every weight, whatever its gradient: only re-masking after the step keeps pruned ones at 0."""

        @torch.no_grad()
        def step(self, closure=None):  # type: ignore[override]
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(0.01)

    model = lth_net()
    masks = MaskSet(model)
    opt = Noisy(model.parameters(), lr=0.1)
    masks.attach([opt])
    masks.update(keep_top(scores.magnitude(masks), 1000))
    train_steps(model, opt, 3)
    assert all((p[~masks.masks[n]] == 0).all() for n, p in masks.params.items())
    assert model.net[1].bias.abs().sum() > 0  # the step did run


def test_masks_follow_a_model_moved_after_they_were_made() -> None:
    """Lightning moves the model to its device after the callbacks' setup built their MaskSet: the
    masks, the selection over them and the per-step factors must follow (they stayed on the CPU and
    every masking method failed on a GPU). The meta device stands in for the GPU here (a move to it
    makes new Parameters, so the MaskSet looks them up again); tests/test_gpu.py checks the real one."""
    model = lth_net()
    masks = MaskSet(model)
    masks.apply()  # factors built on the CPU
    masks.set({n: torch.rand(m.shape) < 0.5 for n, m in masks.masks.items()})
    model.to("meta")
    masks.refresh()
    assert all(m.device.type == "meta" for m in masks.masks.values())
    assert all(f.device.type == "meta" for f in masks._mask_factors(masks.params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_count_nonzero_counts_as_torch_does_on_both_paths(dtype: torch.dtype) -> None:
    """Large CPU float tensors go to the numba count, small, strided and integer ones to torch's:
    every path counts -0.0 as zero and NaN and inf as nonzero, exactly as torch does."""
    from sparse_lab.sparsity.masks import COMPILED_COUNT_FROM, count_nonzero

    gen = torch.Generator().manual_seed(0)
    big = torch.randn(300, 100, generator=gen, dtype=dtype) * (torch.rand(300, 100, generator=gen) < 0.03)
    assert big.numel() >= COMPILED_COUNT_FROM
    big.view(-1)[:4] = torch.tensor([-0.0, float("nan"), float("inf"), float("-inf")], dtype=dtype)
    small = torch.tensor([0.0, -0.0, 1.0, float("nan")], dtype=dtype)
    tensors = [big, small, big.t(), big[:, ::2], torch.tensor([0, 3, 0, -1]), torch.zeros(0, dtype=dtype)]
    expected = torch.stack([t.count_nonzero() for t in tensors])
    counts = count_nonzero(tensors)
    assert counts.dtype == torch.int64 and counts.tolist() == expected.tolist()
    assert counts[0] == int((big != 0).sum()) and counts[1] == 2


def test_count_changed_counts_differing_entries_on_both_paths() -> None:
    """The numba pass (large float tensors) and ``ne`` (small, strided, integer) agree with a plain
    comparison: NaN differs from itself, -0.0 equals 0.0."""
    from sparse_lab.sparsity import count_changed

    gen = torch.Generator().manual_seed(1)
    before = torch.randn(200, 50, generator=gen)
    now = before.clone()
    now.view(-1)[torch.randperm(now.numel(), generator=gen)[:321]] += 1.0
    before.view(-1)[:3] = torch.tensor([0.0, float("nan"), float("inf")])
    now.view(-1)[:3] = torch.tensor([-0.0, float("nan"), float("inf")])
    small_before, small_now = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 3.0])
    pairs = [(now, before), (small_now, small_before), (now.t(), before.t()), (torch.tensor([1, 2]), torch.tensor([1, 3]))]
    expected = sum(int((a != b).sum()) for a, b in pairs)
    counted = count_changed([a for a, _ in pairs], [b for _, b in pairs])
    assert counted.dtype == torch.int64 and counted.ndim == 0 and int(counted) == expected
    assert expected == 2 * (int((now != before).sum())) + 2 and int((now != before).sum()) >= 321
