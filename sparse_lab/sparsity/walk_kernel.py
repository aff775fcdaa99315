"""The random walk compiled for the CPU with numba: draws, gradient masking and masks.

The tensor walk (:func:`sparse_lab.sparsity.random_walk._sample_proportional`) builds a cumulative
sum over every row of every layer on each step, then binary-searches it: a dozen whole-matrix
passes and small tensor operations per layer, a large share of a small MLP's step (docs/speed.md
has the figures). Here each visited row gets block sums of ``|score|`` (one vectorized pass
over the row), and each path counts the blocks, then the groups of 8 entries, then the entries
that its target mass passes: a few dozen branch-free additions and comparisons a path, from the
same uniform numbers to the same columns (float64 arithmetic both ways).

Semantics shared with the tensor walk: a path in row ``r`` with uniform ``u`` takes the first column
``j`` whose cumulative ``|score[r, :j+1]|`` exceeds ``u * sum|score[r]|``, so an entry that is
exactly zero is never drawn; a row whose sum is zero or not finite draws ``floor(u * n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from sparse_lab.sparsity.kernels._load import import_or_none, require

DTYPES = (torch.float32, torch.float64)
MASK_DTYPES = {torch.bool: np.bool_, torch.float32: np.float32, torch.float64: np.float64}
_NO_INTS = np.empty(0, np.int64)


def available() -> bool:
    """Whether numba can be imported (tried on first use: runs without a random walk never import it)."""
    return _kernels_or_none() is not None


def _kernels_or_none() -> ModuleType | None:
    """The compiled walk, or None without numba (the tensor walk serves every device then)."""
    return import_or_none("sparse_lab.sparsity._walk_numba")


def _kernels() -> ModuleType:
    return require("sparse_lab.sparsity._walk_numba", "the compiled random walk")


def supports(tensors: Sequence[Tensor]) -> bool:
    """Whether the compiled functions take these tensors: numba installed, all contiguous on the CPU,
    one float32/float64 dtype."""
    return (
        available()
        and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and tensors[0].dtype in DTYPES
    )


def walk_cpu(
    scores: Sequence[Tensor],
    uniforms: Tensor,
    starts: Tensor | None = None,
    labels: Tensor | None = None,
    uniform: bool = False,
) -> tuple[Tensor, Tensor]:
    """Walk down through ``scores`` (input-to-output order, each ``(out, in)``), one uniform number a
    path and layer, top layer first.

    The walks start at ``starts`` (``uniforms``: ``(layers, paths)``), or are picked with a first
    row of ``uniforms`` (``(layers + 1, paths)``): the label of sample ``floor(u * len(labels))``,
    or without ``labels`` the output unit ``floor(u * outputs)``. ``uniform=True`` draws every
    column uniformly. Returns ``(rows, cols)``, each ``(layers, paths)`` int64, input to output:
    path ``p`` crosses layer ``l`` along the edge ``(rows[l, p], cols[l, p])``.
    """
    arrays = tuple(s.detach().numpy() for s in scores)
    u = uniforms.contiguous().numpy()
    if starts is not None:
        rows, cols = _kernels()._walk(arrays, starts.to(torch.int64).numpy(), 0, u, uniform)
    elif labels is not None:
        rows, cols = _kernels()._walk(arrays, labels.to(torch.int64).numpy(), 1, u, uniform)
    else:
        rows, cols = _kernels()._walk(arrays, _NO_INTS, 2, u, uniform)
    return torch.from_numpy(rows), torch.from_numpy(cols)


def compile_for(dtype: torch.dtype, layers: int) -> None:
    """Compile (or load from numba's cache) the functions for ``layers`` layers of ``dtype``, on a tiny
    walk, so that the first training step does not pay for it (a few tenths of a second)."""
    scores = [torch.ones(1, 1, dtype=dtype) for _ in range(layers)]
    rows, cols = walk_cpu(scores, torch.rand(layers + 1, 1))
    keep_edges(scores, [torch.ones(1, dtype=dtype) for _ in range(layers)], rows, cols)
    edge_masks([(1, 1)] * layers, rows, cols, False, dtype)


def keep_edges(grads: Sequence[Tensor], biases: Sequence[Tensor | None], rows: Tensor, cols: Tensor) -> None:
    """In place: zero each ``grads[l]`` but at ``(rows[l], cols[l])``, each ``biases[l]`` but at ``rows[l]``
    (``None``: no bias)."""
    empty = np.empty(0, MASK_DTYPES[grads[0].dtype])
    _kernels()._keep_edges(
        tuple(g.numpy() for g in grads),
        tuple(b.numpy() if b is not None else empty for b in biases),
        np.array([b is not None for b in biases]),
        rows.numpy(),
        cols.numpy(),
    )


def edge_masks(
    shapes: Sequence[tuple[int, int]], rows: Tensor, cols: Tensor, whole_rows: bool, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor]]:
    """``(weight_mask, bias_mask)`` per layer from :func:`walk_cpu`'s edges: 1 at the walked edges
    (``whole_rows``: at every weight of a visited row) and at the visited rows' biases. ``dtype``:
    one of ``MASK_DTYPES``."""
    witness = np.empty(0, MASK_DTYPES[dtype])
    shapes = tuple((int(a), int(b)) for a, b in shapes)
    pairs = _kernels()._edge_masks(shapes, rows.numpy(), cols.numpy(), whole_rows, witness)
    return [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in pairs]
