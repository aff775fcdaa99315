"""Boolean masks over parameters: apply them to gradients, count what is nonzero."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mask_gradients(params: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Zero every gradient entry whose mask is False, in one fused call over all tensors."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        raise ValueError("mask_gradients needs every parameter to have a gradient")
    torch._foreach_mul_(grads, list(masks))


def count_nonzero(tensors: Sequence[Tensor]) -> Tensor:
    """Nonzero entries per tensor, shape ``(len(tensors),)``, without leaving the device."""
    # count_nonzero per tensor beats torch._foreach_norm(ord=0), which has no fast kernel.
    return torch.stack([t.count_nonzero() for t in tensors])


def mask_optimizer_state(optimizer: torch.optim.Optimizer, params: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Zero the optimizer's per-parameter buffers (momentum, Adam moments) where ``masks`` is False."""
    for param, mask in zip(params, masks):
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.mul_(mask.to(value.dtype))
