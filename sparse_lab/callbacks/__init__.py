"""Thin Lightning adapters over the plain objects in sparse_lab.sparsity."""

from sparse_lab.callbacks.gradient_mask import RandomWalkGradientMask
from sparse_lab.callbacks.metrics_json import MetricsJSONWriter, peak_memory_mb
from sparse_lab.callbacks.update_stats import UpdateStats

__all__ = ["MetricsJSONWriter", "RandomWalkGradientMask", "UpdateStats", "peak_memory_mb"]
