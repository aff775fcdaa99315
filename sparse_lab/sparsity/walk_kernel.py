"""The random walk compiled for the CPU with numba: draws, gradient masking and masks.

The tensor walk (:func:`sparse_lab.sparsity.random_walk._sample_proportional`) builds a cumulative
sum over every row of every layer on each step, then binary-searches it: a dozen whole-matrix
passes and small tensor operations per layer, 0.7 ms a step for the 784-256-128-10 MLP at 1000
paths on a 2-core CPU. Here each visited row gets block sums of ``|score|`` (one vectorized pass
over the row), and each path counts the blocks, then the groups of 8 entries, then the entries
that its target mass passes: a few dozen branch-free additions and comparisons a path, from the
same uniform numbers to the same columns (float64 arithmetic both ways).

Semantics shared with the tensor walk: a path in row ``r`` with uniform ``u`` takes the first column
``j`` whose cumulative ``|score[r, :j+1]|`` exceeds ``u * sum|score[r]|``, so an entry that is
exactly zero is never drawn; a row whose sum is zero or not finite draws ``floor(u * n)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

try:
    from numba import njit
except ImportError:  # the tensor walk serves every device then
    njit = None

BLOCK = 64  # entries per block: from 64 on, the block sums vectorize
GROUP = 8  # entries per group inside a block
# Reassociation lets the sums vectorize; no assumption of finite values (NaN weights reach the
# uniform fallback).
FAST = {"reassoc", "nsz"}
DTYPES = (torch.float32, torch.float64)
MASK_DTYPES = {torch.bool: np.bool_, torch.float32: np.float32, torch.float64: np.float64}
_NO_INTS = np.empty(0, np.int64)


def available() -> bool:
    """Whether numba is installed."""
    return njit is not None


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
        rows, cols = _walk(arrays, starts.to(torch.int64).numpy(), 0, u, uniform)
    elif labels is not None:
        rows, cols = _walk(arrays, labels.to(torch.int64).numpy(), 1, u, uniform)
    else:
        rows, cols = _walk(arrays, _NO_INTS, 2, u, uniform)
    return torch.from_numpy(rows), torch.from_numpy(cols)


def compile_for(dtype: torch.dtype, layers: int) -> None:
    """Compile (or load from numba's cache) the functions for ``layers`` layers of ``dtype``, on a tiny
    walk, so that the first training step does not pay for it (a few tenths of a second)."""
    scores = [torch.ones(1, 1, dtype=dtype) for _ in range(layers)]
    rows, cols = walk_cpu(scores, torch.rand(layers + 1, 1))
    keep_edges(scores, scores[0].new_ones(1).expand(layers, 1).unbind(), rows, cols)
    edge_masks([(1, 1)] * layers, rows, cols, False, dtype)


def keep_edges(grads: Sequence[Tensor], biases: Sequence[Tensor | None], rows: Tensor, cols: Tensor) -> None:
    """In place: zero each ``grads[l]`` but at ``(rows[l], cols[l])``, each ``biases[l]`` but at ``rows[l]``
    (``None``: no bias)."""
    empty = np.empty(0, MASK_DTYPES[grads[0].dtype])
    _keep_edges(
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
    return [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in _edge_masks(shapes, rows.numpy(), cols.numpy(), whole_rows, witness)]


if njit is not None:

    @njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
    def _block_prefix(score: np.ndarray, r: int, block: int, out: np.ndarray) -> None:
        """``out[r, b]`` = sum of ``|score[r]|`` over the ``block``-entry blocks ``0..b`` (``block``:
        ``BLOCK`` or ``GROUP``)."""
        n = score.shape[1]
        full = n // block
        acc = 0.0
        for b in range(full):
            s = 0.0
            base = b * block
            if block == BLOCK:  # constant trip counts: the sums vectorize
                for k in range(BLOCK):
                    s += abs(score[r, base + k])
            else:
                for k in range(GROUP):
                    s += abs(score[r, base + k])
            acc += s
            out[r, b] = acc
        if full < out.shape[1]:
            s = 0.0
            for j in range(full * block, n):
                s += abs(score[r, j])
            out[r, full] = acc + s

    @njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
    def _count_group(score: np.ndarray, r: int, start: int, t: float) -> int:
        """How many of the ``GROUP`` running sums of ``|score[r, start:]|`` stay at or below ``t``: the
        offset of the entry where the sum passes ``t`` (``GROUP``: it does not). Branch-free: where a
        draw lands is random, so a branch on it would be mispredicted about every other time."""
        cum = 0.0
        n = 0
        for e in range(GROUP):
            cum += abs(score[r, start + e])
            n += cum <= t
        return n

    @njit(cache=True, nogil=True, boundscheck=False)
    def _last_nonzero(score: np.ndarray, r: int, lo: int, hi: int) -> int:
        for j in range(hi - 1, lo - 1, -1):
            if score[r, j] != 0.0:
                return j
        return -1

    @njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST)
    def _scan_block(score: np.ndarray, r: int, lo: int, hi: int, t: float) -> int:
        """The entry of ``score[r, lo:hi]`` where the running sum of ``|score[r, lo:]|`` passes ``t``.

        A whole ``BLOCK`` is searched by the sums of its groups (independent additions, so the
        dependent chain stays short), then inside one group. Where rounding lets ``t`` pass the
        end, the last nonzero entry before it; -1 if there is none.
        """
        n = hi - lo
        if n == BLOCK:
            acc = 0.0
            before = 0.0
            g = 0
            for k in range(BLOCK // GROUP):
                s = 0.0
                for e in range(GROUP):
                    s += abs(score[r, lo + k * GROUP + e])
                acc += s
                below = acc <= t
                g += below
                before = acc if below else before
            if g == BLOCK // GROUP:
                return _last_nonzero(score, r, lo, hi)
            start = lo + g * GROUP
            j = _count_group(score, r, start, t - before)
            return start + j if j < GROUP else _last_nonzero(score, r, lo, start + GROUP)
        if n == GROUP:
            j = _count_group(score, r, lo, t)
            return lo + j if j < GROUP else _last_nonzero(score, r, lo, hi)
        for j in range(lo, hi):  # a short last block
            v = abs(score[r, j])
            if v > 0.0:
                if t < v:
                    return j
                t -= v
        return _last_nonzero(score, r, lo, hi)

    @njit(cache=True, nogil=True, boundscheck=False)
    def _draw_layer(score: np.ndarray, rows: np.ndarray, u: np.ndarray, uniform: bool, cols: np.ndarray) -> None:
        n_rows, n_cols = score.shape
        paths = rows.shape[0]
        if uniform:
            for p in range(paths):
                cols[p] = min(int(u[p] * n_cols), n_cols - 1)
            return
        seen = np.zeros(n_rows, np.bool_)
        visited = 0
        for p in range(paths):
            if not seen[rows[p]]:
                seen[rows[p]] = True
                visited += 1
        # Coarse blocks when each path has many entries to itself (their sums vectorize), groups
        # when many paths share few rows (each path then passes fewer entries).
        block = BLOCK if visited * n_cols > BLOCK * paths else GROUP
        n_blocks = (n_cols + block - 1) // block
        prefix = np.empty((n_rows, n_blocks))
        for r in range(n_rows):
            if seen[r]:
                _block_prefix(score, r, block, prefix)
        for p in range(paths):
            r = rows[p]
            total = prefix[r, n_blocks - 1]
            c = -1
            if total > 0.0 and total < np.inf:
                t = u[p] * total
                b = 0  # the first block whose prefix exceeds t: a branch-free count
                for k in range(n_blocks - 1):
                    b += prefix[r, k] <= t
                before = prefix[r, b - 1] if b > 0 else 0.0
                c = _scan_block(score, r, b * block, min((b + 1) * block, n_cols), t - before)
            if c < 0:  # a zero (or non-finite) row: uniform
                c = min(int(u[p] * n_cols), n_cols - 1)
            cols[p] = c

    @njit(cache=True, nogil=True, boundscheck=False)
    def _walk(scores, starts: np.ndarray, pick: int, u: np.ndarray, uniform: bool) -> tuple[np.ndarray, np.ndarray]:
        """``pick``: 0 ``starts`` are the start units; 1 ``starts`` are labels to pick from with
        ``u[0]``; 2 output units are picked with ``u[0]``."""
        layers = len(scores)
        paths = u.shape[1]
        rows = np.empty((layers, paths), np.int64)
        cols = np.empty((layers, paths), np.int64)
        first = 0 if pick == 0 else 1
        if pick == 0:
            rows[layers - 1] = starts
        else:
            n = starts.shape[0] if pick == 1 else scores[layers - 1].shape[0]
            for p in range(paths):
                k = min(int(u[0, p] * n), n - 1)
                rows[layers - 1, p] = starts[k] if pick == 1 else k
        for i in range(layers):
            layer = layers - 1 - i
            _draw_layer(scores[layer], rows[layer], u[first + i], uniform, cols[layer])
            if layer > 0:
                rows[layer - 1] = cols[layer]
        return rows, cols

    @njit(cache=True, nogil=True, boundscheck=False)
    def _keep_edges(grads, biases, has_bias: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        for layer in range(len(grads)):
            g, b = grads[layer], biases[layer]
            r, c = rows[layer], cols[layer]
            kept = np.empty(r.shape[0], g.dtype)
            for p in range(r.shape[0]):
                kept[p] = g[r[p], c[p]]
            g[:] = 0
            for p in range(r.shape[0]):
                g[r[p], c[p]] = kept[p]
            if has_bias[layer]:
                for p in range(r.shape[0]):
                    kept[p] = b[r[p]]
                b[:] = 0
                for p in range(r.shape[0]):
                    b[r[p]] = kept[p]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _edge_masks(shapes, rows: np.ndarray, cols: np.ndarray, whole_rows: bool, witness: np.ndarray):
        out = []
        for layer in range(len(shapes)):
            weight = np.zeros(shapes[layer], witness.dtype)
            bias = np.zeros(shapes[layer][0], witness.dtype)
            r, c = rows[layer], cols[layer]
            for p in range(r.shape[0]):
                bias[r[p]] = 1
                if not whole_rows:
                    weight[r[p], c[p]] = 1
            if whole_rows:
                for i in range(bias.shape[0]):
                    if bias[i]:
                        weight[i, :] = 1
            out.append((weight, bias))
        return out
