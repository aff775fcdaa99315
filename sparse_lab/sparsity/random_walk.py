"""Random walks from the output layer to the input: which weights of a Linear chain get a gradient."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparse_lab.errors import ConfigError
from sparse_lab.sparsity import walk_kernel

STARTS = ("random", "target")
BIASES = ("weight", "uniform", "gradient")
BACKENDS = ("auto", "torch", "numba")


def linear_chain(model: nn.Module, method: str = "random-walk") -> list[nn.Linear]:
    """The model's Linear layers, input to output, checked to form a chain that holds every parameter."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = sorted({type(m).__name__ for m in model.modules() if not isinstance(m, nn.Linear) and any(True for _ in m.parameters(recurse=False))})
    chained = all(a.out_features == b.in_features for a, b in zip(linears, linears[1:]))
    if not linears or others or not chained:
        found = f"it has {', '.join(others)} layers" if others else "its Linear layers do not form a chain"
        raise ConfigError(
            f"method {method} needs a model that is a chain of Linear layers, but model "
            f"{type(model).__name__} is not ({found}). Use model=mlp."
        )
    return linears


class RandomWalkMask:
    """Samples ``paths`` random walks from output units down to input units, per batch.

    Each walk starts at an output unit (``start="random"``: a uniformly drawn class;
    ``"target"``: the label of a uniformly drawn sample of the batch) and, layer by layer towards
    the input, moves from unit ``i`` to unit ``j`` of the layer below with probability proportional
    to ``|W[i, j]|`` (``bias="weight"``), ``|grad W[i, j]|`` (``"gradient"``) or uniformly
    (``"uniform"``); an all-zero row falls back to uniform. It marks edge ``(i, j)`` and row ``i``.
    All paths are sampled at once: the only Python loop is over layers.

    ``backend``: ``"numba"`` draws on the CPU with the compiled walk of
    :mod:`sparse_lab.sparsity.walk_kernel` (the same draws from the same uniform numbers, about
    3x faster at 1000 paths on the reference MLP); ``"torch"`` with tensor operations on any device;
    ``"auto"`` (default) takes numba for CPU float32/float64 weights when it is installed.
    """

    def __init__(self, paths: int, start: str = "target", bias: str = "weight", backend: str = "auto") -> None:
        if not isinstance(paths, int) or isinstance(paths, bool) or paths < 1:
            raise ConfigError(f"paths must be a positive integer, got {paths!r}")
        for name, value, allowed in (("start", start, STARTS), ("bias", bias, BIASES), ("backend", backend, BACKENDS)):
            if value not in allowed:
                raise ConfigError(f"random walk {name}={value!r} is not one of {', '.join(allowed)}")
        if backend == "numba" and not walk_kernel.available():
            raise ConfigError("random walk backend=numba needs numba (pip install numba), or use backend=auto")
        self.paths = paths
        self.start = start
        self.bias = bias
        self.backend = backend

    def start_units(self, num_outputs: int, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        """Output units where the walks begin, shape ``(paths,)``: one uniform number a path picks a
        class (``start="random"``) or a sample of the batch whose label it takes (``"target"``)."""
        labels = self._check_labels(labels)
        u = torch.rand(self.paths, generator=generator, device=generator.device).double()
        if labels is None:
            return (u * num_outputs).long().clamp_(max=num_outputs - 1)
        return labels.to(u.device)[(u * labels.numel()).long().clamp_(max=labels.numel() - 1)]

    def _check_labels(self, labels: Tensor | None) -> Tensor | None:
        """The labels that ``start="target"`` picks from (None for ``"random"``)."""
        if self.start == "random":
            return None
        if labels is None or labels.numel() == 0:
            raise ValueError("start='target' needs the batch labels")
        return labels.reshape(-1)

    @torch.no_grad()
    def walk(
        self, weights: Sequence[Tensor], starts: Tensor, generator: torch.Generator, grads: Sequence[Tensor] | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Per layer, input to output order: ``(rows, cols)`` of each path's edge, each ``(paths,)``."""
        if self.bias == "gradient" and grads is None:
            raise ValueError("bias='gradient' needs the weight gradients")
        scores = grads if self.bias == "gradient" else weights
        if self._compiled(scores):
            uniforms = torch.rand(len(scores), self.paths, generator=generator)
            rows, cols = walk_kernel.walk_cpu(scores, uniforms, starts=starts, uniform=self.bias == "uniform")
            return list(zip(rows.unbind(), cols.unbind()))
        edges: list[tuple[Tensor, Tensor]] = []
        rows = starts
        for layer in reversed(range(len(weights))):
            w = weights[layer]
            u = torch.rand(self.paths, generator=generator, device=w.device)
            if self.bias == "uniform":
                cols = (u.double() * w.shape[1]).long().clamp_(max=w.shape[1] - 1)
            else:
                score = (grads[layer] if self.bias == "gradient" else w).detach().abs()
                cols = _sample_proportional(score, rows, u)
            edges.append((rows, cols))
            rows = cols
        return edges[::-1]

    @torch.no_grad()
    def edges(self, linears: Sequence[nn.Linear], labels: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One step's walks over ``linears``: ``(rows, cols)``, each ``(layers, paths)``, input to output order.

        Path ``p`` crosses layer ``l`` along the edge ``(rows[l, p], cols[l, p])``.
        """
        weights = [lin.weight for lin in linears]
        grads = [lin.weight.grad for lin in linears] if self.bias == "gradient" else None
        if grads is not None and any(g is None for g in grads):
            raise ValueError("bias='gradient' needs the weight gradients")
        scores = grads if grads is not None else weights
        if self._compiled(scores):
            # One draw of (layers + 1, paths) uniforms: the numbers start_units and walk draw in turn.
            uniforms = torch.rand(len(scores) + 1, self.paths, generator=generator)
            return walk_kernel.walk_cpu(scores, uniforms, labels=self._check_labels(labels), uniform=self.bias == "uniform")
        starts = self.start_units(weights[-1].shape[0], labels, generator)
        rows, cols = zip(*self.walk(weights, starts, generator, grads))
        return torch.stack(rows), torch.stack(cols)

    @torch.no_grad()
    def masks(
        self,
        linears: Sequence[nn.Linear],
        labels: Tensor | None,
        generator: torch.Generator,
        whole_rows: bool = False,
        dtype: torch.dtype = torch.bool,
    ) -> list[tuple[Tensor, Tensor]]:
        """``(weight_mask, bias_mask)`` per layer, input to output order: 1/True where kept.

        ``whole_rows=True`` keeps every weight of a visited row instead of only the walked edges.
        ``dtype`` may be the gradients' dtype: multiplying by a float mask is several times
        faster than by a boolean one.
        """
        rows, cols = self.edges(linears, labels, generator)
        return edge_masks([lin.weight for lin in linears], rows, cols, whole_rows, dtype, self.backend)

    def prepare(self, linears: Sequence[nn.Linear]) -> None:
        """Compile the CPU walk for ``linears`` now, if it will serve them, so that the first training
        step does not pay for it."""
        weights = [lin.weight for lin in linears]
        if self.backend != "torch" and walk_kernel.supports(weights):
            walk_kernel.compile_for(weights[0].dtype, len(weights))

    def _compiled(self, scores: Sequence[Tensor]) -> bool:
        """Whether this walk runs compiled (:mod:`walk_kernel`) rather than as tensor operations."""
        if self.backend == "torch":
            return False
        if walk_kernel.supports(scores):
            return True
        if self.backend == "numba":
            raise ValueError("random walk backend=numba needs float32/float64 tensors on the CPU; use backend=auto")
        return False


def edge_masks(
    weights: Sequence[Tensor],
    rows: Tensor,
    cols: Tensor,
    whole_rows: bool = False,
    dtype: torch.dtype = torch.bool,
    backend: str = "auto",
) -> list[tuple[Tensor, Tensor]]:
    """``(weight_mask, bias_mask)`` per layer of ``weights`` from :meth:`RandomWalkMask.edges`: 1 at the
    walked edges (``whole_rows``: at every weight of a visited row) and at the visited rows' biases.
    ``backend`` as :class:`RandomWalkMask`'s: ``"torch"`` builds them with tensor operations."""
    device = weights[0].device
    compiled = device.type == "cpu" and walk_kernel.available() and dtype in walk_kernel.MASK_DTYPES
    if backend == "numba" and not compiled:
        raise ValueError("edge_masks backend=numba needs CPU tensors, numba and a float32/float64/bool dtype; use backend=auto")
    if backend != "torch" and compiled:
        return walk_kernel.edge_masks([w.shape for w in weights], rows, cols, whole_rows, dtype)
    out = []
    for w, r, c in zip(weights, rows, cols):
        bias_mask = torch.zeros(w.shape[0], dtype=dtype, device=device)
        bias_mask[r] = 1
        if whole_rows:
            weight_mask = bias_mask[:, None].expand_as(w).clone()
        else:
            weight_mask = torch.zeros(w.shape, dtype=dtype, device=device)
            weight_mask[r, c] = 1
        out.append((weight_mask, bias_mask))
    return out


def keep_edge_gradients(linears: Sequence[nn.Linear], rows: Tensor, cols: Tensor, backend: str = "auto") -> None:
    """Zero every weight gradient of ``linears`` but the walked edges' and every bias gradient but the
    visited rows' (``rows``/``cols`` from :meth:`RandomWalkMask.edges`), in place.

    The same gradients as multiplying by :func:`edge_masks`, without building the masks.
    ``backend`` as :class:`RandomWalkMask`'s (``"numba"`` falls back to tensor operations here).
    """
    grads = [lin.weight.grad for lin in linears]
    biases = [lin.bias.grad if lin.bias is not None else None for lin in linears]
    if any(g is None for g in grads) or any(b is None for lin, b in zip(linears, biases) if lin.bias is not None):
        raise ValueError("keep_edge_gradients needs every parameter to have a gradient")
    if backend != "torch" and walk_kernel.supports(grads + [b for b in biases if b is not None]):
        walk_kernel.keep_edges(grads, biases, rows, cols)
        return
    for g, b, r, c in zip(grads, biases, rows, cols):
        kept = g[r, c]
        g.zero_()[r, c] = kept
        if b is not None:
            kept = b[r]
            b.zero_()[r] = kept


def _sample_proportional(score: Tensor, rows: Tensor, u: Tensor) -> Tensor:
    """For each ``rows[p]``, a column drawn with probability ``score[rows[p], j] / sum_j``.

    Inverse-CDF sampling for all paths at once: each row's cumulative sum is normalized to (0, 1]
    and shifted by the row index, so the whole matrix becomes one sorted vector and a single
    ``searchsorted`` serves every path. Zero entries are never drawn (their key equals the one
    before). The keys are float64, as the compiled walk's sums, so both draw the same columns
    from the same uniform numbers.
    """
    n_rows, n_cols = score.shape
    cdf = score.cumsum(1, dtype=torch.float64)
    total = cdf[:, -1:]
    # A row that sums to zero (or not to a finite number) gets the keys of a uniform row.
    usable = (total > 0) & (total < math.inf)
    keys = torch.where(usable, cdf / total, _cached(_uniform_keys, n_cols, cdf)).add_(_cached(_row_offsets, n_rows, cdf))
    cols = torch.searchsorted(keys.view(-1), torch.add(u.double(), rows), right=True)
    return cols.sub_(rows * n_cols).clamp_(0, n_cols - 1)


_CACHE: dict[tuple, Tensor] = {}


def _cached(make, n: int, like: Tensor) -> Tensor:
    """``make(n, like)``, cached by ``(make, n, dtype, device)``."""
    key = (make, n, like.dtype, like.device)
    if key not in _CACHE:
        _CACHE[key] = make(n, like)
    return _CACHE[key]


def _row_offsets(n_rows: int, like: Tensor) -> Tensor:
    """``arange(n_rows)[:, None]``: shifts row ``r``'s keys into ``(r, r + 1]``."""
    return torch.arange(n_rows, dtype=like.dtype, device=like.device)[:, None]


def _uniform_keys(n_cols: int, like: Tensor) -> Tensor:
    """``(j + 1) / n_cols``: the keys of a row whose entries are all equal, so that ``u`` draws ``floor(u * n_cols)``."""
    return torch.arange(1, n_cols + 1, dtype=like.dtype, device=like.device) / n_cols
