"""Thin Lightning adapters over the plain objects in sparse_lab.sparsity."""

from sparse_lab.callbacks.dynamic_sparsity import DynamicSparsity
from sparse_lab.callbacks.gradient_mask import RandomWalkGradientMask
from sparse_lab.callbacks.masking import MaskEnforcer, inner_model
from sparse_lab.callbacks.metrics_json import MetricsJSONWriter, peak_memory_mb
from sparse_lab.callbacks.preemption import SaveOnSigterm
from sparse_lab.callbacks.progress_bar import TimedProgressBar
from sparse_lab.callbacks.pruner import Pruner
from sparse_lab.callbacks.sparse_kernels import SparseKernels
from sparse_lab.callbacks.update_stats import UpdateStats
from sparse_lab.callbacks.weight_stats import WeightStatistics, weight_statistics

__all__ = [
    "DynamicSparsity",
    "MetricsJSONWriter",
    "MaskEnforcer",
    "Pruner",
    "RandomWalkGradientMask",
    "SaveOnSigterm",
    "SparseKernels",
    "TimedProgressBar",
    "UpdateStats",
    "WeightStatistics",
    "inner_model",
    "peak_memory_mb",
    "weight_statistics",
]
