"""Statistics and a histogram of a trained model's prunable weights."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from sparse_lab.atomic import atomic_write_text
from sparse_lab.methods.common import inner_model
from sparse_lab.report.figures import weight_histogram
from sparse_lab.sparsity import prunable_parameters

THRESHOLDS = (0.001, 0.01, 0.05, 0.1)


def weight_statistics(weights: list[Tensor]) -> dict[str, float]:
    """Count, mean, std, min, max and the share of ``|w|`` below 0.001, 0.01, 0.05 and 0.1."""
    flat = torch.cat([w.reshape(-1) for w in weights]).double()
    stats = {"count": float(flat.numel()), "mean": float(flat.mean()), "std": float(flat.std()),
             "min": float(flat.min()), "max": float(flat.max())}
    stats.update({f"below_{t:g}": float((flat.abs() < t).double().mean()) for t in THRESHOLDS})
    return stats


class WeightStatistics(Callback):
    """At the end of fit: ``weight_stats.json``, ``weight_histogram.png`` and a TensorBoard histogram."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # the weights are the same on every rank; one writer
            return
        weights = [p.detach() for p in prunable_parameters(inner_model(pl_module)).values()]
        stats = weight_statistics(weights)
        out = Path(trainer.default_root_dir)
        atomic_write_text(out / "weight_stats.json", json.dumps(stats, indent=2))
        flat = torch.cat([w.reshape(-1) for w in weights]).cpu()
        weight_histogram(flat, stats, out / "weight_histogram.png")
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_histogram"):
            experiment.add_histogram("weights/prunable", flat, global_step=trainer.global_step)
