"""Fixed noise schedules of NoProp's label diffusion (plain tensors, no training).

Indexing follows the NoProp paper: ``z_0`` is pure noise, ``z_T`` is closest to the label
embedding ``u_y``, and ``q(z_t | y) = N(sqrt(alpha_bar_t) u_y, (1 - alpha_bar_t) I)``.
Block ``t`` (1..T) reads ``z_{t-1}`` and predicts ``u_y``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sparse_lab.checks import is_int, is_number, require


class CosineNoiseSchedule:
    """NoProp-DT's fixed cosine schedule, with an offset that keeps the SNR finite.

    ``alpha_bar_t = cos^2(pi/2 * (1 - t/T + s) / (1 + s))`` for ``t = 0..T``
    (the cosine schedule of Nichol & Dhariwal, 2021, run so that signal grows with ``t``):
    ``alpha_bar_0 = 0`` (pure noise, SNR 0) and ``alpha_bar_T = cos^2(pi/2 * s / (1 + s)) < 1``,
    so ``SNR_T`` stays finite (about 6.4e3 for the default ``s = 0.008``).

    Inference (the paper's eq. 3, the Gaussian posterior ``q(z_t | z_{t-1}, u_y)`` with ``u_y``
    replaced by the block's prediction): ``z_t = a_t u_hat_t + b_t z_{t-1} + sqrt(c_t) eps`` with
    ``alpha_{t-1} = alpha_bar_{t-1} / alpha_bar_t`` and

    - ``a_t = sqrt(alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})``
    - ``b_t = sqrt(alpha_{t-1}) (1 - alpha_bar_t) / (1 - alpha_bar_{t-1})``
    - ``c_t = (1 - alpha_bar_t) (1 - alpha_{t-1}) / (1 - alpha_bar_{t-1})``

    Tensors ``alpha_bar`` and ``snr`` have ``T + 1`` entries (index ``t``); ``a``, ``b``, ``c`` and
    ``loss_weight`` have ``T`` entries, entry ``t - 1`` for block ``t``.
    """

    def __init__(self, steps: int, offset: float = 0.008, eta: float = 0.1) -> None:
        require(is_int(steps, 1), "model.steps", steps, "an integer >= 1")
        require(is_number(offset, 0, open_low=True), "model.schedule_offset", offset, "a finite number > 0 (it keeps the SNR finite)")
        self.steps = steps
        self.offset = offset
        self.eta = eta
        t = torch.arange(steps + 1, dtype=torch.float64)
        alpha_bar = torch.cos(math.pi / 2 * (1 - t / steps + offset) / (1 + offset)) ** 2
        alpha_bar[0] = 0.0  # cos(pi/2) is 6e-17 in floating point: make block 1's input pure noise exactly
        self.alpha_bar = alpha_bar
        self.snr = alpha_bar / (1 - alpha_bar)
        prev, cur = alpha_bar[:-1], alpha_bar[1:]
        alpha_prev = prev / cur  # alpha_{t-1}, the step from z_t to z_{t-1}
        self.a = cur.sqrt() * (1 - alpha_prev) / (1 - prev)
        self.b = alpha_prev.sqrt() * (1 - cur) / (1 - prev)
        self.c = (1 - cur) * (1 - alpha_prev) / (1 - prev)
        # The per-block weight of the denoising loss: T/2 * eta * (SNR(t) - SNR(t-1)).
        self.loss_weight = steps / 2 * eta * (self.snr[1:] - self.snr[:-1])

    def sample(self, u: Tensor, t: int, generator: torch.Generator | None = None) -> Tensor:
        """``z_t ~ q(z_t | y)`` for embeddings ``u`` (reparameterised: gradients reach ``u``)."""
        ab = float(self.alpha_bar[t])
        eps = torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
        return math.sqrt(ab) * u + math.sqrt(1 - ab) * eps

    def kl_to_prior(self, u: Tensor) -> Tensor:
        """``KL(q(z_0 | y) || N(0, I))`` per sample (zero when ``alpha_bar_0 = 0``, the default)."""
        ab = float(self.alpha_bar[0])
        var = 1 - ab
        return 0.5 * (ab * u.square() + var - 1 - math.log(var)).sum(dim=-1)


class LinearAlphaSchedule:
    """The shared-encoder variant's schedule: ``alpha = linspace(alpha_start, alpha_end, T)``.

    Forward chain from the one-hot label ``z_0 = u_y``:
    ``z_t = sqrt(alpha_{t-1}) z_{t-1} + sqrt(1 - alpha_{t-1}) eps`` for ``t = 1..T``;
    denoiser ``t`` reads ``z_t``. Inference starts from ``z_T ~ N(0, I)`` and runs the denoisers
    from ``T`` down to 1, each one's prediction being the next one's input.
    """

    def __init__(self, steps: int, alpha_start: float = 1.0, alpha_end: float = 0.1) -> None:
        require(is_int(steps, 1), "model.steps", steps, "an integer >= 1")
        self.steps = steps
        self.alpha = torch.linspace(alpha_start, alpha_end, steps, dtype=torch.float64)

    def chain(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[z_1, ..., z_T]`` stacked as ``(T, batch, dim)``, drawn with one noise tensor."""
        eps = torch.randn((self.steps, *u.shape), generator=generator, device=u.device, dtype=u.dtype)
        alpha = self.alpha.to(device=u.device, dtype=u.dtype)
        zs, z = [], u
        for t in range(self.steps):  # T small tensor ops; the recursion is inherently sequential
            z = alpha[t].sqrt() * z + (1 - alpha[t]).sqrt() * eps[t]
            zs.append(z)
        return torch.stack(zs)
