"""Pruning criteria against hand-computed values on tiny nets, GraSP's sign, iterative rounds, and
pruning at initialization end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab.app import train
from sparse_lab.sparsity import MaskSet, keep_top, layer_counts, scores
from sparse_lab.sparsity.scores import per_class
from tests.conftest import make_cfg


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))


def test_snip_is_the_normalized_gradient_times_weight_computed_by_hand() -> None:
    model = two_layer()
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    h = x @ w1.T
    p = torch.softmax(h @ w2.T, 1)
    delta = (p - nn.functional.one_hot(y, 2).float()) / len(y)  # dL/dlogits of the mean cross-entropy
    g2 = delta.T @ h
    g1 = (delta @ w2).T @ x
    raw = {"0.weight": (g1 * w1).abs(), "1.weight": (g2 * w2).abs()}
    total = sum(r.sum() for r in raw.values())
    got = scores.snip(MaskSet(model), (x, y), samples=100)
    for n in raw:
        assert torch.allclose(got[n], raw[n] / total, atol=1e-6)
    assert float(sum(s.sum() for s in got.values())) == pytest.approx(1.0)
    only_two = scores.snip(MaskSet(model), (x, y), samples=2)  # the first `samples` of the batch
    assert not torch.allclose(only_two["0.weight"], got["0.weight"])


def test_per_class_takes_the_first_samples_of_each_class_in_batch_order() -> None:
    labels = torch.tensor([2, 0, 2, 2, 1, 0, 2, 1, 0, 0])
    assert per_class(labels, 2).tolist() == [0, 1, 2, 4, 5, 7]
    assert per_class(labels, 10).tolist() == list(range(10))


def hessian_times_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float) -> list[torch.Tensor]:
    """H g with the full Hessian of the loss over all weights, built explicitly."""
    params = [p for p in model.parameters()]
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([math.prod(s) for s in shapes])
        weights = {n: c.view(s) for (n, _), c, s in zip(model.named_parameters(), chunks, shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, weights, (x,)) / temperature, y)

    g = torch.autograd.functional.jacobian(loss, flat)
    hg = torch.autograd.functional.hessian(loss, flat) @ g
    return list(hg.split([math.prod(s) for s in shapes]))


def test_grasp_keeps_the_lowest_minus_w_hg_as_the_paper_removes_the_highest() -> None:
    model = two_layer(1)
    x, y = torch.randn(12, 3), torch.tensor([0, 1] * 6)
    hg = hessian_times_gradient(model, x[per_class(y, 4)], y[per_class(y, 4)], temperature=2.0)
    got = scores.grasp(MaskSet(model), (x, y), samples_per_class=4, temperature=2.0)
    paper_s = {}  # GraSP's S = -theta * Hg: the paper removes the highest
    for (n, p), h in zip(model.named_parameters(), hg):
        assert torch.allclose(got[n], p.detach() * h.view(p.shape), atol=1e-7), n
        paper_s[n] = -p.detach() * h.view(p.shape)
    kept = keep_top(got, 10)
    flat_s = torch.cat([s.reshape(-1) for s in paper_s.values()])
    flat_kept = torch.cat([m.reshape(-1) for m in kept.values()])
    assert flat_s[flat_kept].max() <= flat_s[~flat_kept].min()  # the kept are those of lowest S
    assert not torch.equal(kept["0.weight"], keep_top({n: -s for n, s in got.items()}, 10)["0.weight"])  # the sign matters


def test_synflow_is_the_path_norm_gradient_computed_by_hand() -> None:
    model = two_layer(2)
    masks = MaskSet(model)
    w1, w2 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    got = scores.synflow(masks, (torch.randn(7, 3), torch.zeros(7, dtype=torch.long)))
    # R = 1^T |W2| |W1| 1: dR/dW1[i, j] = sum_k |W2[k, i]|, dR/dW2[k, i] = sum_j |W1[i, j]|
    assert torch.allclose(got["0.weight"], w1.abs() * w2.abs().sum(0)[:, None], atol=1e-6)
    assert torch.allclose(got["1.weight"], w2.abs() * w1.abs().sum(1)[None, :], atol=1e-6)
    assert torch.equal(model[0].weight, w1) and model.training  # the model itself is untouched
    masks.update(keep_top(scores.magnitude(masks), 6))
    again = scores.synflow(masks, (torch.randn(7, 3), torch.zeros(7, dtype=torch.long)))
    assert all((again[n][~m] == 0).all() for n, m in masks.masks.items())  # pruned weights carry no flow


def test_pruner_rounds_shrink_the_density_exponentially_and_score_again_each_time() -> None:
    from types import SimpleNamespace

    from sparse_lab.callbacks import Pruner

    model = two_layer()
    seen = []

    def recording(masks: MaskSet, batch: object = None) -> dict[str, torch.Tensor]:
        seen.append(masks.kept)
        return scores.magnitude(masks)

    pruner = Pruner(schedule=None, score=recording, rounds=3, masks=MaskSet(model))
    pruner.prune_to(1 - 0.125, SimpleNamespace(global_step=0))
    assert seen == [20, 10, 5] and pruner.masks.kept == round(0.125 * 20)  # densities 1/2, 1/4, 1/8 of 20 weights
    pruner.prune_to(1 - 0.125, SimpleNamespace(global_step=1))
    assert len(seen) == 3  # the level in force: nothing to do


AT_INIT = ["model=lenet300", "sparsity=0.9", "epochs=1", "data.val_size=0"]


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "random"])
def test_pruning_at_init_prunes_on_the_first_batch_and_trains_with_the_mask_fixed(tmp_path: Path, method: str) -> None:
    train(make_cfg(tmp_path, f"method={method}", *AT_INIT))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    pruner = ckpt["callbacks"]["Pruner"]
    masks, state = pruner["masks"], ckpt["state_dict"]
    n = 784 * 300 + 300 * 100 + 100 * 10
    assert pruner["step"] == 0 and sum(int(m.sum()) for m in masks.values()) == round(0.1 * n)
    for name, mask in masks.items():
        assert (state["model." + name][~mask] == 0).all() and (state["model." + name][mask] != 0).all()
    if method == "random":  # ERK's per-layer counts
        shapes = {name: tuple(m.shape) for name, m in masks.items()}
        assert {name: int(m.sum()) for name, m in masks.items()} == layer_counts(shapes, 0.1, "erk")
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]
    assert row["sparsity/global"] == pytest.approx(1 - round(0.1 * n) / n)
    assert row["pruning/time_s"] > 0  # the scoring time of the at-init method


def test_lenet5_shapes_and_snip_on_it(tmp_path: Path) -> None:
    from sparse_lab.models import LeNet5

    net = LeNet5((1, 28, 28), 10)
    assert sum(p.numel() for p in net.parameters()) == 431_080 and net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    train(make_cfg(tmp_path, "method=snip", "model=lenet5", "sparsity=0.98", "epochs=1", "data.val_size=0"))
    masks = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["Pruner"]["masks"]
    assert list(masks) == ["net.0.weight", "net.2.weight", "net.5.weight", "net.7.weight"]
    assert sum(int(m.sum()) for m in masks.values()) == round(0.02 * 430_500)


def test_layer_shuffle_control_keeps_each_layers_count_at_new_positions_with_the_init_weights(tmp_path: Path) -> None:
    from sparse_lab.sparsity.select import shuffle_within_layers

    masks = {"a": torch.rand(30, 20) > 0.7, "b": torch.rand(5, 7) > 0.2}
    shuffled = shuffle_within_layers(masks, torch.Generator().manual_seed(0))
    assert all(int(shuffled[n].sum()) == int(m.sum()) and not torch.equal(shuffled[n], m) for n, m in masks.items())

    overrides = ["method=snip", *AT_INIT, "callbacks.checkpoint.save_top_k=0", "+trainer.max_steps=1"]
    train(make_cfg(tmp_path / "plain", *overrides))
    train(make_cfg(tmp_path / "shuffled", *overrides, "mask.shuffle=layer"))
    load = lambda run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)  # noqa: E731
    plain, shuf = load(tmp_path / "plain"), load(tmp_path / "shuffled")
    a, b = plain["callbacks"]["Pruner"]["masks"], shuf["callbacks"]["Pruner"]["masks"]
    assert all(int(a[n].sum()) == int(b[n].sum()) and not torch.equal(a[n], b[n]) for n in a)
    assert (shuf["state_dict"]["model.net.5.weight"][~b["net.5.weight"]] == 0).all()


def test_reinit_trains_a_fresh_draw_of_the_weights_under_the_mask_scored_on_the_first(tmp_path: Path) -> None:
    from sparse_lab.models import MLP
    from sparse_lab.models.reinit import seeded
    from sparse_lab.callbacks.pruner import REINIT_SEED_OFFSET

    overrides = ["method=snip", *AT_INIT, "model.init=variance_scaling", "callbacks.checkpoint.save_top_k=0",
                 "+trainer.max_steps=1", "lr=1e-12"]
    for run in ("plain", "reinit", "again"):
        train(make_cfg(tmp_path / run, *overrides, *([] if run == "plain" else ["mask.reinit=true"])))
    load = lambda run: torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)  # noqa: E731
    plain, fresh, again = load("plain"), load("reinit"), load("again")
    masks = fresh["callbacks"]["Pruner"]["masks"]
    assert all(torch.equal(masks[n], m) for n, m in plain["callbacks"]["Pruner"]["masks"].items())  # scored on the same init
    net = MLP((1, 28, 28), 10, hidden=[300, 100], init="variance_scaling")
    with seeded(0 + REINIT_SEED_OFFSET):  # seed=0
        net.reset_parameters()
    expected = net.state_dict()
    for name, mask in masks.items():
        w, w0 = fresh["state_dict"][f"model.{name}"], plain["state_dict"][f"model.{name}"]
        assert (w[~mask] == 0).all() and int((w != 0).sum()) == int(mask.sum())
        assert torch.allclose(w[mask], expected[name][mask], atol=1e-6)  # the fresh draw (lr 1e-12: one step moves nothing)
        assert not torch.allclose(w[mask], w0[mask])
        assert torch.equal(w, again["state_dict"][f"model.{name}"])
    assert all((fresh["state_dict"][f"model.net.{i}.bias"].abs() < 1e-6).all() for i in (1, 3, 5))  # this init's zero biases


def test_lottery_final_sparsity_and_the_shuffle_control(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "method=lottery", "model.hidden=[8,4]", "epochs=1", "data.val_size=0", "target_acc=null",
                   "method.protocol.rounds=3", "method.protocol.round_epoch_cap=1", "method.protocol.final_sparsity=0.75",
                   "method.protocol.stop_on_miss=false", "method.protocol.control=shuffle"))
    state = json.loads((tmp_path / "lottery.json").read_text())
    assert [r["kept"] for r in state["rounds"]] == [6344, 3172, 1586]  # 50% of the remaining twice: 75% in all
    control = state["control"]
    assert control["kind"] == "shuffle" and control["kept"] == 1586 and control["round"] == 2
    winning = torch.load(tmp_path / "round_02" / "ticket.pt")["masks"]
    shuffled = torch.load(tmp_path / "control" / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["MaskEnforcer"]["masks"]
    assert all(int(shuffled[n].sum()) == int(winning[n].sum()) and not torch.equal(shuffled[n], winning[n]) for n in winning)


@pytest.mark.parametrize("experiment", ["sparse_zoo_mnist", "sparse_zoo_lenet5", "sparse_zoo_cifar10"])
def test_every_zoo_method_composes_under_the_one_budget(tmp_path: Path, experiment: str) -> None:
    from hydra.utils import instantiate

    from sparse_lab.validation import validate

    for method in ["full", "snip", "grasp", "synflow", "random", "set", "rigl", "gmp", "imp"]:
        cfg = make_cfg(tmp_path, f"experiment={experiment}", f"method={method}", fast=False)
        validate(cfg)
        optimizer = instantiate(cfg.method.module.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
        assert optimizer.defaults["weight_decay"] == 5e-4 and cfg.method.module.scheduler.T_max == cfg.epochs
        if method == "imp":
            protocol = instantiate(cfg.method.protocol)
            assert protocol.rounds == 5 and protocol.round_epoch_cap == cfg.epochs
            assert (1 - protocol.prune_percent / 100) ** 4 == pytest.approx(1 - cfg.sparsity)


@pytest.mark.parametrize("preset, model", [("snip_lenet300_paper", "MLP"), ("snip_lenet5_paper", "LeNet5")])
def test_the_snip_paper_presets_decay_the_lr_tenfold_at_25k_50k_75k_of_100k_steps(tmp_path: Path, preset: str, model: str) -> None:
    from hydra.utils import instantiate

    from sparse_lab.validation import validate

    cfg = make_cfg(tmp_path, f"experiment={preset}", fast=False)
    validate(cfg)
    assert cfg.model._target_.endswith(f".{model}") and not cfg.trainer.get("gradient_clip_val")
    assert cfg.method.module._target_.endswith("Classifier") and "pruner" in cfg.method.callbacks  # SNIP
    assert cfg.method.module.scheduler_interval == "step" and cfg.data.test_each_epoch
    assert cfg.epochs * 60000 // cfg.batch_size >= 100_000
    optimizer = instantiate(cfg.method.module.optimizer)([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = instantiate(cfg.method.module.scheduler)(optimizer)
    lrs = {}
    for step in range(1, 75_001):
        optimizer.step()
        scheduler.step()
        if step in (24_999, 25_000, 50_000, 75_000):
            lrs[step] = optimizer.param_groups[0]["lr"]
    assert lrs == pytest.approx({24_999: 0.1, 25_000: 0.01, 50_000: 0.001, 75_000: 0.0001})
