"""numba kernels on first use, and the test of whether tensors can go to them."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

DTYPES = (torch.float32, torch.float64)


@functools.cache
def import_or_none(module: str) -> ModuleType | None:
    """``module`` imported (once), or None where that fails (numba missing)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def require(module: str, what: str) -> ModuleType:
    """``module`` imported, or a RuntimeError saying that ``what`` needs numba."""
    kernels = import_or_none(module)
    if kernels is None:
        raise RuntimeError(f"{what} needs numba: pip install numba")
    return kernels


def _kernels_or_none() -> ModuleType | None:
    return import_or_none("sparse_lab.sparsity.kernels._numba")


def compiled() -> ModuleType:
    """The numba kernels module (:mod:`sparse_lab.sparsity.kernels._numba`)."""
    return require("sparse_lab.sparsity.kernels._numba", "the compiled sparse kernels")


def available() -> bool:
    """Whether numba can be imported (tried once)."""
    return _kernels_or_none() is not None


def on_cpu(tensors: Sequence[Tensor]) -> bool:
    """Whether the compiled kernels take these tensors: numba installed, all on the CPU, one
    float32/float64 dtype."""
    return (
        all(t.device.type == "cpu" for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and tensors[0].dtype in DTYPES
        and _kernels_or_none() is not None
    )
