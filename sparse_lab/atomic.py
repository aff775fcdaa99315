"""Files written whole or not at all: write beside the target, then rename over it.

A process killed during a write leaves the previous version of the file (or none) and at most a
hidden ``.<name>.tmp-<pid>`` beside it, never a torn file: ``os.replace`` is atomic on POSIX
within one file system.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Replace ``path`` with ``data`` in one step (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, but a kill during the write leaves the previous file intact."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


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
