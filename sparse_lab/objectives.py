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
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"objective direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
    got = final.get(metric)
    if got is None:
        return None
    shortfall = at_least - float(got)
    if shortfall <= 0:
        return float(value)
    sign = 1.0 if direction == "minimize" else -1.0
    return float(worst) + sign * scale * shortfall
