"""The numba kernels behind :mod:`sparse_lab.sparsity.walk_kernel` (imported on first use: numba
costs about 100 MB of memory and a second of import time that runs without a random walk never pay)."""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 64  # entries per block: from 64 on, the block sums vectorize
GROUP = 8  # entries per group inside a block
# Reassociation lets the sums vectorize; no assumption of finite values (NaN weights reach the
# uniform fallback).
FAST = {"reassoc", "nsz"}


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
