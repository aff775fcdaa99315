"""The sparsity core: masks, random walks, (later) magnitude selection and schedules. Imports only torch."""

from sparse_lab.sparsity.magnitude import (
    apply_masks,
    current_masks,
    current_weights,
    keep_largest,
    keep_largest_per_layer,
    percentile_masks,
    prunable,
    restore_masks,
    sparsity_report,
)
from sparse_lab.sparsity.masks import count_nonzero, mask_gradients, mask_optimizer_state
from sparse_lab.sparsity.random_walk import RandomWalkMask, edge_masks, keep_edge_gradients, linear_chain
from sparse_lab.sparsity.schedules import CubicSchedule, LinearEpochSchedule, LinearExactSchedule, OneShotAtSchedule
from sparse_lab.sparsity.row_sparse import RowSparseLinear, use_row_sparse_backward

__all__ = [
    "CubicSchedule",
    "LinearEpochSchedule",
    "LinearExactSchedule",
    "OneShotAtSchedule",
    "mask_optimizer_state",
    "apply_masks",
    "current_masks",
    "current_weights",
    "keep_largest",
    "keep_largest_per_layer",
    "percentile_masks",
    "prunable",
    "restore_masks",
    "sparsity_report",
    "RandomWalkMask",
    "RowSparseLinear",
    "count_nonzero",
    "edge_masks",
    "keep_edge_gradients",
    "linear_chain",
    "mask_gradients",
    "use_row_sparse_backward",
]
