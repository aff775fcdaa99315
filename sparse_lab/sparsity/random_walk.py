"""Random walks from the output layer to the input: which weights of a Linear chain get a gradient."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparse_lab.errors import ConfigError

STARTS = ("random", "target")
BIASES = ("weight", "uniform", "gradient")


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
    """

    def __init__(self, paths: int, start: str = "target", bias: str = "weight") -> None:
        if not isinstance(paths, int) or isinstance(paths, bool) or paths < 1:
            raise ConfigError(f"paths must be a positive integer, got {paths!r}")
        for name, value, allowed in (("start", start, STARTS), ("bias", bias, BIASES)):
            if value not in allowed:
                raise ConfigError(f"random walk {name}={value!r} is not one of {', '.join(allowed)}")
        self.paths = paths
        self.start = start
        self.bias = bias

    def start_units(self, num_outputs: int, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        """Output units where the walks begin, shape ``(paths,)``."""
        device = generator.device
        if self.start == "random":
            return torch.randint(num_outputs, (self.paths,), generator=generator, device=device)
        if labels is None or labels.numel() == 0:
            raise ValueError("start='target' needs the batch labels")
        pick = torch.randint(labels.numel(), (self.paths,), generator=generator, device=device)
        return labels.to(device)[pick]

    @torch.no_grad()
    def walk(
        self, weights: Sequence[Tensor], starts: Tensor, generator: torch.Generator, grads: Sequence[Tensor] | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Per layer, input to output order: ``(rows, cols)`` of each path's edge, each ``(paths,)``."""
        if self.bias == "gradient" and grads is None:
            raise ValueError("bias='gradient' needs the weight gradients")
        edges: list[tuple[Tensor, Tensor]] = []
        rows = starts
        for layer in reversed(range(len(weights))):
            w = weights[layer]
            u = torch.rand(self.paths, generator=generator, device=w.device)
            if self.bias == "uniform":
                cols = (u * w.shape[1]).long().clamp_(max=w.shape[1] - 1)
            else:
                score = (grads[layer] if self.bias == "gradient" else w).detach().abs()
                cols = _sample_proportional(score, rows, u)
            edges.append((rows, cols))
            rows = cols
        return edges[::-1]

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
        weights = [lin.weight for lin in linears]
        grads = [lin.weight.grad for lin in linears] if self.bias == "gradient" else None
        starts = self.start_units(weights[-1].shape[0], labels, generator)
        out = []
        for w, (rows, cols) in zip(weights, self.walk(weights, starts, generator, grads)):
            bias_mask = torch.zeros(w.shape[0], dtype=dtype, device=w.device)
            bias_mask[rows] = 1
            if whole_rows:
                weight_mask = bias_mask[:, None].expand_as(w).clone()
            else:
                weight_mask = torch.zeros(w.shape, dtype=dtype, device=w.device)
                weight_mask[rows, cols] = 1
            out.append((weight_mask, bias_mask))
        return out


def _sample_proportional(score: Tensor, rows: Tensor, u: Tensor) -> Tensor:
    """For each ``rows[p]``, a column drawn with probability ``score[rows[p], j] / sum_j``.

    Inverse-CDF sampling for all paths at once: each row's cumulative sum is normalized to (0, 1]
    and shifted by the row index, so the whole matrix becomes one sorted vector and a single
    ``searchsorted`` serves every path. Zero entries are never drawn (their key equals the one
    before); float32 keys resolve probabilities down to about 3e-5 per entry.
    """
    n_rows, n_cols = score.shape
    cdf = score.cumsum(1)
    total = cdf[:, -1:].clone()
    keys = cdf.div_(total.clamp_min_(torch.finfo(score.dtype).tiny)).add_(_row_offsets(n_rows, score)).view(-1)
    cols = torch.searchsorted(keys, torch.add(u, rows), right=True).sub_(rows * n_cols).clamp_(0, n_cols - 1)
    # An all-zero row has constant keys; draw its column uniformly instead.
    zero_row = total.view(-1)[rows] <= torch.finfo(score.dtype).tiny
    return torch.where(zero_row, u.mul(n_cols).long().clamp_(max=n_cols - 1), cols)


_OFFSETS: dict[tuple, Tensor] = {}


def _row_offsets(n_rows: int, like: Tensor) -> Tensor:
    """``arange(n_rows)[:, None]`` in ``like``'s dtype and device, cached."""
    key = (n_rows, like.dtype, like.device)
    if key not in _OFFSETS:
        _OFFSETS[key] = torch.arange(n_rows, dtype=like.dtype, device=like.device)[:, None]
    return _OFFSETS[key]
