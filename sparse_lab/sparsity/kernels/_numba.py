"""The numba kernels behind :mod:`sparse_lab.sparsity.kernels` (imported on first use, as the walk's).

Dense operands are feature-major (``(features, batch)``, C-contiguous): every inner loop runs over
the batch, contiguous in memory, so it vectorizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FAST = {"reassoc", "nsz", "contract"}


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _edge_grads(delta: np.ndarray, inputs: np.ndarray, rows: np.ndarray, cols: np.ndarray, grad: np.ndarray, bias_grad: np.ndarray) -> None:
    """Into zeroed ``grad`` (out, in): ``delta[:, r] . inputs[:, c]`` at each edge ``(rows[p], cols[p])``;
    into zeroed ``bias_grad`` (out, or empty: no bias): the visited rows' batch sums of ``delta``.
    Batch-major operands (batch, features): sample by sample, both rows sit in L1 and every edge
    gathers from them, so nothing is transposed. Duplicate edges write the same value twice."""
    paths = rows.shape[0]
    acc = np.zeros(paths)
    bias_acc = np.zeros(paths)
    with_bias = bias_grad.shape[0] > 0
    for b in range(delta.shape[0]):
        d = delta[b]
        a = inputs[b]
        for p in range(paths):
            acc[p] += d[rows[p]] * a[cols[p]]
        if with_bias:
            for p in range(paths):
                bias_acc[p] += d[rows[p]]
    for p in range(paths):
        grad[rows[p], cols[p]] = acc[p]
        if with_bias:
            bias_grad[rows[p]] = bias_acc[p]


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_rows(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dense_t: np.ndarray, out_t: np.ndarray, lo: int, hi: int) -> None:
    batch = dense_t.shape[1]
    for i in range(lo, hi):
        acc = out_t[i]
        for b in range(batch):
            acc[b] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            w = values[k]
            src = dense_t[indices[k]]
            for b in range(batch):
                acc[b] += w * src[b]


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_matmul(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dense_t: np.ndarray, out_t: np.ndarray) -> None:
    """``out_t = A @ dense_t`` for the CSR matrix ``A`` (rows, k); ``dense_t`` (k, batch)."""
    _csr_rows(indptr, indices, values, dense_t, out_t, 0, out_t.shape[0])


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST, parallel=True)
def _csr_matmul_parallel(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dense_t: np.ndarray, out_t: np.ndarray, chunks: int) -> None:
    """:func:`_csr_matmul` with the rows split into ``chunks`` ranges run in parallel."""
    n = out_t.shape[0]
    for c in prange(chunks):
        _csr_rows(indptr, indices, values, dense_t, out_t, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_dot_rows(indptr: np.ndarray, indices: np.ndarray, left_t: np.ndarray, right_t: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    batch = left_t.shape[1]
    for i in range(lo, hi):
        g = left_t[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            a = right_t[j]
            s = 0.0
            for b in range(batch):
                s += g[b] * a[b]
            out[i, j] = s


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST, parallel=True)
def _csr_dots(indptr: np.ndarray, indices: np.ndarray, left_t: np.ndarray, right_t: np.ndarray, out: np.ndarray, chunks: int) -> None:
    """Into zeroed ``out`` (rows, cols), at each entry ``(i, j)`` of the CSR pattern:
    ``left_t[i] . right_t[j]`` (feature-major operands): ``left @ right^T`` sampled on the pattern,
    a masked layer's weight gradient. Rows split into ``chunks`` ranges run in parallel."""
    n = out.shape[0]
    for c in prange(chunks):
        _csr_dot_rows(indptr, indices, left_t, right_t, out, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _chain_forward(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    biases: np.ndarray,
    row_starts: np.ndarray,
    nnz_starts: np.ndarray,
    widths: np.ndarray,
    out: np.ndarray,
) -> None:
    """A chain of CSR Linear layers with ReLU between them, batch-major ``x`` (batch, widths[0]) to
    ``out`` (batch, widths[-1]), all layers in one call: layer ``l``'s rows are
    ``indptr[row_starts[l]:row_starts[l + 1] + 1]`` (offsets relative to ``nnz_starts[l]``), its biases
    ``biases[row_starts[l]:row_starts[l + 1]]``."""
    layers = widths.shape[0] - 1
    batch = x.shape[0]
    widest = 0
    for l in range(widths.shape[0]):
        widest = max(widest, widths[l])
    a = np.empty((widest, batch), x.dtype)
    h = np.empty((widest, batch), x.dtype)
    for j in range(widths[0]):
        for b in range(batch):
            a[j, b] = x[b, j]
    for l in range(layers):
        r0 = row_starts[l]
        n0 = nnz_starts[l]
        last = l == layers - 1
        for i in range(widths[l + 1]):
            acc = h[i]
            bias = biases[r0 + i]
            for b in range(batch):
                acc[b] = bias
            for k in range(n0 + indptr[r0 + l + i], n0 + indptr[r0 + l + i + 1]):
                w = values[k]
                src = a[indices[k]]
                for b in range(batch):
                    acc[b] += w * src[b]
            if not last:
                for b in range(batch):
                    acc[b] = max(acc[b], 0.0)
        a, h = h, a
    for i in range(widths[layers]):
        for b in range(batch):
            out[b, i] = a[i, b]


@njit(cache=True, nogil=True, boundscheck=False, parallel=True)
def _chain_forward_parallel(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    biases: np.ndarray,
    row_starts: np.ndarray,
    nnz_starts: np.ndarray,
    widths: np.ndarray,
    out: np.ndarray,
    chunks: int,
) -> None:
    """:func:`_chain_forward` on ``chunks`` slices of the batch in parallel."""
    n = x.shape[0]
    for c in prange(chunks):
        lo = c * n // chunks
        hi = (c + 1) * n // chunks
        _chain_forward(x[lo:hi], indptr, indices, values, biases, row_starts, nnz_starts, widths, out[lo:hi])
