"""Pruning criteria as plain functions: ``score(masks, batch=None) -> {parameter name: score}``.

A higher score is kept first. ``masks`` is the :class:`~sparse_lab.sparsity.MaskSet` being pruned
(its ``model``, ``params``, ``masks`` and, while ``keep_dense_grads`` is set, the step's
``dense_grads``); ``batch`` is an ``(inputs, targets)`` batch for data-dependent criteria.
Options come from the YAML as keyword arguments (``_partial_: true``). A new criterion is one
function here (or anywhere importable) plus a YAML naming it with ``_target_``.
"""

from __future__ import annotations

from typing import Any

import torch
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
