"""The sparsity core, no Lightning inside: the mask core (:class:`MaskSet`, score functions in
``scores``, selection rules in ``select``), pruning schedules, and the random-walk gradient masks.
Imports only torch (and numba, on the first compiled walk)."""

from sparse_lab.sparsity import scores
from sparse_lab.sparsity.masks import (
    MaskSet,
    count_nonzero,
    layer_name,
    mask_gradients,
    mask_optimizer_state,
    prunable_parameters,
)
from sparse_lab.sparsity.random_walk import RandomWalkMask, edge_masks, keep_edge_gradients, linear_chain
from sparse_lab.sparsity.row_sparse import RowSparseLinear, use_row_sparse_backward
from sparse_lab.sparsity.schedules import (
    CubicSchedule,
    LinearEpochSchedule,
    LinearExactSchedule,
    OneShotAtSchedule,
    OneShotAtStepSchedule,
)
from sparse_lab.sparsity.select import keep_above_percentile, keep_top, keep_top_counts, layer_counts, select

__all__ = [
    "CubicSchedule",
    "LinearEpochSchedule",
    "LinearExactSchedule",
    "MaskSet",
    "OneShotAtSchedule",
    "OneShotAtStepSchedule",
    "RandomWalkMask",
    "RowSparseLinear",
    "count_nonzero",
    "edge_masks",
    "keep_above_percentile",
    "keep_edge_gradients",
    "keep_top",
    "keep_top_counts",
    "layer_counts",
    "layer_name",
    "linear_chain",
    "mask_gradients",
    "mask_optimizer_state",
    "prunable_parameters",
    "scores",
    "select",
    "use_row_sparse_backward",
]
