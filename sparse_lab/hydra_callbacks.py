"""Hydra callbacks: what happens around a whole sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("sparse_lab")


class FailureSummary(Callback):
    """After a multirun, list the jobs that failed (their ``error.txt``) and exit non-zero if any did."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = sorted(Path(config.hydra.sweep.dir).glob("*/error.txt"))
        if not failed:
            return
        lines = [f"  {p.parent}: {p.read_text().strip().splitlines()[-1]}" for p in failed]
        print(f"sparse_lab: {len(failed)} job(s) of the sweep failed:\n" + "\n".join(lines), file=sys.stderr)
        sys.exit(1)
