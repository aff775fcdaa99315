"""A model's parameters drawn afresh, under a seed that leaves the global random streams untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, the global RNGs draw as after ``torch.manual_seed(seed)``; after it they are
    back where they were (the CPU generator, and the CUDA devices' when CUDA is initialized)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        if cuda:
            torch.manual_seed(seed)
        else:  # torch.manual_seed would queue a CUDA seeding that outlives the block
            torch.default_generator.manual_seed(seed)
        yield


def reinitialize(model: nn.Module) -> None:
    """Draw ``model``'s parameters afresh: with its own ``reset_parameters`` (its init scheme) when it
    has one, else with each submodule's."""
    if callable(getattr(model, "reset_parameters", None)):
        model.reset_parameters()
        return
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
