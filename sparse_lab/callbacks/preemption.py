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

A SIGTERM during the evaluation after an epoch (or during the epoch's last training step: Lightning
then stops after the evaluation's first batch) is saved with the running state from before that
evaluation, and marked so that the resumed fit runs the whole evaluation again: Lightning would skip
the rest of it, and the epoch's evaluation metrics would be lost.

Data parallel runs (``world_size > 1``) stop at the first step boundary where any rank has the
signal, all ranks together: the ranks agree on it after every training step (one boolean
all-reduce), save the checkpoint together and stop. Lightning's own path does not serve there:
under ``ddp_spawn`` the workers' fit is not wrapped by the code that calls ``on_exception``, and a
worker that ends on ``SIGTERMException`` (a ``SystemExit``) exits with code 0 and no result, so the
main process waits for it forever. A spawned worker therefore raises :class:`Preempted`, which
reaches the main process as torch's ``ProcessRaisedException``; :func:`is_preemption` recognizes
both forms. Lightning's SIGTERM handler also broadcasts from rank 0 inside the handler, a collective
that the other ranks match only when the signal reaches them all at the same point of the step; a
signal that reaches one rank alone (or the ranks in different steps) left that rank waiting in the
broadcast and the others in the step's next collective, forever. Under ``world_size > 1`` this
callback's handler only records the signal (and forwards it to launched children, as Lightning's
does), and the step-end agreement does the rest.
"""

from __future__ import annotations

import copy
import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torch.multiprocessing import ProcessRaisedException
from torchmetrics import Metric

log = logging.getLogger("sparse_lab")


class Preempted(Exception):
    """A ``ddp_spawn`` worker stopped by SIGTERM after the checkpoint was saved (see the module doc)."""


def is_preemption(exception: BaseException) -> bool:
    """Whether ``exception`` is a SIGTERM stop: Lightning's ``SIGTERMException`` in this process, or a
    spawned worker's :class:`Preempted` as the main process receives it."""
    return isinstance(exception, SIGTERMException) or (
        isinstance(exception, ProcessRaisedException) and f"{Preempted.__name__}: " in str(exception)
    )


class SaveOnSigterm(Callback):
    """Writes ``last.ckpt`` (in the ModelCheckpoint's folder, else ``<run dir>/checkpoints``) when a fit
    stops on SIGTERM; every checkpoint gets the module's running metric states (restored on load)."""

    _before_evaluation: dict[str, Any] | None = None  # the running state when the fit's evaluation began
    _signalled = False  # under world_size > 1: this rank received SIGTERM

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._before_evaluation = _running_state(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._before_evaluation = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._before_evaluation = None  # the evaluation's metrics are in the epoch's row now

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        running = self._before_evaluation
        if running is None:
            running = _running_state(pl_module)
        elif "loops" in checkpoint:  # written during the epoch's evaluation, or after it but before the epoch's end
            _evaluate_again_on_resume(checkpoint["loops"])
        if trainer.world_size > 1:  # every rank's own partial sums (rank 0 writes the file): each takes its own back
            running = {"per_rank": apply_to_collection(running, Tensor, trainer.strategy.all_gather)}
        checkpoint["running_metrics"] = running

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._running = checkpoint.get("running_metrics")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            _record_sigterm_without_broadcast(trainer, self)
        # After the module's on_fit_start, which resets its metrics (a module may be fitted again after a test).
        running, self._running = getattr(self, "_running", None), None
        # processed, not completed: a checkpoint written in on_train_batch_end (the data parallel path)
        # precedes the batch's completion, and after the first batch of an epoch completed is still 0.
        if running is None or trainer.fit_loop.epoch_loop.batch_progress.current.processed == 0:
            return  # nothing accumulated: a fresh fit
        if "per_rank" in running:
            running = apply_to_collection(running["per_rank"], Tensor, lambda t: t[trainer.global_rank])
        modules = dict(pl_module.named_modules())
        for name, saved in running["metrics"].items():
            metric = modules.get(name)
            if isinstance(metric, Metric):
                for key, value in saved["state"].items():
                    setattr(metric, key, value.to(pl_module.device) if hasattr(value, "to") else value)
                metric._update_count = saved["count"]
                metric._computed = None
        if running["queued"] is not None and hasattr(pl_module, "_queued"):
            pl_module._queued = apply_to_collection(running["queued"], Tensor, lambda t: t.to(pl_module.device))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size == 1 or not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return
        message = self._save(trainer)
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            raise Preempted(message)
        raise SIGTERMException(143)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and trainer.world_size == 1:
            self._save(trainer)

    @staticmethod
    def _save(trainer: L.Trainer) -> str:
        """Write ``last.ckpt`` (every rank calls this; rank 0 writes); the message that says so."""
        checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)
        folder = Path(checkpoint.dirpath) if checkpoint is not None and checkpoint.dirpath else Path(trainer.default_root_dir) / "checkpoints"
        path = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        message = (f"SIGTERM: saved {path} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                   f"continue with resume={trainer.default_root_dir}")
        if trainer.is_global_zero:
            log.warning(message)
        return message


def _running_state(pl_module: L.LightningModule) -> dict[str, Any]:
    """A copy of what ``pl_module`` has accumulated towards its epoch metrics: its torchmetrics states
    and the steps it queued for them (``_queued``)."""
    metrics = {
        name: {"state": {k: copy.deepcopy(getattr(m, k)) for k in m._defaults}, "count": m._update_count}
        for name, m in pl_module.named_modules() if isinstance(m, Metric)
    }
    return {"metrics": metrics, "queued": copy.deepcopy(getattr(pl_module, "_queued", None))}


def _evaluate_again_on_resume(loops: dict[str, Any]) -> None:
    """Mark the fit's evaluation in ``loops`` (a checkpoint's loop state) as cut short within its first
    batch: a resumed fit then runs the whole evaluation again before the epoch ends, as Lightning does
    for a checkpoint written within an evaluation batch (evaluation loaders start from their first
    batch). Otherwise Lightning skips the rest of it, and the epoch's evaluation metrics are lost."""
    progress = loops.get("fit_loop", {}).get("epoch_loop.val_loop.batch_progress")
    if progress is None:
        return
    for counts in (progress["total"], progress["current"]):
        counts.update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False


def _record_sigterm_without_broadcast(trainer: L.Trainer, callback: SaveOnSigterm) -> None:
    """In the SIGTERM handler Lightning installed for this fit, replace its notifier (which broadcasts
    from rank 0, see the module doc) by one that records the signal in ``callback`` and forwards it to
    the launcher's children; Lightning's other handlers and those it kept from before stay. Lightning
    never sees the signal, so no evaluation stops on one rank alone: the ranks stop together at the
    end of a training step."""
    handler = signal.getsignal(signal.SIGTERM)
    handlers = getattr(handler, "signal_handlers", None)
    if not isinstance(handlers, list):
        return

    def record(signum: int, frame: Any) -> None:
        log.info("[rank %d] received SIGTERM: saving at the end of this training step", trainer.global_rank)
        if not callback._signalled and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)
        callback._signalled = True

    notifier = _SignalConnector._sigterm_notifier_fn
    handler.signal_handlers = [record if getattr(h, "__func__", None) is notifier else h for h in handlers]
