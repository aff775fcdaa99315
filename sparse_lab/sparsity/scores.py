"""Pruning criteria as plain functions: ``score(masks, batch=None) -> {parameter name: score}``.

A higher score is kept first. ``masks`` is the :class:`~sparse_lab.sparsity.MaskSet` being pruned
(its ``model``, ``params``, ``masks`` and, while ``keep_dense_grads`` is set, the step's
``dense_grads``); ``batch`` is an ``(inputs, targets)`` batch for data-dependent criteria.
Options come from the YAML as keyword arguments (``_partial_: true``). A new criterion is one
function here (or anywhere importable) plus a YAML naming it with ``_target_``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sparse_lab.sparsity.masks import MaskSet

Batch = Any


def magnitude(masks: MaskSet, batch: Batch = None) -> dict[str, Tensor]:
    """``|w|``."""
    return {n: p.detach().abs() for n, p in masks.params.items()}


def random(masks: MaskSet, batch: Batch = None, seed: int = 0) -> dict[str, Tensor]:
    """Uniform random scores from a generator seeded with ``seed`` (the same draw on every rank)."""
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=generator).to(p.device) for n, p in masks.params.items()}


def gradient_magnitude(masks: MaskSet, batch: Batch = None) -> dict[str, Tensor]:
    """``|dL/dw|`` of the last step's dense gradient (RigL's growth criterion); needs
    ``masks.keep_dense_grads`` set before that step."""
    if masks.dense_grads is None:
        raise ValueError("gradient_magnitude needs the step's dense gradients: set keep_dense_grads on the MaskSet")
    return {n: g.abs() for n, g in masks.dense_grads.items()}


def _inputs(batch: Batch, samples: int | None = None) -> tuple[Tensor, Tensor]:
    if batch is None:
        raise ValueError("this criterion needs a batch: prune on a step (a by_step schedule), not at an epoch start")
    x, y = batch[0], batch[1]
    return (x, y) if samples is None else (x[:samples], y[:samples])


def snip(masks: MaskSet, batch: Batch = None, samples: int = 100) -> dict[str, Tensor]:
    """SNIP (Lee et al. 2019): ``|g * w|`` of the cross-entropy on the first ``samples`` of ``batch``,
    normalized by its sum over all masked tensors. Scores the weights being trained."""
    x, y = _inputs(batch, samples)
    params = masks.params
    grads = torch.autograd.grad(F.cross_entropy(masks.model(x), y), list(params.values()))
    raw = {n: (g * p).detach().abs() for (n, p), g in zip(params.items(), grads)}
    total = sum(s.sum() for s in raw.values())
    return {n: s / total for n, s in raw.items()}


def per_class(labels: Tensor, samples_per_class: int) -> Tensor:
    """Indices of the first ``samples_per_class`` samples of each class in ``labels``, in batch order."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    first = counts.cumsum(0) - counts  # where each class starts in the sorted order
    rank = torch.arange(labels.numel(), device=labels.device) - first[labels[order]]
    return order[rank < samples_per_class].sort().values


def grasp(masks: MaskSet, batch: Batch = None, samples_per_class: int = 10, temperature: float = 200.0) -> dict[str, Tensor]:
    """GraSP (Wang et al. 2020): ``S = -w * (H g)``, H and g of the cross-entropy of logits /
    ``temperature`` on up to ``samples_per_class`` samples of each class of ``batch``; GraSP removes
    the highest S, so the score returned (higher kept) is ``-S = w * (H g)``. ``H g`` comes from a
    double backward of ``stopped(g) . g``."""
    x, y = _inputs(batch)
    chosen = per_class(y, samples_per_class)
    x, y = x[chosen], y[chosen]
    params = masks.params
    weights = list(params.values())
    stopped = torch.autograd.grad(F.cross_entropy(masks.model(x) / temperature, y), weights)
    grads = torch.autograd.grad(F.cross_entropy(masks.model(x) / temperature, y), weights, create_graph=True)
    hg = torch.autograd.grad(sum((s * g).sum() for s, g in zip(stopped, grads)), weights)
    return {n: (p * h).detach() for (n, p), h in zip(params.items(), hg)}


def synflow(masks: MaskSet, batch: Batch = None) -> dict[str, Tensor]:
    """SynFlow (Tanaka et al. 2020), data-free: on a float64 copy of the model in eval mode with
    every parameter and buffer replaced by its absolute value (masked weights stay 0), ``R`` = the
    sum of the output for one all-ones input shaped like ``batch``'s samples; score
    ``|w * dR/dw|``. Iterate it (``Pruner(rounds=100)``) for the paper's exponential schedule."""
    x, _ = _inputs(batch)
    model = copy.deepcopy(masks.model).double().eval()
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.abs_()
    named = dict(model.named_parameters())
    weights = [named[n] for n in masks.names]
    output = model(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device))
    grads = torch.autograd.grad(output.sum(), weights)
    dtype = next(iter(masks.params.values())).dtype
    return {n: (w * g).detach().abs().to(dtype) for n, w, g in zip(masks.names, weights, grads)}
