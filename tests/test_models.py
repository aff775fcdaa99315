"""Model building blocks: conv, pool, ReLU in the cheaper order compute exactly the usual order's function; MLP init schemes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lab.models import MLP, NoPropDTModel, NoPropSharedModel, SmallCNN
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
    with pytest.raises(ValueError, match="init must be one of"):
        MLP((4,), 3, (5,), init="he")
