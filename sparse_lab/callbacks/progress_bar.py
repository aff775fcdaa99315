"""A progress bar redrawn by the clock rather than every N batches."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar

from sparse_lab.checks import is_number, require


class TimedProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn at most every ``refresh_interval_s`` seconds and at each loop's last batch.

    ``TQDMProgressBar(refresh_rate=N)`` redraws every N batches, which is many times a second for a
    small MLP (a redraw with its metrics costs a sizeable share of such a step)
    and once a minute for a ResNet on a CPU; the clock keeps the bar equally live at either speed.
    """

    def __init__(self, refresh_interval_s: float = 0.5, process_position: int = 0, leave: bool = False) -> None:
        require(is_number(refresh_interval_s, 0), "callbacks.progress_bar.refresh_interval_s", refresh_interval_s,
                "a finite number >= 0 (seconds; 0 redraws every batch)")
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.refresh_interval_s = refresh_interval_s
        self._last_redraw = float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_redraw >= self.refresh_interval_s:
            self._last_redraw = now
            return True
        return False
