"""Model building blocks: conv, pool, ReLU in the cheaper order compute exactly the usual order's function; MLP init schemes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab.errors import ConfigError
from sparse_lab.models import MLP, LeNet5, NoPropDTModel, NoPropSharedModel, ResNet18, SmallCNN
from sparse_lab.models.noise_schedule import CosineNoiseSchedule, LinearAlphaSchedule
from sparse_lab.protocols.lottery import reinitialize


def _relu_before_pool(seq: nn.Sequential) -> nn.Sequential:
    """The same modules (shared parameters) with every MaxPool2d, ReLU pair swapped back to ReLU, MaxPool2d."""
    mods = list(seq)
    for i in range(len(mods) - 1):
        if isinstance(mods[i], nn.MaxPool2d) and isinstance(mods[i + 1], nn.ReLU):
            mods[i], mods[i + 1] = mods[i + 1], mods[i]
    return nn.Sequential(*mods)


@pytest.mark.parametrize("kind", ["cnn", "noprop_shared", "noprop_dt"])
def test_pool_before_relu_is_bit_identical(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "cnn":
        seq = SmallCNN((1, 28, 28), 10).net
    elif kind == "noprop_shared":
        seq = NoPropSharedModel((1, 28, 28), 10).encoder
    else:
        seq = NoPropDTModel((3, 32, 32), 10, steps=1, width=0.25, dropout=0.0).blocks[0].image
    swapped = sum(isinstance(a, nn.MaxPool2d) and isinstance(b, nn.ReLU) for a, b in zip(seq, list(seq)[1:]))
    assert swapped == 2  # both pools sit before their ReLUs
    reference = _relu_before_pool(seq)
    seq.train(), reference.train()
    x = torch.randn(8, *((3, 32, 32) if kind == "noprop_dt" else (1, 28, 28))).contiguous(memory_format=torch.channels_last)
    grads = []
    for net in (seq, reference):
        net.zero_grad()
        out = net(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    (a, ga), (b, gb) = grads
    assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(ga, gb))


def test_mlp_variance_scaling_init_is_tensorflows_truncated_normal() -> None:
    """TensorFlow 1's variance_scaling_initializer (SNIP's reference): std sqrt(1 / fan_in) after a cut at
    two standard deviations of the underlying normal, zero biases."""
    torch.manual_seed(0)
    model = MLP((1, 28, 28), 10, (300, 100), init="variance_scaling")
    for linear in model.linears:
        fan_in = linear.weight.shape[1]
        w = linear.weight.detach()
        assert w.std().item() == pytest.approx((1 / fan_in) ** 0.5, rel=0.05)
        cut = 2 * (1 / fan_in) ** 0.5 / 0.87962566103423978
        assert w.abs().max() <= cut and w.abs().max() > 0.97 * cut
        assert not linear.bias.any()


@pytest.mark.parametrize("init", ["glorot_uniform", "glorot_normal"])
def test_mlp_glorot_init(init: str) -> None:
    """Glorot weights (bound sqrt(6 / (fan_in + fan_out)) or std sqrt(2 / (fan_in + fan_out))), zero biases;
    ``reset_parameters`` draws afresh with the same scheme."""
    torch.manual_seed(0)
    model = MLP((1, 28, 28), 10, (300, 100), init=init)
    for linear in model.linears:
        fan_out, fan_in = linear.weight.shape
        w = linear.weight.detach()
        if init == "glorot_uniform":
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        assert w.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.05)
        assert not linear.bias.any()
    before = model.linears[0].weight.detach().clone()
    with torch.no_grad():
        model.linears[0].bias.fill_(1.0)
    reinitialize(model)
    assert not torch.equal(before, model.linears[0].weight) and not model.linears[0].bias.any()


def test_reinitialize_uses_pytorch_defaults_without_a_model_scheme() -> None:
    torch.manual_seed(0)
    torch_mlp, plain = MLP((4,), 3, (5,)), nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    for model in (torch_mlp, plain):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        before = [m.bias.detach().clone() for m in linears]
        reinitialize(model)
        assert all(not torch.equal(b, m.bias) and m.bias.abs().max() <= 1 / m.in_features**0.5 for b, m in zip(before, linears))
    with pytest.raises(ConfigError, match="model.init='he' is invalid: it must be one of: torch"):
        MLP((4,), 3, (5,), init="he")


MNIST = ((1, 28, 28), 10)
# (constructor, bad keyword arguments, the config key and valid values the message must name)
BAD_MODEL_ARGS = [
    (MLP, {"hidden": [0, 10]}, "model.hidden=[0, 10] is invalid: it must be a list of positive integers"),
    (MLP, {"hidden": 5}, "model.hidden=5 is invalid: it must be a list of positive integers"),
    (MLP, {"hidden": "wide"}, "model.hidden='wide' is invalid"),
    (MLP, {"init": "he"}, "model.init='he' is invalid: it must be one of: torch, glorot_uniform, glorot_normal, variance_scaling"),
    (SmallCNN, {"channels": [32, -1]}, "model.channels=[32, -1] is invalid: it must be a list of positive integers"),
    (SmallCNN, {"channels": [8] * 6}, "model.channels=[8, 8, 8, 8, 8, 8] is invalid: it must be at most as many conv+pool"),
    (SmallCNN, {"hidden": [128]}, "model.hidden=[128] is invalid: it must be a positive integer"),
    (ResNet18, {"width": 0}, "model.width=0 is invalid: it must be a positive integer"),
    (ResNet18, {"width": 8.5}, "model.width=8.5 is invalid"),
    (NoPropDTModel, {"steps": 0}, "model.steps=0 is invalid: it must be an integer >= 1"),
    (NoPropDTModel, {"width": -1.0}, "model.width=-1.0 is invalid: it must be a finite number > 0"),
    (NoPropDTModel, {"embedding": "random"}, "model.embedding='random' is invalid: it must be one of: onehot, learned"),
    (NoPropDTModel, {"embedding": "learned", "embedding_dim": 0}, "model.embedding_dim=0 is invalid: it must be null or"),
    (NoPropDTModel, {"dropout": 1.0}, "model.dropout=1.0 is invalid: it must be a number in [0, 1)"),
    (NoPropDTModel, {"schedule_offset": 0.0}, "model.schedule_offset=0.0 is invalid: it must be a finite number > 0"),
    (NoPropDTModel, {"eta": float("nan")}, "model.eta=nan is invalid: it must be a finite number >= 0"),
    (NoPropSharedModel, {"steps": 2.5}, "model.steps=2.5 is invalid: it must be an integer >= 1"),
    (NoPropSharedModel, {"channels": "wide"}, "model.channels='wide' is invalid"),
    (NoPropSharedModel, {"features": 0}, "model.features=0 is invalid: it must be an integer >= 1"),
    (NoPropSharedModel, {"hidden": -3}, "model.hidden=-3 is invalid: it must be an integer >= 1"),
    (NoPropSharedModel, {"alpha_start": 0.0}, "model.alpha_start=0.0 is invalid: it must be a number in (0, 1]"),
    (NoPropSharedModel, {"alpha_end": 1.5}, "model.alpha_end=1.5 is invalid: it must be a number in (0, 1]"),
    (NoPropSharedModel, {"padding": -1}, "model.padding=-1 is invalid: it must be an integer >= 0"),
    (NoPropSharedModel, {"inference": "mean"}, "model.inference='mean' is invalid: it must be one of: renoise, chain"),
    (NoPropSharedModel, {"channels": [8, 8, 8, 8]}, "model.channels=[8, 8, 8, 8] is invalid: it must be at most as many"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD_MODEL_ARGS,
                         ids=[f"{c.__name__}-{'-'.join(map(str, k.values()))}" for c, k, _ in BAD_MODEL_ARGS])
def test_model_constructors_refuse_bad_values_naming_the_config_key(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cls(*MNIST, **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: LeNet5((1, 8, 8), 10), "model=lenet5 needs images of at least 12x12 pixels"),
    (lambda: NoPropDTModel((1, 3, 3), 10, steps=1), "model=noprop_dt needs images of at least 4x4 pixels"),
    (lambda: CosineNoiseSchedule(0), "model.steps=0 is invalid"),
    (lambda: CosineNoiseSchedule(3, offset=-1.0), "model.schedule_offset=-1.0 is invalid"),
    (lambda: LinearAlphaSchedule(0), "model.steps=0 is invalid"),
])
def test_too_small_images_and_bad_schedules_are_config_errors(build: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(("hidden", "density"), [([300, 100], 0.1), ([300, 100], 0.02), ([256, 128], 0.05), ([64], 0.3)])
def test_dense_widths_match_the_weight_count_of_the_pruned_net(hidden: list[int], density: float) -> None:
    from sparse_lab.models.mlp import dense_widths, weight_count

    widths = dense_widths(784, hidden, 10, density)
    assert len(widths) == len(hidden) and all(w >= 1 for w in widths)
    ratio = weight_count(784, widths, 10) / (density * weight_count(784, hidden, 10))
    assert abs(ratio - 1) < 0.05, (widths, ratio)
    ratios = {round(w / h, 1) for w, h in zip(widths, hidden) if h >= 100}
    assert len(ratios) <= 1  # one factor for every wide layer


def test_small_dense_method_builds_the_scaled_dense_net(tmp_path: Path) -> None:
    from sparse_lab.app import train
    from tests.conftest import make_cfg

    train(make_cfg(tmp_path / "run", "method=small_dense", "model=lenet300", "sparsity=0.9", "data.train_size=32",
                   "data.test_size=32", "data.val_size=0", "batch_size=16"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert tuple(state["model.net.1.weight"].shape) == (33, 784)
    assert tuple(state["model.net.3.weight"].shape) == (11, 33)
    with pytest.raises(ConfigError, match="method.model_args.match_sparsity"):
        train(make_cfg(tmp_path / "cnn", "method=small_dense", "model=cnn", "sparsity=0.9"))
