"""Thin Lightning adapters."""

from sparse_lab.callbacks.metrics_json import MetricsJSONWriter, peak_memory_mb

__all__ = ["MetricsJSONWriter", "peak_memory_mb"]
