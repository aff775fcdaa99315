"""Files written whole or not at all: write beside the target, then rename over it.

A process killed during a write leaves the previous version of the file (or none) and at most a
hidden ``.<name>.tmp-<pid>`` beside it, never a torn file: ``os.replace`` is atomic on POSIX
within one file system.

Imports only the standard library (torch on the first :func:`atomic_torch_save`), so that the entry
point can write a refusal's ``error.txt`` before torch and Lightning are imported. The Lightning
plugin that writes checkpoints this way is :class:`sparse_lab.checkpoint_io.AtomicCheckpointIO`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


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
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())

