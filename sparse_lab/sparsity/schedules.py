"""Target sparsity as a function of the epoch (at its start) or of the optimizer step."""

from __future__ import annotations

from sparse_lab.errors import ConfigError


def _check_fraction(final: float) -> None:
    if not 0 <= final < 1:
        raise ConfigError(f"sparsity={final} is outside [0, 1)")


class LinearEpochSchedule:
    """The reference's schedule: ``S_e = min(S_final, S_final / E * e)`` at the start of epoch ``e``
    (0-based). The last update is at ``e = E - 1``, so a run ends at ``S_final (E - 1) / E``."""

    by_step = False

    def __init__(self, final: float, epochs: int) -> None:
        _check_fraction(final)
        self.final, self.epochs = final, epochs

    def __call__(self, epoch: int, step: int = 0) -> float:
        return min(self.final, self.final / self.epochs * epoch)


class LinearExactSchedule(LinearEpochSchedule):
    """Linear from 0 at epoch 0 to exactly ``S_final`` at the start of the last epoch."""

    def __call__(self, epoch: int, step: int = 0) -> float:
        if self.epochs <= 1:
            return self.final
        return min(self.final, self.final * epoch / (self.epochs - 1))


class OneShotAtSchedule:
    """Dense until epoch ``at``, then ``S_final`` from its start on."""

    by_step = False

    def __init__(self, final: float, at: int) -> None:
        _check_fraction(final)
        self.final, self.at = final, at

    def __call__(self, epoch: int, step: int = 0) -> float:
        return self.final if epoch >= self.at else 0.0


class OneShotAtStepSchedule:
    """Dense until optimizer step ``step``, then ``S_final``: pruning at initialization (``step=0``,
    on the first training batch) or after ``step`` warm-up steps."""

    by_step = True

    def __init__(self, final: float, step: int = 0) -> None:
        _check_fraction(final)
        if step < 0:
            raise ConfigError(f"the pruning step must be >= 0, got {step}")
        self.final, self.step = final, step

    def is_update_step(self, step: int) -> bool:
        return step == self.step

    def __call__(self, epoch: int, step: int = 0) -> float:
        return self.final if step >= self.step else 0.0


class CubicSchedule:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^3``, updated every
    ``frequency`` optimizer steps from ``start_step``; exactly ``final`` from ``end_step`` on."""

    by_step = True

    def __init__(self, final: float, start_step: int, end_step: int, frequency: int = 100, initial: float = 0.0) -> None:
        _check_fraction(final)
        if not 0 <= start_step < end_step or frequency < 1:
            raise ConfigError("cubic schedule needs 0 <= start_step < end_step and frequency >= 1")
        self.final, self.initial = final, initial
        self.start_step, self.end_step, self.frequency = start_step, end_step, frequency

    def is_update_step(self, step: int) -> bool:
        return step == self.end_step or (self.start_step <= step < self.end_step and (step - self.start_step) % self.frequency == 0)

    def __call__(self, epoch: int, step: int = 0) -> float:
        if step < self.start_step:
            return 0.0
        if step >= self.end_step:
            return self.final
        progress = (step - self.start_step) / (self.end_step - self.start_step)
        return self.final + (self.initial - self.final) * (1 - progress) ** 3
