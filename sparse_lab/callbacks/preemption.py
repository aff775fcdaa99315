"""SIGTERM (what SLURM and most schedulers send before they stop a job): a checkpoint, then exit.

Lightning already catches SIGTERM (``trainer/connectors/signal_connector.py``): its handler sets
``trainer.received_sigterm`` and the training loop raises ``SIGTERMException`` at the next step
boundary (after the optimizer step and every ``on_train_batch_end``). This callback adds the part
Lightning leaves out: on that exception it writes ``checkpoints/last.ckpt`` with the state of that
step, so ``resume=RUN_DIR`` continues from there and not from the last epoch's end.

A checkpoint written within an epoch must also carry what the epoch has accumulated so far, or
the resumed epoch's train metrics would cover only the steps after the resume: the data loader's
position (:class:`sparse_lab.data.loader.TensorBatchLoader` is stateful) and the module's running
torchmetrics states with the steps it queued for them (``_queued``), which this callback saves.
"""

from __future__ import annotations

import logging
import copy
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchmetrics import Metric

log = logging.getLogger("sparse_lab")


class SaveOnSigterm(Callback):
    """Writes ``last.ckpt`` (in the ModelCheckpoint's folder, else ``<run dir>/checkpoints``) when a fit
    stops on SIGTERM; every checkpoint gets the module's running metric states (restored on load)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        metrics = {
            name: {"state": {k: copy.deepcopy(getattr(m, k)) for k in m._defaults}, "count": m._update_count}
            for name, m in pl_module.named_modules() if isinstance(m, Metric)
        }
        checkpoint["running_metrics"] = {"metrics": metrics, "queued": copy.deepcopy(getattr(pl_module, "_queued", None))}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._running = checkpoint.get("running_metrics")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's on_fit_start, which resets its metrics (a module may be fitted again after a test).
        running, self._running = getattr(self, "_running", None), None
        if running is None or trainer.fit_loop.epoch_loop.batch_progress.current.completed == 0:
            return  # nothing accumulated: a fresh fit or a checkpoint from an epoch's end
        modules = dict(pl_module.named_modules())
        for name, saved in running["metrics"].items():
            metric = modules.get(name)
            if isinstance(metric, Metric):
                for key, value in saved["state"].items():
                    setattr(metric, key, value.to(pl_module.device) if hasattr(value, "to") else value)
                metric._update_count = saved["count"]
                metric._computed = None
        if running["queued"] is not None and hasattr(pl_module, "_queued"):
            pl_module._queued = running["queued"]

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)
        folder = Path(checkpoint.dirpath) if checkpoint is not None and checkpoint.dirpath else Path(trainer.default_root_dir) / "checkpoints"
        path = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        log.warning("SIGTERM: saved %s at step %d (epoch %d); continue with resume=%s",
                    path, trainer.global_step, trainer.current_epoch, trainer.default_root_dir)
