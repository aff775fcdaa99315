"""Lightning's checkpoint writer, made atomic: a kill during a checkpoint write leaves the previous file."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from sparse_lab.atomic import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` for local paths, writing every checkpoint beside its target
    and renaming it into place (Lightning's own write opens the target itself, so a kill during it
    leaves a truncated ``.ckpt``). Remote URLs (``s3://`` ...) keep Lightning's behaviour."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)
