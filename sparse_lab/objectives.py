"""What a run returns to a sweeper (the ``objective`` knob), beyond a plain final metric.

``objective: test/acc`` (the default) returns that final test metric. A node with ``_target_`` and
``_partial_: true`` names a function of the final metrics instead, e.g. the constrained searches of
``experiment=rw_fewest_paths`` and ``experiment=progressive_max_sparsity``::

    objective:
      _target_: sparse_lab.objectives.constrained
      _partial_: true
      value: ${paths}      # what the study minimizes ...
      at_least: 0.95       # ... among the runs whose test/acc reaches this
      direction: minimize
      worst: 2000          # no feasible run is worse than this (the top of the search range)
"""

from __future__ import annotations

from collections.abc import Mapping

from sparse_lab.errors import ConfigError

DIRECTIONS = ("minimize", "maximize")
FLOAT32_SLACK = 1e-6  # relative: float32 rounding of a metric (at most 6e-8) stays well inside it


def constrained(
    final: Mapping[str, float],
    *,
    value: float,
    at_least: float,
    direction: str,
    worst: float,
    metric: str = "test/acc",
    scale: float = 1.0,
) -> float | None:
    """``value`` when ``final[metric] >= at_least``; otherwise ``worst`` made worse by ``scale`` times the shortfall.

    A penalized objective for "the best ``value`` subject to an accuracy floor" in a single-objective
    study: every run below the floor ranks after every run that reaches it (``worst`` must bound the
    feasible values: the top of the search range when minimizing, the bottom when maximizing), and a
    near miss ranks before a far one, which keeps the sampler's model informative. Returns None when
    ``metric`` is missing (the sweeper records a failed trial).

    Metrics arrive as float32 values: 9,500 correct of 10,000 is stored as 0.94999999, which must count
    as reaching 0.95. So a metric within float32 rounding of the floor (a relative 1e-6) reaches it; an
    accuracy over a test set of fewer than a million samples cannot fall short by less than that.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"objective direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
    got = final.get(metric)
    if got is None:
        return None
    shortfall = at_least - float(got)
    if shortfall <= FLOAT32_SLACK * abs(at_least):
        return float(value)
    sign = 1.0 if direction == "minimize" else -1.0
    return float(worst) + sign * scale * shortfall
