"""The numba kernels behind :mod:`sparse_lab.sparsity.kernels` (imported on first use, as the walk's).

Dense operands are feature-major (``(features, batch)``, C-contiguous): every inner loop runs over
the batch, contiguous in memory, so it vectorizes. All kernels run on one thread: numba's thread
pool waiting beside torch's OpenMP pool competes with it for the cores and made torch's own dense
products in the same process several times slower (benchmarks/sparse_speed.py; figures in docs/speed.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparse_lab.sparsity.kernels._simd import LANES, csr_row_into, dot_vectors, relu_inplace, transpose_block, transpose_into

FAST = {"reassoc", "nsz", "contract"}


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _edge_grads(grad_out: np.ndarray, inputs: np.ndarray, rows: np.ndarray, cols: np.ndarray, grad: np.ndarray, bias_grad: np.ndarray) -> None:
    """Into zeroed ``grad`` (out, in): ``grad_out[:, r] . inputs[:, c]`` at each edge ``(rows[p], cols[p])``;
    into zeroed ``bias_grad`` (out, or empty: no bias): the visited rows' batch sums of ``grad_out``.
    Batch-major operands ``(batch, features)``, C-contiguous: both are transposed in registers to
    feature-major first, so that each dot product runs over contiguous memory (a torch transpose
    copy costs several times more). Duplicate edges write the same value twice; each visited row's
    bias sum is taken once."""
    batch = grad_out.shape[0]
    delta_t = np.empty((grad_out.shape[1], batch), grad_out.dtype)
    inputs_t = np.empty((inputs.shape[1], batch), inputs.dtype)
    _transpose(grad_out, delta_t)
    _transpose(inputs, inputs_t)
    vectors = batch // LANES
    with_bias = bias_grad.shape[0] > 0
    summed = np.zeros(bias_grad.shape[0], np.bool_)  # rows whose bias gradient is in: a row recurs on many edges
    for p in range(rows.shape[0]):
        r = rows[p]
        c = cols[p]
        s = dot_vectors(delta_t, r * batch, inputs_t, c * batch, vectors)
        for b in range(vectors * LANES, batch):
            s += delta_t[r, b] * inputs_t[c, b]
        grad[r, c] = s
        if with_bias and not summed[r]:
            t = 0.0
            for b in range(batch):
                t += delta_t[r, b]
            bias_grad[r] = t
            summed[r] = True


@njit(cache=True, nogil=True, boundscheck=False)
def _count_nonzero(flat: np.ndarray) -> int:
    """Entries of ``flat`` that are not zero (-0.0 is zero, NaN is not), as ``torch.count_nonzero``
    counts them, at about four times its speed on a float32 gradient here."""
    n = 0
    for i in range(flat.shape[0]):
        n += flat[i] != 0
    return n


@njit(cache=True, nogil=True, boundscheck=False)
def _count_changed(now: np.ndarray, before: np.ndarray) -> int:
    """Entries where ``now`` and ``before`` differ (``!=``: NaN differs from itself, -0.0 equals 0.0),
    in one pass, without the difference tensor a subtraction would allocate."""
    n = 0
    for i in range(now.shape[0]):
        n += now[i] != before[i]
    return n


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_matmul(
    indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, positions: np.ndarray, dense_t: np.ndarray,
    bias: np.ndarray, out_t: np.ndarray,
) -> None:
    """``out_t = A @ dense_t`` (plus ``bias[i]`` on row ``i`` where ``bias`` is not empty) for the CSR
    matrix ``A`` (rows, k) whose entry ``k`` is ``weights[positions[k]]`` (a flat weight matrix read
    where the mask is); ``dense_t`` (k, batch): each row's sums over tiles of ``LANES`` samples in
    vector registers, the samples past the last full tile one at a time."""
    batch = dense_t.shape[1]
    full = batch // LANES * LANES
    values = np.empty(positions.shape[0], weights.dtype)
    for k in range(positions.shape[0]):
        values[k] = weights[positions[k]]
    with_bias = bias.shape[0] > 0
    for i in range(out_t.shape[0]):
        init = bias[i] if with_bias else 0.0
        k0 = indptr[i]
        k1 = indptr[i + 1]
        for b0 in range(0, full, LANES):
            csr_row_into(indices, values, k0, k1, dense_t, b0, batch, out_t, i * batch + b0, init)
        for b in range(full, batch):
            s = init
            for k in range(k0, k1):
                s += values[k] * dense_t[indices[k], b]
            out_t[i, b] = s


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _csr_dots(indptr: np.ndarray, indices: np.ndarray, left_t: np.ndarray, right_t: np.ndarray, out: np.ndarray) -> None:
    """Into zeroed ``out`` (rows, cols), at each entry ``(i, j)`` of the CSR pattern:
    ``left_t[i] . right_t[j]`` (feature-major operands): ``left @ right^T`` sampled on the pattern,
    a masked layer's weight gradient."""
    batch = left_t.shape[1]
    vectors = batch // LANES
    for i in range(out.shape[0]):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            s = dot_vectors(left_t, i * batch, right_t, j * batch, vectors)
            for b in range(vectors * LANES, batch):
                s += left_t[i, b] * right_t[j, b]
            out[i, j] = s


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
def _transpose(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst = src.T`` for C-contiguous ``src`` (rows, cols) and ``dst`` (cols, rows): blocks of
    ``LANES`` x ``LANES`` transposed in registers, the edges one element at a time."""
    rows, cols = src.shape
    full_rows = rows // LANES * LANES
    full_cols = cols // LANES * LANES
    for r0 in range(0, full_rows, LANES):
        for c0 in range(0, full_cols, LANES):
            transpose_block(src, r0 * cols + c0, cols, dst, c0 * rows + r0, rows)
        for c in range(full_cols, cols):
            for r in range(r0, r0 + LANES):
                dst[c, r] = src[r, c]
    for r in range(full_rows, rows):
        for c in range(cols):
            dst[c, r] = src[r, c]


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
                csr_row_into(indices, values, indptr[r0 + l + i], indptr[r0 + l + i + 1], a, 0, LANES, h, i * LANES, biases[r0 + i])
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
