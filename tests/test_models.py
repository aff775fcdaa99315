"""Model building blocks: conv, pool, ReLU in the cheaper order compute exactly the usual order's function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lab.models import NoPropDTModel, NoPropSharedModel, SmallCNN


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
