"""Dynamic sparse training schedules: when masks move and what fraction of each layer moves."""

from __future__ import annotations

import math

from sparse_lab.errors import ConfigError


class DropFraction:
    """The fraction of each layer's active weights dropped (and regrown) at training step ``t``:
    ``constant`` (SET's zeta) or ``cosine``, RigL's ``alpha / 2 (1 + cos(pi t / t_end))``; 0 from
    ``t_end`` on."""

    def __init__(self, alpha: float = 0.3, decay: str = "cosine") -> None:
        if not 0 < alpha <= 1:
            raise ConfigError(f"drop fraction alpha={alpha} must be in (0, 1]")
        if decay not in ("constant", "cosine"):
            raise ConfigError(f"drop fraction decay={decay!r} is not one of constant, cosine")
        self.alpha, self.decay = alpha, decay

    def __call__(self, step: int, end: int) -> float:
        if step >= end:
            return 0.0
        if self.decay == "constant":
            return self.alpha
        return self.alpha / 2 * (1 + math.cos(math.pi * step / end))
