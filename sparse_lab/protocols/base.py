"""The interface every protocol implements: how the app hands it the pieces of a run."""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path

import lightning as L

TrainerFactory = Callable[..., L.Trainer]  # (run_dir, extra_callbacks=()) -> a fresh Trainer


class Protocol(abc.ABC):
    """Work that spans one or several fits of one module (a single fit and test, a pruning sweep,
    lottery rounds). The app builds the protocol from ``method.protocol`` (default: ``Train``), calls
    :meth:`check_resume` before it writes anything, then :meth:`run` once.

    A protocol writes its results through :mod:`sparse_lab.run_record` (``metrics.json``) and asks
    :class:`~sparse_lab.sparsity.MaskSet` for masks; its figures come from :mod:`sparse_lab.report`.
    Under data parallelism it may run in the main process (``ddp_spawn``) or on every rank
    (externally started processes): only global rank 0 writes files.
    """

    @abc.abstractmethod
    def check_resume(self, resume: str | None) -> None:
        """Raise :class:`~sparse_lab.errors.ConfigError` when ``resume`` (a path, as given to
        ``resume=``; None: a fresh run) names nothing this protocol can continue from."""

    @abc.abstractmethod
    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        """Run the protocol; return the final test metrics (``{"test/acc": ..., ...}``).

        ``make_trainer(run_dir, extra_callbacks=())`` builds a fresh Trainer whose callbacks (the
        run record among them) and logger write below ``run_dir``; ``out_dir`` is the run dir;
        ``resume`` is what :meth:`check_resume` accepted.
        """
