"""Weight gradients on a given edge set: one dot product over the batch per edge, instead of the
dense ``grad_out^T @ inputs``."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_lab.sparsity.kernels._load import compiled, on_cpu


def edge_gradients(
    grad_out: Tensor, inputs: Tensor, rows: Tensor, cols: Tensor, with_bias: bool = True, backend: str = "auto"
) -> tuple[Tensor, Tensor | None]:
    """``(grad_weight, grad_bias)`` of a Linear layer, kept only on the edges ``(rows[p], cols[p])``
    and, for the bias, on the visited ``rows``: the dense ``grad_out^T @ inputs`` and
    ``grad_out.sum(0)`` masked to those entries. ``grad_out`` (batch, out), ``inputs`` (batch, in);
    duplicate edges collapse. ``backend``: ``"auto"`` runs the numba kernel on CPU tensors and tensor
    operations elsewhere; ``"torch"`` always tensor operations."""
    out_features, in_features = grad_out.shape[1], inputs.shape[1]
    grad_w = torch.zeros(out_features, in_features, dtype=grad_out.dtype, device=grad_out.device)
    grad_b = torch.zeros(out_features, dtype=grad_out.dtype, device=grad_out.device) if with_bias else None
    if backend != "torch" and on_cpu([grad_out, inputs]):
        bias = grad_b.numpy() if grad_b is not None else grad_w.new_empty(0).numpy()
        compiled()._edge_grads(grad_out.contiguous().numpy(), inputs.contiguous().numpy(), rows.numpy(), cols.numpy(),
                               grad_w.numpy(), bias)
        return grad_w, grad_b
    grad_w[rows, cols] = (grad_out[:, rows] * inputs[:, cols]).sum(0)
    if grad_b is not None:
        grad_b[rows] = grad_out.sum(0)[rows]
    return grad_w, grad_b
