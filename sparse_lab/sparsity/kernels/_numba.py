"""The numba kernels behind :mod:`sparse_lab.sparsity.kernels` (imported on first use, as the walk's).

Dense operands are feature-major (``(features, batch)``, C-contiguous): every inner loop runs over
the batch, contiguous in memory, so it vectorizes. All kernels run on one thread: numba's thread
pool waiting beside torch's OpenMP pool competes with it for the cores and made torch's own dense
products in the same process several times slower (benchmarks/sparse_speed.py; figures in docs/speed.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparse_lab.sparsity.kernels._simd import LANES, csr_row_into, relu_inplace, transpose_into

FAST = {"reassoc", "nsz", "contract"}


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _edge_grads(delta_t: np.ndarray, inputs_t: np.ndarray, rows: np.ndarray, cols: np.ndarray, grad: np.ndarray, bias_grad: np.ndarray) -> None:
    """Into zeroed ``grad`` (out, in): ``delta_t[r] . inputs_t[c]`` at each edge ``(rows[p], cols[p])``;
    into zeroed ``bias_grad`` (out, or empty: no bias): the visited rows' batch sums of ``delta_t``.
    Feature-major operands (features, batch): each dot product runs over contiguous memory.
    Duplicate edges write the same value twice."""
    batch = delta_t.shape[1]
    with_bias = bias_grad.shape[0] > 0
    for p in range(rows.shape[0]):
        d = delta_t[rows[p]]
        a = inputs_t[cols[p]]
        s = 0.0
        for b in range(batch):
            s += d[b] * a[b]
        grad[rows[p], cols[p]] = s
        if with_bias:
            t = 0.0
            for b in range(batch):
                t += d[b]
            bias_grad[rows[p]] = t


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _accumulate_row(
    acc: np.ndarray, indices: np.ndarray, weights: np.ndarray, positions: np.ndarray, dense_t: np.ndarray, k0: int, k1: int
) -> None:
    """``acc += sum_k weights[positions[k]] * dense_t[indices[k]]`` over the nonzeros ``k0:k1`` of one
    CSR row (``weights``: a flat weight matrix, read where the mask is, so nothing is gathered first)."""
    batch = acc.shape[0]
    if batch == 1:  # a dot product: four independent sums keep the FMA pipeline full
        s0 = s1 = s2 = s3 = 0.0
        k = k0
        while k + 3 < k1:
            s0 += weights[positions[k]] * dense_t[indices[k], 0]
            s1 += weights[positions[k + 1]] * dense_t[indices[k + 1], 0]
            s2 += weights[positions[k + 2]] * dense_t[indices[k + 2], 0]
            s3 += weights[positions[k + 3]] * dense_t[indices[k + 3], 0]
            k += 4
        while k < k1:
            s0 += weights[positions[k]] * dense_t[indices[k], 0]
            k += 1
        acc[0] += (s0 + s1) + (s2 + s3)
        return
    k = k0
    while k + 1 < k1:  # two nonzeros a pass: half the loads and stores of acc
        w0 = weights[positions[k]]
        w1 = weights[positions[k + 1]]
        src0 = dense_t[indices[k]]
        src1 = dense_t[indices[k + 1]]
        for b in range(batch):
            acc[b] += w0 * src0[b] + w1 * src1[b]
        k += 2
    if k < k1:
        w0 = weights[positions[k]]
        src0 = dense_t[indices[k]]
        for b in range(batch):
            acc[b] += w0 * src0[b]


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_matmul(
    indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, positions: np.ndarray, dense_t: np.ndarray, out_t: np.ndarray
) -> None:
    """``out_t = A @ dense_t`` for the CSR matrix ``A`` (rows, k) whose entry ``k`` is
    ``weights[positions[k]]``; ``dense_t`` (k, batch)."""
    for i in range(out_t.shape[0]):
        acc = out_t[i]
        acc[:] = 0.0
        _accumulate_row(acc, indices, weights, positions, dense_t, indptr[i], indptr[i + 1])


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_dots(indptr: np.ndarray, indices: np.ndarray, left_t: np.ndarray, right_t: np.ndarray, out: np.ndarray) -> None:
    """Into zeroed ``out`` (rows, cols), at each entry ``(i, j)`` of the CSR pattern:
    ``left_t[i] . right_t[j]`` (feature-major operands): ``left @ right^T`` sampled on the pattern,
    a masked layer's weight gradient."""
    batch = left_t.shape[1]
    for i in range(out.shape[0]):
        g = left_t[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            a = right_t[j]
            s = 0.0
            for b in range(batch):
                s += g[b] * a[b]
            out[i, j] = s


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _chain_forward_tiled(
    x: np.ndarray, input_rows: np.ndarray, used_inputs: int, indptr: np.ndarray, indices: np.ndarray,
    values: np.ndarray, biases: np.ndarray, widths: np.ndarray, out: np.ndarray,
) -> None:
    """A chain of CSR Linear layers with ReLU between them, batch-major ``x`` (batch, widths[0]) to
    ``out`` (batch, widths[-1]), in tiles of ``LANES`` samples: each tile is transposed in
    registers to feature-major, keeping only the ``used_inputs`` input features some weight reads
    (feature ``j`` goes to row ``input_rows[j]``; the others to row ``used_inputs``, never read),
    and each layer's rows are sums of weighted input rows held in registers (:func:`csr_row_into`).
    ``input_rows`` covers ``widths[0]`` rounded up to a multiple of ``LANES``. Layer ``l``'s rows
    are ``indptr[r + l:r + l + widths[l + 1] + 1]``, ``r`` the widths of the layers before it
    without the input (offsets into ``indices`` and ``values``, absolute); the first layer's
    ``indices`` are rows of the transposed tile, ``input_rows`` applied."""
    batch, n_in = x.shape
    layers = widths.shape[0] - 1
    padded_in = (n_in + LANES - 1) // LANES * LANES
    rows = used_inputs + 1
    for l in range(1, widths.shape[0]):
        rows = max(rows, widths[l])
    a = np.empty((rows, LANES), x.dtype)  # every row read is written first
    h = np.empty((rows, LANES), x.dtype)
    pad = np.zeros((LANES, padded_in if batch % LANES or padded_in != n_in else 0), x.dtype)
    for s0 in range(0, batch, LANES):
        n = min(LANES, batch - s0)
        if n == LANES and padded_in == n_in:
            for j0 in range(0, n_in, LANES):
                transpose_into(x, s0 * n_in + j0, n_in, a, input_rows, j0, LANES)
        else:  # a last short tile or a width that is no multiple of LANES: through a padded copy
            for t in range(n):
                for j in range(n_in):
                    pad[t, j] = x[s0 + t, j]
            for j0 in range(0, padded_in, LANES):
                transpose_into(pad, j0, padded_in, a, input_rows, j0, LANES)
        r0 = 0
        for l in range(layers):
            if l > 0:
                for i in range(widths[l]):
                    relu_inplace(a, i * LANES)
            for i in range(widths[l + 1]):
                csr_row_into(indices, values, indptr[r0 + l + i], indptr[r0 + l + i + 1], a, LANES, h, i * LANES, biases[r0 + i])
            a, h = h, a
            r0 += widths[l + 1]
        for i in range(widths[layers]):
            for t in range(n):
                out[s0 + t, i] = a[i, t]


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _chain_forward_scatter(
    x: np.ndarray, background: np.ndarray, colptr: np.ndarray, rowidx: np.ndarray, values: np.ndarray,
    biases: np.ndarray, widths: np.ndarray, out: np.ndarray,
) -> None:
    """The chain of :func:`_chain_forward_tiled` one sample at a time, over CSC weights: batch-major ``x``
    (batch, widths[0]) to ``out`` (batch, widths[-1]). Each nonzero input adds its weight column
    into the layer's output, so inputs equal to ``background`` (the first layer's, per feature:
    black pixels) and hidden units that ReLU zeroed cost nothing. ``biases``: the first layer's
    with ``W @ background`` added. Layer ``l``'s column pointers (absolute offsets) are
    ``colptr[c + l:c + l + widths[l] + 1]``, ``c`` the widths of the layers before it."""
    layers = widths.shape[0] - 1
    widest = 0
    for l in range(widths.shape[0]):
        widest = max(widest, widths[l])
    h = np.empty((2, widest), x.dtype)
    for s in range(x.shape[0]):
        c0 = 0
        r0 = 0
        cur = 0
        for l in range(layers):
            dst = h[cur]
            for i in range(widths[l + 1]):
                dst[i] = biases[r0 + i]
            for j in range(widths[l]):
                v = x[s, j] - background[j] if l == 0 else h[1 - cur, j]
                if v == 0:
                    continue
                for k in range(colptr[c0 + l + j], colptr[c0 + l + j + 1]):
                    dst[rowidx[k]] += values[k] * v
            if l == layers - 1:
                for i in range(widths[l + 1]):
                    out[s, i] = dst[i]
            else:
                for i in range(widths[l + 1]):
                    if dst[i] < 0:
                        dst[i] = 0
            c0 += widths[l]
            r0 += widths[l + 1]
            cur = 1 - cur
