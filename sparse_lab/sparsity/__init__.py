"""The sparsity core, no Lightning inside.

- the mask core: :class:`MaskSet` (``masks``), score functions (``scores``), selection rules and
  layer-wise densities (``select``), pruning schedules (``schedules``) and RigL's drop fraction
  (``dynamic``);
- random-walk gradient masks: the sampler (``random_walk``, :class:`RandomWalkMask`) and its
  compiled CPU walk (``walk_kernel``, numba kernels in ``_walk_numba``);
- sparse backward and inference: row-sparse Linear layers (``row_sparse``) and compiled sparse
  kernels (``kernels``: edge weight-gradients, :class:`~sparse_lab.sparsity.kernels.SparseLinear`,
  :class:`~sparse_lab.sparsity.kernels.SparseChain`);
- ``legacy``: checkpoints of the earlier ``torch.nn.utils.prune``-based code converted to plain
  weights and masks.

Imports torch and numpy (and numba, on the first compiled walk or kernel), and
:mod:`sparse_lab.errors`."""

from sparse_lab.sparsity import scores
from sparse_lab.sparsity.masks import (
    MaskSet,
    count_changed,
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
    "count_changed",
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
