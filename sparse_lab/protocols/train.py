"""The default protocol: one fit, then the test set."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from sparse_lab.errors import ConfigError
from sparse_lab.protocols.base import Protocol, TrainerFactory

log = logging.getLogger("sparse_lab")

C = TypeVar("C", bound=Callback)


def find_callback(trainer: L.Trainer, cls: type[C]) -> C | None:
    """The trainer's first callback of type ``cls``, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (it does not load as a Lightning checkpoint), or None."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated zip, a foreign pickle, an unreadable file ...
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def resume_checkpoint(resume: str | None) -> str | None:
    """The checkpoint that ``resume=`` names: a ``.ckpt`` file, or the newest checkpoint of a run dir
    (``checkpoints/*.ckpt`` and ``hpc_ckpt_*.ckpt`` by modification time) that loads; the ones skipped
    are logged with the reason."""
    if not resume:
        return None
    path = Path(resume)
    if path.is_file():
        problem = checkpoint_problem(path)
        if problem:
            raise ConfigError(f"resume={resume} does not load ({problem}): give another .ckpt, or the run dir to take its newest intact checkpoint")
        return str(path)
    # hpc_ckpt_N.ckpt: what Lightning's SLURM auto-requeue saves in the run dir on SIGUSR1
    files = [*(path / "checkpoints").glob("*.ckpt"), *path.glob("hpc_ckpt_*.ckpt")] if path.is_dir() else []
    found = [(p, p.stat().st_mtime_ns) for p in files]
    if not found:
        raise ConfigError(
            f"resume={resume} has no checkpoint ({path / 'checkpoints' / 'last.ckpt'} not found): give a run dir that holds "
            "checkpoints/last.ckpt, or the path of a .ckpt file"
        )
    return _newest_intact(tuple(sorted(found, key=lambda f: (f[1], f[0].name == "last.ckpt"), reverse=True)), resume)


@functools.lru_cache(maxsize=8)
def _newest_intact(found: tuple[tuple[Path, int], ...], resume: str) -> str:
    """The first of ``found`` (newest first) that loads; cached by path and mtime, so the check before
    the run and the run itself load and log once."""
    skipped = []
    for candidate, _ in found:
        problem = checkpoint_problem(candidate)
        if problem is None:
            for name, why in skipped:
                log.warning("resume: skipped %s (%s)", name, why)
            log.info("resume: continuing from %s", candidate)
            return str(candidate)
        skipped.append((candidate, problem))
    raise ConfigError(
        f"resume={resume}: none of its checkpoints loads ("
        + "; ".join(f"{c.name}: {why}" for c, why in skipped)
        + "): start afresh without resume="
    )


def fit_and_test(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None
) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path`` if given), then test; the test metrics."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


class Train(Protocol):
    """Fit ``module`` on ``datamodule`` once, then test it. ``resume=`` continues from a checkpoint."""

    def check_resume(self, resume: str | None) -> None:
        """``resume`` must name a checkpoint that loads, or a run dir holding one (see :func:`resume_checkpoint`)."""
        resume_checkpoint(resume)

    def run(
        self,
        make_trainer: TrainerFactory,
        module: L.LightningModule,
        datamodule: L.LightningDataModule,
        out_dir: Path,
        resume: str | None = None,
    ) -> dict[str, float]:
        return fit_and_test(make_trainer(out_dir), module, datamodule, resume_checkpoint(resume))
