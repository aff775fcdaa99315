"""TimedProgressBar: redrawn by the clock and at each loop's last batch."""

from __future__ import annotations

import pytest

from sparse_lab.callbacks import TimedProgressBar
from sparse_lab.errors import ConfigError


def test_redraws_by_the_clock_and_at_the_last_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("sparse_lab.callbacks.progress_bar.time.monotonic", lambda: now[0])
    bar = TimedProgressBar(refresh_interval_s=0.5)
    drawn = []
    for batch in range(1, 11):  # 10 batches, 0.2 s apart
        drawn.append(bar._should_update(batch, 10))
        now[0] += 0.2
    # first batch, then whenever 0.5 s have passed since the last redraw, and the last batch
    assert [b for b, d in zip(range(1, 11), drawn) if d] == [1, 4, 7, 10]


def test_interval_zero_redraws_every_batch_and_disabled_bar_never() -> None:
    bar = TimedProgressBar(refresh_interval_s=0.0)
    assert all(bar._should_update(b, 5) for b in range(1, 6))
    bar.disable()
    assert not any(bar._should_update(b, 5) for b in range(1, 6))
    with pytest.raises(ConfigError, match=r"callbacks.progress_bar.refresh_interval_s=-1 is invalid: it must be a finite number >= 0"):
        TimedProgressBar(refresh_interval_s=-1)
