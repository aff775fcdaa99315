"""The run record: the one owner of ``metrics.json``, its schema, and reading and writing it.

A run dir's ``metrics.json`` is one JSON object (written with ``indent=2``, replaced atomically)::

    {
      "status": "running" | "completed" | "failed" | "interrupted",
      "epochs": [ {row}, ... ],        # one row per training epoch, in order
      "test": {"test/acc": ..., ...},  # the final test metrics; null until tested
      "fit_time_s": ...,               # wall time of the fit (after it ends)
      "peak_rss_mb": ...,              # peak resident memory of the process
      "peak_cuda_mb": ...,             # on a GPU: peak CUDA memory allocated
      "error": "Type: message",        # with status failed or interrupted
      "oneshot": [ {level}, ... ],     # OneShotPruning: one entry per pruning level
      "lottery": {state}               # LotteryTicket: the rounds, the control and the winner
    }

An epoch row holds ``epoch``, ``step``, ``train_time_s``, ``epoch_time_s``, ``peak_rss_mb``
(on a GPU also ``train_peak_cuda_mb`` and ``peak_cuda_mb``) and every scalar metric logged that
epoch under its logged name (``train/acc``, ``val/loss``, ``sparsity/<layer>`` ...); a non-finite
metric is written as its string (``"nan"``, ``"inf"``). Keys other than these may appear: readers
take what they know and keep the rest.

``status``: ``running`` while a fit or test is under way; ``completed`` once the test metrics are
in; ``failed`` when an exception stopped it (``error`` says which); ``interrupted`` when SIGTERM
stopped it (preemption: ``resume=`` continues it).

This module imports only the standard library and :mod:`sparse_lab.atomic`, so every floor
(callbacks, protocols, report) can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sparse_lab.atomic import atomic_write_text

FILENAME = "metrics.json"

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED)

# top-level keys
STATUS, EPOCHS, TEST, FIT_TIME, ERROR, ONESHOT, LOTTERY = "status", "epochs", "test", "fit_time_s", "error", "oneshot", "lottery"
# keys of an epoch row besides the logged metrics
EPOCH, STEP, TRAIN_TIME, EPOCH_TIME = "epoch", "step", "train_time_s", "epoch_time_s"
PEAK_RSS, PEAK_CUDA, TRAIN_PEAK_CUDA = "peak_rss_mb", "peak_cuda_mb", "train_peak_cuda_mb"


class RecordError(ValueError):
    """A record that does not follow the schema (e.g. an unknown ``status``)."""


def new() -> dict[str, Any]:
    """The record of a run that has just started: running, no epochs, no test metrics."""
    return {STATUS: RUNNING, EPOCHS: [], TEST: None}


def completed(test: dict[str, float], epochs: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """The record of a finished run whose result is ``test`` (plus top-level ``fields``, e.g. ``lottery``)."""
    return {STATUS: COMPLETED, EPOCHS: list(epochs or []), TEST: dict(test), **fields}


def problems(record: Any) -> list[str]:
    """What is wrong with ``record`` against the schema (empty when nothing is)."""
    if not isinstance(record, dict):
        return [f"a run record is a JSON object, not {type(record).__name__}"]
    out = []
    if record.get(STATUS) not in STATUSES:
        out.append(f"status={record.get(STATUS)!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record.get(EPOCHS, []), list):
        out.append(f"epochs is a list of rows, not {type(record[EPOCHS]).__name__}")
    if not isinstance(record.get(TEST), (dict, type(None))):
        out.append(f"test is an object or null, not {type(record[TEST]).__name__}")
    return out


def check(record: Any) -> dict[str, Any]:
    """``record`` itself, or :class:`RecordError` naming what breaks the schema."""
    found = problems(record)
    if found:
        raise RecordError("; ".join(found))
    return record


def path_in(run_dir: str | os.PathLike) -> Path:
    """The run record's file in ``run_dir``."""
    return Path(run_dir) / FILENAME


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The record in the file ``path`` as written (FileNotFoundError / json.JSONDecodeError as they come).
    It is not checked: an old or foreign file still reads; :func:`problems` says what it lacks."""
    return json.loads(Path(path).read_text())


def read_run(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the run in ``run_dir``, or None when it has none (yet)."""
    path = path_in(run_dir)
    return read(path) if path.is_file() else None


def write(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Replace the file ``path`` with ``record`` in one step, after :func:`check` (a record that
    breaks the schema raises :class:`RecordError` and leaves the file as it was)."""
    atomic_write_text(path, json.dumps(check(record), indent=2))


def write_run(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """:func:`write` ``record`` as the run record of ``run_dir``."""
    write(path_in(run_dir), record)


def epoch_rows(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The record's epoch rows (none for a missing record or one without epochs)."""
    return list((record or {}).get(EPOCHS) or [])
