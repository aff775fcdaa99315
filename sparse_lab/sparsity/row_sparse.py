"""Linear layers whose backward pass computes only the rows (output units) a walk visited."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _RowSparseLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, layer: RowSparseLinear) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rows = ctx.layer.active_rows
        if rows is None:  # no walk set: dense backward
            grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
            return grad_x, grad_out.t() @ x, grad_out.sum(0) if ctx.has_bias else None, None
        go = grad_out[:, rows]  # (B, r): only visited output units send a signal back
        grad_x = go @ weight[rows] if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight)
        grad_w[rows] = go.t() @ x
        grad_b = None
        if ctx.has_bias:
            grad_b = torch.zeros(weight.shape[0], dtype=grad_out.dtype, device=grad_out.device)
            grad_b[rows] = go.sum(0)
        return grad_x, grad_w, grad_b, None


class RowSparseLinear(nn.Linear):
    """``nn.Linear`` with the same parameters; backward touches only ``active_rows`` when set.

    Inputs must be 2-D ``(batch, in_features)``, as in an MLP.
    """

    active_rows: Tensor | None = None

    @classmethod
    def wrap(cls, linear: nn.Linear) -> RowSparseLinear:
        """A RowSparseLinear sharing ``linear``'s Parameter objects."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: Tensor) -> Tensor:
        return _RowSparseLinearFn.apply(x, self.weight, self.bias, self)


def use_row_sparse_backward(model: nn.Module) -> list[RowSparseLinear]:
    """Replace every ``nn.Linear`` in ``model`` by a RowSparseLinear (same parameters, same state-dict keys)."""
    replaced = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                new = RowSparseLinear.wrap(child)
                setattr(parent, name, new)
                replaced.append(new)
    return replaced
