"""One-shot magnitude pruning: train dense, then evaluate the trained net pruned at several levels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L

from sparse_lab.callbacks.metrics_json import MetricsJSONWriter
from sparse_lab.methods.common import inner_model
from sparse_lab.errors import ConfigError
from sparse_lab.protocols.train import TrainerFactory, Train, find_callback, fit_and_test, resume_checkpoint
from sparse_lab.report.figures import oneshot_figure
from sparse_lab.sparsity import MaskSet, keep_above_percentile, scores
from sparse_lab.validation import is_number


class OneShotPruning(Train):
    """After dense training, for each ``p`` in ``percents`` zero every prunable weight with
    ``|w| < percentile(|w| over all layers, p)`` and test, with no retraining (SPEC section 2).

    Results go to ``metrics.json`` (``oneshot``: percent, kept, sparsity, test metrics), to
    TensorBoard (``oneshot/*`` against the percent) and to ``oneshot.png`` with ``target`` as a line.
    The model is restored to its dense weights afterwards; ``test`` in metrics.json is the dense net's.
    """

    def __init__(self, percents: Sequence[float] = tuple(range(0, 100, 10)), target: float | None = None) -> None:
        problems = []
        if isinstance(percents, (str, bytes)) or not percents or not all(is_number(p, 0, 100) for p in percents):
            problems.append(f"percents={percents!r} is invalid: it must be a non-empty list of numbers in [0, 100]")
        if target is not None and not is_number(target, 0, 1, open_low=True):
            problems.append(f"target={target!r} is invalid: it must be null or an accuracy in (0, 1]")
        if problems:
            raise ConfigError("\n".join(problems))
        self.percents = list(percents)
        self.target = target

    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        trainer = make_trainer(out_dir)
        dense = fit_and_test(trainer, module, datamodule, resume_checkpoint(resume))
        masks = MaskSet(inner_model(module))
        trained = {n: w.clone() for n, w in masks.weights().items()}
        rows = []
        for percent in self.percents:
            masks.assign(trained)
            masks.set(keep_above_percentile(scores.magnitude(masks), percent))
            masks.apply()
            result = trainer.test(module, datamodule=datamodule, verbose=False)[0]
            rows.append({"percent": percent, "kept": masks.kept, "sparsity": 1 - masks.kept / masks.total,
                         **{k: float(v) for k, v in result.items()}})
            if trainer.logger is not None:
                trainer.logger.log_metrics({f"oneshot/{k}": v for k, v in rows[-1].items() if k != "percent"}, step=int(percent))
        masks.assign(trained)
        writer = find_callback(trainer, MetricsJSONWriter)
        if writer is not None:  # re-reads the file: under ddp_spawn the epoch rows were written by other processes
            writer.update(oneshot=rows, test=dict(dense))
        if trainer.is_global_zero:
            oneshot_figure(rows, Path(trainer.default_root_dir) / "oneshot.png", self.target,
                           getattr(trainer.logger, "experiment", None))
        return dense
